"""Writing a ``Volume`` as a DICOM MR series, one file per k slice: the inverse of ``read_dicom_series``.

Used for synthetic studies and tests; patient name and id are parameters (synthetic values by default) and nothing
in this package reads them back.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from lss.data.io.dicom.geometry import slice_normal
from lss.data.volume import LPS_TO_RAS, Volume

__all__ = ["write_dicom_series"]

_UINT16_MAX = 65535
_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _valid_uid(text: str) -> bool:
    return len(text) <= 64 and _UID_PATTERN.match(text) is not None


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _encode(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 stored values, RescaleSlope, RescaleIntercept: exact for integer data, else over the full range."""
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the volume holds NaN or infinite values; DICOM cannot store them.")
    low, high = float(values.min()), float(values.max())
    integral = (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.bool_)
        or bool(np.all(values == np.round(values)))
    )
    if integral and high - low <= _UINT16_MAX:
        slope, intercept = 1.0, float(_ds(low))
        if intercept != low:  # an integer too long for a decimal string
            raise ValueError(f"minimum value {low!r} cannot be written exactly as RescaleIntercept.")
    else:
        slope = float(_ds((high - low) / _UINT16_MAX)) if high > low else 1.0
        intercept = float(_ds(low))
    stored = np.clip(np.round((values - intercept) / slope), 0, _UINT16_MAX).astype(np.uint16)
    return stored, slope, intercept


def _check_arguments(
    uids: dict[str, str | None], instance_uid_prefix: str | None, first_instance: int
) -> tuple[str | None, int]:
    """Validates the UIDs; returns the SOPInstanceUID prefix (ending in ".", or None) and ``first_instance``."""
    for name, uid in uids.items():
        if uid is not None and not _valid_uid(str(uid)):
            raise ValueError(f"{name} {uid!r} is not a valid DICOM UID.")
    if instance_uid_prefix is not None and not _valid_uid(str(instance_uid_prefix).rstrip(".")):
        raise ValueError(f"instance_uid_prefix {instance_uid_prefix!r} is not a valid UID prefix.")
    if isinstance(first_instance, bool) or not isinstance(first_instance, (int, np.integer)) or first_instance < 1:
        raise ValueError(f"first_instance must be an integer >= 1, got {first_instance!r}.")
    prefix = (
        instance_uid_prefix
        if instance_uid_prefix is None or str(instance_uid_prefix).endswith(".")
        else f"{instance_uid_prefix}."
    )
    return prefix, int(first_instance)


def _file_names(file_name: str, first_instance: int, size_k: int) -> list[str]:
    names = [file_name.format(index=k, instance=first_instance + k) for k in range(size_k)]
    if len(set(names)) != size_k:
        raise ValueError(f"file_name {file_name!r} does not give distinct names for {size_k} slices.")
    return names


