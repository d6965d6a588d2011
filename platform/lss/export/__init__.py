"""DICOM outputs of a diagnosis: Segmentations (SEG) of the predicted masks and a TID 1500 Structured Report (SR)
of the per-level measurements and grades, built with highdicom from de-identified source headers.

    sources = collect_dicom_sources(record)             # while the study's files exist (sources.py)
    paths = write_dicom_outputs(prediction, findings, sources, "out/dicom", axial_slices=3)
    # {"seg_sagittal": .../seg_sagittal.dcm, "seg_axial_l4_l5": ..., "sr": .../sr.dcm}

- ``sources``: which source headers are referenced and how they are de-identified;
- ``seg``: one SEG per source series, on the model's grid (not aligned with the source images);
- ``sr``: the measurement report, referencing the SEGs and the source images;
- ``writer``: all of them for one diagnosis, written atomically;
- ``codes``: the coded anatomy, measurements and severities; ``identity``: UIDs and algorithm identification.
"""

from __future__ import annotations

from lss.export.codes import SEVERITY_CODES, level_site, severity_code, severity_of_code
from lss.export.identity import OutputIdentity
from lss.export.seg import (
    STRUCTURES,
    PlaneGeometry,
    axial_plane,
    axial_seg_name,
    build_axial_seg,
    build_sagittal_seg,
    build_segmentation,
    sagittal_plane,
    segment_frame_number,
)
from lss.export.sources import DicomSources, NotDicomError, collect_dicom_sources, deidentified_header
from lss.export.sr import build_measurement_report, tracking_identifier
from lss.export.writer import DICOM_MEDIA_TYPE, build_dicom_outputs, dicom_output_names, write_dicom_outputs

__all__ = [
    "write_dicom_outputs",
    "build_dicom_outputs",
    "dicom_output_names",
    "DICOM_MEDIA_TYPE",
    "OutputIdentity",
    "DicomSources",
    "NotDicomError",
    "collect_dicom_sources",
    "deidentified_header",
    "PlaneGeometry",
    "STRUCTURES",
    "build_segmentation",
    "build_sagittal_seg",
    "build_axial_seg",
    "sagittal_plane",
    "axial_plane",
    "axial_seg_name",
    "segment_frame_number",
    "build_measurement_report",
    "tracking_identifier",
    "SEVERITY_CODES",
    "level_site",
    "severity_code",
    "severity_of_code",
]
