"""Synthetic studies: class balance, severity defined by measurement, geometry read back from real files."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pydicom
import pytest

from lss.anatomy import (
    CANAL_LABEL,
    LEVELS,
    POSTERIOR_LABEL_OFFSET,
    RSNA_CLASS_BALANCE,
    SEVERITIES,
    VERTEBRAE,
    Severity,
    Tissue,
    grade_from_measurements,
    posterior_label,
    rsna_column,
)
from lss.config import SynthConfig
from lss.data.io import read_volume
from lss.data.manifest import read_manifest
from lss.data.synth.generate import generate_dataset
from lss.data.synth.phantom import sample_phantom
from lss.data.synth.reports import REPORT_STYLES, write_report


def _draw(seed: int):
    return sample_phantom(np.random.default_rng(seed))


@pytest.fixture(scope="module")
def draw_500():
    """500 study plans (anatomy + pathology + measurements; rendering is not needed for the labels), drawn in two
    fresh processes (each draw is seeded, so the plans are the same as drawn one by one)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        return list(pool.map(_draw, range(10_000, 10_500), chunksize=25))


def test_class_balance_matches_rsna_on_500_studies(draw_500):
    observed = {level: Counter(p.levels[level].severity for p in draw_500) for level in LEVELS}
    for level in LEVELS:
        for severity, expected in zip(SEVERITIES, RSNA_CLASS_BALANCE[level], strict=True):
            fraction = observed[level][severity] / len(draw_500)
            # 500 draws: one binomial standard error is at most 2.2 points; allow a little under 3 of them.
            assert abs(fraction - expected) < 0.06, (level, severity.value, fraction, expected)
    overall = Counter(p.levels[lv].severity for p in draw_500 for lv in LEVELS)
    normal = overall[Severity.NORMAL_MILD] / (5 * len(draw_500))
    assert abs(normal - 0.878) < 0.03


def test_every_severity_is_the_rule_grade_of_its_measurements(draw_500):
    for phantom in draw_500:
        for level, pathology in phantom.levels.items():
            assert pathology.severity is grade_from_measurements(pathology.area_mm2, pathology.ap_mm), level
    # Stenosis is made by the pathology: severe levels have more bulge or flavum than normal ones.
    severe = [p.levels[lv] for p in draw_500 for lv in LEVELS if p.levels[lv].severity is Severity.SEVERE]
    normal = [p.levels[lv] for p in draw_500 for lv in LEVELS if p.levels[lv].severity is Severity.NORMAL_MILD]
    assert np.mean([s.compression for s in severe]) > np.mean([n.compression for n in normal]) + 0.3
    assert np.mean([n.area_mm2 for n in normal]) > 130.0 > 75.0 > np.mean([s.area_mm2 for s in severe])


def test_same_seed_same_phantom():
    a = sample_phantom(np.random.default_rng(7))
    b = sample_phantom(np.random.default_rng(7))
    assert {k: v.area_mm2 for k, v in a.levels.items()} == {k: v.area_mm2 for k, v in b.levels.items()}
    forced = sample_phantom(np.random.default_rng(7), severities={"L4/L5": "Severe", "L1/L2": "Moderate"})
    assert forced.levels["L4/L5"].severity is Severity.SEVERE
    assert forced.levels["L1/L2"].severity is Severity.MODERATE