def _in_plane_axes(affine_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Unit row and column cosines (the i and j axes, LPS) and the spacing along i, j, k.

    Raises:
        ValueError: when i and j are not orthogonal (ImageOrientationPatient cannot hold that).
    """
    columns = affine_lps[:3, 0], affine_lps[:3, 1], affine_lps[:3, 2]
    spacing_i, spacing_j, spacing_k = (float(np.linalg.norm(c)) for c in columns)
    row_cos, col_cos = columns[0] / spacing_i, columns[1] / spacing_j
    if abs(float(np.dot(row_cos, col_cos))) > 1e-4:
        raise ValueError(
            f"the i and j axes are not orthogonal (cosine {float(np.dot(row_cos, col_cos)):.6f}); "
            "DICOM cannot store that."
        )
    return row_cos, col_cos, (spacing_i, spacing_j, spacing_k)


def _file_meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _series_dataset(
    *,
    study_uid: str,
    series_uid: str,
    series_number: int,
    series_description: str,
    frame_of_reference_uid: str,
    patient_name: str,
    patient_id: str,
    modality: str,
    study_description: str,
) -> Dataset:
    """The attributes every slice of the series shares (set per slice: UIDs, number, position, pixels)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "LSPINE"
    ds.ScanningSequence = "RM"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.StudyInstanceUID = str(study_uid)
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SeriesNumber = int(series_number)
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleType = "US"
    return ds


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    study_uid: str,
    series_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "",
    frame_of_reference_uid: str | None = None,
    patient_name: str = "SYNTHETIC^PHANTOM",
    patient_id: str = "SYNTH-0000",
    modality: str = "MR",
    study_description: str = "",
    instance_uid_prefix: str | None = None,
    file_name: str = "{index:04d}.dcm",
    first_instance: int = 1,
) -> list[Path]:
    """Writes a volume as a DICOM series, one MR Image Storage file per k slice (Explicit VR Little Endian).

    The inverse of ``read_dicom_series``: ``array[:, :, k].T`` becomes slice k's pixels (Rows = J, Columns = I).
    Pixels are stored as uint16 with one RescaleSlope/RescaleIntercept for the series: integer-valued volumes
    (label maps) whose range fits in 16 bits are stored exactly (slope 1), others are spread over 0..65535
    (error at most range / 131070). A left-handed affine (k against row x column cosines) is written with its
    true geometry but reads back with k reversed.

    Args:
        volume: (I, J, K) image or label map with a RAS+ affine; i and j must be orthogonal.
        folder: the output folder (created).
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID; default: a new UID.
        series_number: SeriesNumber.
        series_description: SeriesDescription.
        frame_of_reference_uid: FrameOfReferenceUID; default: a new UID.
        patient_name: PatientName (synthetic data only; never read back by this package).
        patient_id: PatientID.
        modality: Modality (the reader only accepts "MR"; other values are for tests).
        study_description: StudyDescription.
        instance_uid_prefix: prefix of the SOPInstanceUIDs (ending in "."); default: pydicom's root.
        file_name: file name pattern, formatted with ``index`` (k, from 0) and ``instance`` (InstanceNumber, from
            ``first_instance``).
        first_instance: InstanceNumber of slice 0 (slice k gets ``first_instance + k``); to write several stacks
            into one series (same ``series_uid`` and ``frame_of_reference_uid``), numbering on across stacks.

    Returns:
        The written paths, in k order.

    Raises:
        ValueError: for an invalid UID, non-orthogonal in-plane axes, a slice larger than 65535 pixels a side,
            non-finite values, a ``file_name`` pattern that does not give distinct names, or a ``first_instance``
            that is not an integer >= 1.
    """
    uids = {"study_uid": study_uid, "series_uid": series_uid, "frame_of_reference_uid": frame_of_reference_uid}
    prefix, first_instance = _check_arguments(uids, instance_uid_prefix, first_instance)
    size_i, size_j, size_k = volume.shape
    if max(size_i, size_j) > _UINT16_MAX:
        raise ValueError(f"slices of {size_i}x{size_j} pixels are too large for DICOM Rows/Columns.")
    names = _file_names(file_name, first_instance, size_k)

    affine_lps = LPS_TO_RAS @ volume.affine
    row_cos, col_cos, (spacing_i, spacing_j, spacing_k) = _in_plane_axes(affine_lps)
    normal = slice_normal(np.concatenate([row_cos, col_cos]))
    stored, slope, intercept = _encode(volume.array)
    thickness = volume.meta.get("slice_thickness")
    thickness = float(thickness) if isinstance(thickness, (int, float)) and thickness and thickness > 0 else spacing_k

    shared = _series_dataset(
        study_uid=study_uid,
        series_uid=str(series_uid) if series_uid is not None else str(generate_uid()),
        series_number=series_number,
        series_description=series_description,
        frame_of_reference_uid=(
            str(frame_of_reference_uid) if frame_of_reference_uid is not None else str(generate_uid())
        ),
        patient_name=patient_name,
        patient_id=patient_id,
        modality=modality,
        study_description=study_description,
    )
    shared.SliceThickness = _ds(thickness)
    shared.SpacingBetweenSlices = _ds(spacing_k)
    shared.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
    shared.Rows = size_j
    shared.Columns = size_i
    shared.PixelSpacing = [_ds(spacing_j), _ds(spacing_i)]
    shared.RescaleIntercept = _ds(intercept)
    shared.RescaleSlope = _ds(slope)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for k in range(size_k):
        sop_uid = generate_uid() if prefix is None else generate_uid(prefix=prefix)
        position = affine_lps[:3, 3] + k * affine_lps[:3, 2]
        ds = _slice_dataset(shared, sop_uid, first_instance + k, position, normal, stored[:, :, k])
        path = folder / names[k]
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        written.append(path)
    return written


def _slice_dataset(
    shared: Dataset, sop_uid: str, instance: int, position: np.ndarray, normal: np.ndarray, plane: np.ndarray
) -> Dataset:
    """One slice's dataset: a copy of the shared attributes plus its UID, number, position and (I, J) uint16
    ``plane``."""
    ds = copy.deepcopy(shared)
    ds.file_meta = _file_meta(sop_uid)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(float(position @ normal))
    ds.PixelData = np.ascontiguousarray(plane.T).astype("<u2").tobytes()
    return ds
