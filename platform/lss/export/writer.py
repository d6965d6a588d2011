"""Every DICOM output of one diagnosis, built together (the SR references the SEGs' UIDs) and written atomically."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pydicom.dataset import Dataset

from lss.anatomy import LEVELS
from lss.export.identity import OutputIdentity
from lss.export.seg import axial_seg_name, build_axial_seg, build_sagittal_seg
from lss.export.sources import DicomSources
from lss.export.sr import build_measurement_report

__all__ = ["DICOM_MEDIA_TYPE", "dicom_output_names", "build_dicom_outputs", "write_dicom_outputs"]

DICOM_MEDIA_TYPE = "application/dicom"


def _axial_levels(prediction, sources: DicomSources) -> list[str]:
    """Levels with axial data whose axial series has DICOM headers (a mixed study may have NIfTI axials)."""
    axial_info = (prediction.info or {}).get("axial", {})
    return [level for index, level in enumerate(LEVELS)
            if bool(prediction.axial_present[index])
            and (axial_info.get(level) or {}).get("series") in sources.series]


def dicom_output_names(prediction, sources: DicomSources) -> list[str]:
    """The names ``write_dicom_outputs`` writes for a prediction: "seg_sagittal", one "seg_axial_<level>" per level
    with axial data whose series has DICOM headers, then "sr"."""
    return ["seg_sagittal", *[axial_seg_name(level) for level in _axial_levels(prediction, sources)], "sr"]


def build_dicom_outputs(prediction, findings, sources: DicomSources, *, axial_slices: int,
                        identity: OutputIdentity | None = None) -> dict[str, Dataset]:
    """Builds every DICOM output of one diagnosis, in memory.

    Args:
        prediction: a ``lss.inference.StudyPrediction``.
        findings: its ``lss.reporting.StudyFindings``.
        sources: the study's de-identified DICOM headers (``collect_dicom_sources``).
        axial_slices: slices per level of the axial crops the model read (``PreprocessConfig.axial_slices``, which
            equals the model's ``axial_slices``); the axial masks are of the centre slice.
        identity: UIDs and algorithm identification (default: random UIDs, no model version).

    Returns:
        name -> dataset, in ``dicom_output_names`` order.

    Raises:
        ValueError: for inconsistent inputs (see the builders); NotDicomError when a referenced series has no DICOM
            headers.
    """
    identity = identity or OutputIdentity()
    outputs: dict[str, Dataset] = {"seg_sagittal": build_sagittal_seg(prediction, sources, identity)}
    for level in _axial_levels(prediction, sources):
        outputs[axial_seg_name(level)] = build_axial_seg(prediction, level, sources, identity, axial_slices)
    outputs["sr"] = build_measurement_report(prediction, findings, outputs, sources, identity)
    return outputs


def write_dicom_outputs(prediction, findings, sources: DicomSources, out_dir: str | Path, *, axial_slices: int,
                        identity: OutputIdentity | None = None) -> dict[str, Path]:
    """Builds the DICOM outputs of one diagnosis and writes them as ``<name>.dcm`` files.

    Args:
        prediction: a ``lss.inference.StudyPrediction``.
        findings: its ``lss.reporting.StudyFindings``.
        sources: the study's de-identified DICOM headers (``collect_dicom_sources``).
        out_dir: the folder (created); existing files of the same names are replaced.
        axial_slices: slices per level of the axial crops (see ``build_dicom_outputs``).
        identity: UIDs and algorithm identification (default: random UIDs).

    Returns:
        name -> written path: "seg_sagittal", "seg_axial_<level>" per level with axial data, "sr".
    """
    outputs = build_dicom_outputs(prediction, findings, sources, axial_slices=axial_slices, identity=identity)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, dataset in outputs.items():
        path = out_dir / f"{name}.dcm"
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        dataset.save_as(tmp, enforce_file_format=True)
        tmp.replace(path)  # a reader never sees half a file
        paths[name] = path
    return paths
