"""Writes synthetic lumbar MRI studies to disk: images, masks, reports, labels tables and the manifest.

Layout of a dataset folder ``OUT``::

    OUT/manifest.jsonl            one StudyRecord per study (what every later stage reads)
    OUT/labels.csv                one row per study and level: severity, area mm2, AP mm, disc findings
    OUT/train.csv                 the same grades in the RSNA 2024 train.csv style
    OUT/dataset.json              the configuration used, counts and the class balance per level
    OUT/studies/<id>/sagittal_t2/ (DICOM series) or sagittal_t2.nii.gz, and sagittal_t2_mask.nii.gz
    OUT/studies/<id>/axial_t2_l4_l5/ or axial_t2_l4_l5.nii.gz, and axial_t2_l4_l5_mask.nii.gz (one per level)
    OUT/studies/<id>/report_<style>.txt, truth.json

Masks are NIfTI in every format (DICOM SEG output is a separate feature). Study ``i`` of a dataset uses seed
``seed + i``, so any study can be regenerated alone, and a study already on disk with the same settings is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from lss.anatomy import LEVELS, SEVERITIES, level_key, rsna_column
from lss.config import SynthConfig
from lss.data.io import write_dicom_series, write_nifti
from lss.data.manifest import MANIFEST_NAME, LevelRecord, SeriesRecord, StudyRecord, write_manifest
from lss.data.synth.phantom import SpinePhantom, sample_phantom
from lss.data.synth.render import sample_contrast
from lss.data.synth.reports import write_report
from lss.data.synth.views import axial_grid, render_view, sagittal_grid, sample_sagittal_extent
from lss.data.volume import Volume

__all__ = ["generate_study", "generate_dataset", "study_id_for", "class_balance"]

logger = logging.getLogger(__name__)

_GENERATOR_VERSION = 4  # bump when the phantom or rendering changes, so cached studies are regenerated


def study_id_for(seed: int) -> str:
    return f"synth{seed:06d}"


def _fingerprint(config: SynthConfig, seed: int) -> str:
    settings = config.model_dump(exclude={"cases", "seed"})
    if not config.sagittal_fov_random:  # studies written before the option existed keep their fingerprint
        for name in ("sagittal_fov_random", "sagittal_fov_sacrum_mm"):
            settings.pop(name)
    text = json.dumps({"v": _GENERATOR_VERSION, "seed": seed, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _level_records(phantom: SpinePhantom) -> list[LevelRecord]:
    records = []
    for level in LEVELS:
        pathology = phantom.levels[level]
        j = phantom.disc_index(level)
        # The level's point: inside the dural sac, near its centroid, on the disc mid-plane.
        u, v = pathology.sac_centre_uv
        point, lateral, _, _ = phantom.frame_at(w=float(phantom.disc_mid[j]), v=v)
        point = point + u * lateral
        records.append(
            LevelRecord(
                level=level,
                severity=pathology.severity,
                area_mm2=round(pathology.area_mm2, 2),
                ap_mm=round(pathology.ap_mm, 2),
                point_ras=tuple(round(float(x), 3) for x in point),
                findings=pathology.findings(),
            )
        )
    return records


def generate_study(index: int, config: SynthConfig, out_dir: str | Path) -> StudyRecord:
    """Generates, writes and returns study ``index`` of a dataset (seed ``config.seed + index``)."""
    seed = config.seed + index
    study_id = study_id_for(seed)
    out_dir = Path(out_dir)
    study_dir = out_dir / "studies" / study_id
    fingerprint = _fingerprint(config, seed)
    truth_path = study_dir / "truth.json"
    if truth_path.is_file():
        cached = json.loads(truth_path.read_text())
        if cached.get("fingerprint") == fingerprint:
            return StudyRecord.model_validate(cached["record"])
    study_dir.mkdir(parents=True, exist_ok=True)

    anatomy_seed, image_seed, text_seed = np.random.SeedSequence(seed).spawn(3)
    phantom = sample_phantom(np.random.default_rng(anatomy_seed), config.lordosis_deg, config.class_balance)
    rng = np.random.default_rng(image_seed)
    contrast = sample_contrast(rng)
    levels = _level_records(phantom)

    study_uid = f"2.25.{int(hashlib.sha256(f'lss-study-{seed}'.encode()).hexdigest()[:30], 16)}"
    frame_uid = f"2.25.{int(hashlib.sha256(f'lss-frame-{seed}'.encode()).hexdigest()[:30], 16)}"
    patient = {"patient_name": f"SYNTHETIC^PHANTOM{seed:06d}", "patient_id": f"SYNTH-{seed:06d}"}

    def write(volume, mask, stem: str, description: str, series_number: int) -> tuple[str, str]:
        # Scanners store integers; int16 also keeps the NIfTI files small.
        volume = Volume(np.clip(np.rint(volume.array), 0, 32767).astype(np.int16), volume.affine, volume.meta)
        mask_rel = f"studies/{study_id}/{stem}_mask.nii.gz"
        write_nifti(mask, out_dir / mask_rel)
        if config.format == "dicom":
            image_rel = f"studies/{study_id}/{stem}"
            write_dicom_series(
                volume,
                out_dir / image_rel,
                study_uid=study_uid,
                series_number=series_number,
                series_description=description,
                frame_of_reference_uid=frame_uid,
                study_description="MRI LUMBAR SPINE (SYNTHETIC)",
                **patient,
            )
        else:
            image_rel = f"studies/{study_id}/{stem}.nii.gz"
            write_nifti(volume, out_dir / image_rel)
        return image_rel, mask_rel

    series: list[SeriesRecord] = []
    inplane = float(rng.uniform(*config.sagittal_inplane_mm))
    thickness = float(rng.uniform(*config.sagittal_slice_mm))
    extent_w = None
    if config.sagittal_fov_random:  # drawn only then, so that the default studies stay as they were
        extent_w = sample_sagittal_extent(phantom, rng, config.sagittal_fov_sacrum_mm, config.sagittal_fov_mm[0])
    grid = sagittal_grid(
        phantom, inplane, thickness, config.sagittal_fov_mm, config.sagittal_lateral_coverage_mm,
        yaw_deg=float(rng.uniform(-3.0, 3.0)), extent_w=extent_w,
    )
    image, mask = render_view(phantom, grid, contrast, rng, config.through_slice_samples, {"view": "sagittal"})
    path, mask_path = write(image, mask, "sagittal_t2", "SAG T2 TSE", 1)
    series.append(SeriesRecord(series_id="sagittal_t2", view="sagittal", path=path, format=config.format,
                               mask_path=mask_path, description="SAG T2 TSE"))

    inplane = float(rng.uniform(*config.axial_inplane_mm))
    thickness = float(rng.uniform(*config.axial_slice_mm))
    for number, level in enumerate(LEVELS, start=2):
        grid = axial_grid(phantom, level, inplane, thickness, config.axial_fov_mm, config.axial_slices)
        image, mask = render_view(phantom, grid, contrast, rng, config.through_slice_samples,
                                  {"view": "axial", "level": level})
        stem = f"axial_t2_{level_key(level)}"
        description = f"AX T2 TSE {level}"
        path, mask_path = write(image, mask, stem, description, number)
        series.append(SeriesRecord(series_id=stem, view="axial", path=path, format=config.format,
                                   mask_path=mask_path, level=level, description=description))

    text_rng = np.random.default_rng(text_seed)
    reports = {style: write_report(levels, style, text_rng) for style in config.report_styles}
    for style, text in reports.items():
        (study_dir / f"report_{style}.txt").write_text(text + "\n")

    record = StudyRecord(study_id=study_id, source="synthetic", series=series, levels=levels, reports=reports)
    truth = {
        "fingerprint": fingerprint,
        "record": record.model_dump(mode="json"),
        "phantom": {
            **({"sagittal_extent_w_mm": [round(w, 2) for w in extent_w]} if extent_w is not None else {}),
            "lordosis_radius_mm": phantom.radius,
            "vertebra_height_mm": phantom.vertebra_height.round(2).tolist(),
            "disc_height_mm": phantom.disc_height.round(2).tolist(),
            "canal_ap_mm": phantom.canal_ap.round(2).tolist(),
            "pfirrmann": phantom.pfirrmann.tolist(),
        },
    }
    tmp = truth_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(truth, indent=1))
    tmp.replace(truth_path)  # written last: a study with truth.json is complete
    return record


def _labels_tables(records: list[StudyRecord]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, rsna = [], []
    for record in records:
        rsna_row: dict[str, Any] = {"study_id": record.study_id}
        for level in record.levels:
            rows.append({
                "study_id": record.study_id,
                "level": level.level,
                "severity": level.severity.value if level.severity else None,
                "severity_index": level.severity.index if level.severity else None,
                "area_mm2": level.area_mm2,
                "ap_mm": level.ap_mm,
                **{k: v for k, v in level.findings.items()},
            })
            rsna_row[rsna_column(level.level)] = level.severity.value if level.severity else None
        rsna.append(rsna_row)
    return pd.DataFrame(rows), pd.DataFrame(rsna)


def class_balance(labels: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Fraction of each severity per level (and "all") from a labels table."""
    out = {}
    for level in (*LEVELS, "all"):
        subset = labels if level == "all" else labels[labels["level"] == level]
        counts = Counter(subset["severity"])
        total = max(len(subset), 1)
        out[level] = {s.value: counts.get(s.value, 0) / total for s in SEVERITIES}
    return out