def test_phantom_labels_bodies_and_posterior_elements_apart():
    """Vertebral body k is label k (1-8), its posterior elements 300 + k, behind the body and nearest it along w."""
    phantom = sample_phantom(np.random.default_rng(3))
    grid = (np.arange(-30, 31, 2.0), np.arange(-60, 50, 1.0), np.arange(-40, 260, 1.0))
    u, v, w = (a.astype(np.float32) for a in np.meshgrid(*grid, indexing="ij"))
    tissue, label = phantom.labels_local(u, v, w)
    bodies = list(range(1, len(VERTEBRAE) + 1))
    posteriors = [POSTERIOR_LABEL_OFFSET + k for k in bodies]
    present = set(np.unique(label).tolist())
    assert set(bodies) | set(posteriors) <= present
    assert not present - {0, CANAL_LABEL, *bodies, *posteriors, *range(201, 201 + len(VERTEBRAE) - 1)}
    is_body, is_posterior = np.isin(label, bodies), np.isin(label, posteriors)
    assert set(np.unique(tissue[is_body]).tolist()) <= {Tissue.MARROW, Tissue.CORTICAL_BONE}
    assert set(np.unique(tissue[is_posterior]).tolist()) == {Tissue.POSTERIOR_ELEMENTS}
    assert (label[tissue == Tissue.POSTERIOR_ELEMENTS] > POSTERIOR_LABEL_OFFSET).all()
    mids = phantom.disc_mid
    for k in bodies:
        body, posterior = label == k, label == POSTERIOR_LABEL_OFFSET + k
        # v is the distance anterior of the bodies' posterior wall: the posterior elements lie behind the body
        # (only the pedicles reach 1 mm in front of the wall, laterally).
        assert v[posterior].max() <= 1.0 <= v[body].mean() - 10.0, VERTEBRAE[k - 1]
        assert v[posterior].mean() < v[body].mean() - 25.0, VERTEBRAE[k - 1]
        # Along w, posterior elements belong to the nearest body: between the mid-planes of the discs around it.
        below = mids[k - 2] if k > 1 else -np.inf
        above = mids[k - 1] if k <= len(mids) else np.inf
        assert below - 1.0 <= w[posterior].min() and w[posterior].max() <= above + 1.0, VERTEBRAE[k - 1]


def _check_study_geometry(root, record):
    """The image and its mask share one grid, and the recorded measurements are what the axial mask shows."""
    sagittal = record.sagittal()
    image = read_volume(record.resolve(sagittal.path))
    mask = read_volume(record.resolve(sagittal.mask_path))
    assert image.shape == mask.shape
    np.testing.assert_allclose(image.affine, mask.affine, atol=1e-3)
    assert image.meta["view"] == "sagittal"
    assert {1, 2, 6, CANAL_LABEL, 201, 205, posterior_label("L5"), posterior_label("L1")} <= set(
        np.unique(mask.array).tolist())
    for axial in record.axials():
        image = read_volume(record.resolve(axial.path))
        mask = read_volume(record.resolve(axial.mask_path))
        np.testing.assert_allclose(image.affine, mask.affine, atol=1e-3)
        assert image.meta["view"] == "axial"
        level = record.level(axial.level)
        centre = mask.shape[2] // 2
        canal = mask.array[:, :, centre] == CANAL_LABEL
        pixel_area = float(np.prod(mask.spacing[:2]))
        # The recorded area was measured on the disc mid-plane at 0.15 mm; the mask samples it at 0.9 mm.
        assert canal.sum() * pixel_area == pytest.approx(level.area_mm2, rel=0.12, abs=8.0)
        # The level's point lies in the canal of the centre slice (voxel coordinates from the affine).
        i, j, k = np.round(mask.index(np.asarray(level.point_ras))).astype(int)
        assert k == centre
        assert (mask.array[max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3, k] == CANAL_LABEL).any()
        # The disc of the level is in the slice (label 200 + k).
        assert (mask.array[:, :, centre] == 200 + (5 - LEVELS.index(axial.level))).any()


def test_dicom_study_reads_back_with_consistent_geometry(synth_dicom):
    root, records = synth_dicom
    record = records[0]
    folder = record.resolve(record.sagittal().path)
    files = sorted(folder.glob("*.dcm"))
    headers = [pydicom.dcmread(f) for f in files]
    assert len({h.SOPInstanceUID for h in headers}) == len(files)
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    first = headers[0]
    assert first.Modality == "MR"
    assert 0.5 <= float(first.PixelSpacing[0]) <= 0.9 + 1e-6
    assert 3.0 <= float(first.SliceThickness) <= 4.0
    assert len(first.ImageOrientationPatient) == 6 and len(first.ImagePositionPatient) == 3
    assert str(first.PatientName).startswith("SYNTHETIC^")  # synthetic, non-identifying
    # Sagittal: slices step along the patient's left-right axis (DICOM LPS x).
    positions = np.array([[float(x) for x in h.ImagePositionPatient] for h in headers])
    steps = np.abs(np.diff(np.sort(positions[:, 0])))
    assert np.allclose(steps, float(first.SliceThickness), atol=0.15 * float(first.SliceThickness))
    axial_first = pydicom.dcmread(sorted(record.resolve(record.axials()[0].path).glob("*.dcm"))[0])
    assert axial_first.StudyInstanceUID == first.StudyInstanceUID
    assert axial_first.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert axial_first.SeriesInstanceUID != first.SeriesInstanceUID
    for record in records:
        _check_study_geometry(root, record)