def _generate_one(args: tuple[int, dict, str]) -> StudyRecord:
    index, config_data, out_dir = args
    return generate_study(index, SynthConfig.model_validate(config_data), out_dir)


def generate_dataset(config: SynthConfig, out_dir: str | Path, workers: int = 1) -> list[StudyRecord]:
    """Generates ``config.cases`` studies into ``out_dir`` and writes the manifest and labels tables.

    Args:
        config: synthesis settings.
        out_dir: dataset folder (created; studies already there with the same settings are reused).
        workers: processes to use (1: in this process).

    Returns:
        The study records, in index order (their relative paths resolve against ``out_dir``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    jobs = [(i, config.model_dump(mode="json"), str(out_dir)) for i in range(config.cases)]
    # A progress bar over studies (hidden when stderr is not a terminal: logs and CI stay clean).
    records: list[StudyRecord] = []
    with tqdm(total=config.cases, desc="synth", unit="study", disable=None) as progress:
        if workers > 1 and config.cases > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for record in pool.map(_generate_one, jobs):
                    records.append(record)
                    progress.update(1)
        else:
            for job in jobs:
                records.append(_generate_one(job))
                progress.update(1)
    logger.info("synth: %d studies in %.1fs -> %s", len(records), time.perf_counter() - started, out_dir)
    write_manifest(records, out_dir / MANIFEST_NAME)
    for record in records:
        record.root = str(out_dir.resolve())  # paths in the records are relative to the dataset folder
    labels, rsna = _labels_tables(records)
    labels.to_csv(out_dir / "labels.csv", index=False)
    rsna.to_csv(out_dir / "train.csv", index=False)
    summary = {
        "generator_version": _GENERATOR_VERSION,
        "config": config.model_dump(mode="json"),
        "studies": len(records),
        "class_balance": class_balance(labels),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "dataset.json").write_text(json.dumps(summary, indent=1))
    return records