def test_nifti_study_reads_back_with_consistent_geometry(synth_nifti):
    root, records = synth_nifti
    for record in records:
        _check_study_geometry(root, record)


def test_labels_tables_and_manifest(synth_nifti):
    root, records = synth_nifti
    labels = pd.read_csv(root / "labels.csv")
    assert len(labels) == len(records) * len(LEVELS)
    assert {
        "study_id",
        "level",
        "severity",
        "area_mm2",
        "ap_mm",
        "disc_bulging",
        "lf_thickness_mm",
        "pfirrmann",
        "disc_height_mm",
    } <= set(labels.columns)
    for row in labels.itertuples():
        assert Severity.parse(row.severity) is grade_from_measurements(row.area_mm2, row.ap_mm)
    rsna = pd.read_csv(root / "train.csv")
    assert list(rsna.columns) == ["study_id", *[rsna_column(lv) for lv in LEVELS]]
    assert set(rsna.iloc[:, 1:].stack()) <= {s.value for s in SEVERITIES}
    assert [r.study_id for r in read_manifest(root / "manifest.jsonl")] == [r.study_id for r in records]
    summary = json.loads((root / "dataset.json").read_text())
    assert summary["studies"] == len(records)


def _stated_severities(report: str, level: str) -> set[Severity]:
    """The severities a report states for one level: every clause naming the level, classified by its words."""
    import re

    stated = set()
    for clause in re.split(r"\n|; |\. ", report):
        if level not in clause:
            continue
        text = clause.lower()
        if "no moderate or severe" in text or any(w in text for w in ("no ", "mild", "patent")):
            stated.add(Severity.NORMAL_MILD)
        elif "severe" in text:
            stated.add(Severity.SEVERE)
        elif "moderate" in text:
            stated.add(Severity.MODERATE)
    return stated


@pytest.mark.parametrize("style", sorted(REPORT_STYLES))
def test_reports_state_each_level_with_its_severity(synth_nifti, style):
    _, records = synth_nifti
    severities = {lv.severity for record in records for lv in record.levels}
    assert len(severities) > 1  # the uniform prior gives abnormal levels to check against
    for record in records:
        report = record.reports[style]
        for level in record.levels:
            assert _stated_severities(report, level.level) == {level.severity}, (style, level.level, report)
        # Deterministic for the same input and seed.
        rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
        assert write_report(record.levels, style, rng_a) == write_report(record.levels, style, rng_b)


def test_report_rejects_unknown_style():
    with pytest.raises(ValueError, match="unknown report style"):
        write_report([], "haiku", np.random.default_rng(0))


def test_second_run_reuses_studies(synth_nifti):
    root, records = synth_nifti
    config = SynthConfig(**json.loads((root / "dataset.json").read_text())["config"])
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")}
    again = generate_dataset(config, root)
    assert [r.study_id for r in again] == [r.study_id for r in records]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")} == before


def test_cli_synth_writes_a_dataset(tmp_path, capsys):
    from lss.cli import main

    code = main(
        [
            "synth",
            "--out",
            str(tmp_path),
            "--cases",
            "1",
            "--seed",
            "5",
            "--format",
            "nifti",
            "--set",
            "synth.sagittal_inplane_mm=[0.9, 0.9]",
            "--set",
            "synth.through_slice_samples=1",
            "--set",
            "synth.axial_inplane_mm=[0.9, 0.9]",
        ]
    )
    assert code == 0
    assert (tmp_path / "manifest.jsonl").is_file() and (tmp_path / "studies" / "synth000005" / "truth.json").is_file()
    assert "1 studies" in capsys.readouterr().out
