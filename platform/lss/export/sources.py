"""The source DICOM headers that the DICOM outputs (SEG, SR) reference, stripped of patient identifiers.

A DICOM Segmentation or Structured Report belongs to the study it was derived from: it carries the study's
StudyInstanceUID, references the source series and images by their SeriesInstanceUID / SOPInstanceUID, and shares
their FrameOfReferenceUID, so that a PACS files it under the study and a viewer lays it over the images. highdicom
builds both from the source images' headers, and copies the patient and study module from them.

The project's rule is that no patient identifier is ever logged or returned. So the headers kept here are
*whitelist copies* of the source headers: the UIDs (study, series, SOP instance, SOP class, frame of reference), the
geometry (position, orientation, pixel spacing, slice thickness, rows, columns), the pixel description highdicom
checks, Modality and the series and instance numbers; nothing else. The type-2 patient and study attributes
(PatientName, PatientID, PatientBirthDate, PatientSex, AccessionNumber, ReferringPhysicianName, StudyID, StudyDate,
StudyTime) are present but empty, as DICOM allows for them, and every other attribute (OtherPatientIDs,
InstitutionName, descriptions, private tags, ...) is simply absent. Keeping the UIDs is deliberate: they are what
lets a PACS link the outputs to the source study; the PACS already holds the patient for that study. Pixel data is
never read.

A study read from NIfTI or MetaImage files has no DICOM headers to reference: ``collect_dicom_sources`` raises
``NotDicomError`` for it rather than inventing source images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from lss.data.errors import StudyError
from lss.data.io.dicom import DicomSeriesInfo, list_dicom_series, split_stack_series_id
from lss.data.manifest import SeriesRecord, StudyRecord

__all__ = ["DicomSources", "NotDicomError", "collect_dicom_sources", "deidentified_header", "KEPT_ATTRIBUTES",
           "EMPTIED_ATTRIBUTES"]

# What a SEG / SR needs of a source image: identity (UIDs), geometry, and the pixel description highdicom checks.
KEPT_ATTRIBUTES: tuple[str, ...] = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)

# Type-2 attributes of the patient and study modules: present (highdicom copies them) but empty.
EMPTIED_ATTRIBUTES: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


class NotDicomError(ValueError):
    """The DICOM outputs were asked for a study that was not read from DICOM files."""


def deidentified_header(ds: Dataset) -> Dataset:
    """A copy of a source image header with only ``KEPT_ATTRIBUTES`` and the empty ``EMPTIED_ATTRIBUTES``.

    Args:
        ds: a source image's dataset (its pixel data, if loaded, is not copied).

    Returns:
        A new dataset; ``ds`` is untouched.

    Raises:
        NotDicomError: (a ValueError) when the header lacks a UID that the outputs must reference.
    """
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                           "FrameOfReferenceUID") if not ds.get(k)]
    if missing:
        raise NotDicomError(f"a source DICOM image lacks {', '.join(missing)}; the DICOM outputs cannot reference it.")
    out = Dataset()
    for keyword in KEPT_ATTRIBUTES:
        if keyword in ds:
            element = ds[keyword]
            out.add_new(element.tag, element.VR, copy.deepcopy(element.value))
    for keyword in EMPTIED_ATTRIBUTES:
        setattr(out, keyword, "")
    return out


@dataclass
class DicomSources:
    """De-identified headers (no pixel data) of the DICOM series a diagnosis read.

    Attributes:
        series: series id (as in the ``StudyRecord``: the SeriesInstanceUID, or ``"{uid}#stack{i}"`` for one stack
            of a multi-stack series) -> the headers of its slices in ``read_dicom_series`` order (increasing
            position along the slice normal), so that index ``k`` is slice ``k`` of the volume preprocessing read.
        sagittal_series: the id of the sagittal series.
    """

    series: dict[str, list[Dataset]]
    sagittal_series: str

    def __post_init__(self) -> None:
        if self.sagittal_series not in self.series:
            raise ValueError(f"sagittal_series {self.sagittal_series!r} is not among the series "
                             f"{sorted(self.series)}.")
        for series_id, headers in self.series.items():
            if not headers:
                raise ValueError(f"series {series_id!r} has no headers.")
        studies = {str(h.StudyInstanceUID) for headers in self.series.values() for h in headers}
        if len(studies) != 1:
            raise NotDicomError(f"the source series belong to {len(studies)} studies; a DICOM SEG or SR belongs to "
                                "one.")

    @property
    def study_instance_uid(self) -> str:
        return str(self.series[self.sagittal_series][0].StudyInstanceUID)

    def headers(self, series_id: str) -> list[Dataset]:
        """The headers of one series, in slice order.

        Raises:
            NotDicomError: when the series was not read from DICOM files (or is unknown).
        """
        if series_id not in self.series:
            raise NotDicomError(f"a series has no DICOM headers ({len(self.series)} series have them).")
        return self.series[series_id]

    def image(self, series_id: str, index: int) -> Dataset:
        """The header of slice ``index`` of a series (the k index of the volume preprocessing read).

        Raises:
            NotDicomError: for an unknown series; IndexError: for an index outside the series.
        """
        headers = self.headers(series_id)
        if not 0 <= int(index) < len(headers):
            raise IndexError(f"slice {index} is outside series {series_id!r} ({len(headers)} slices).")
        return headers[int(index)]

    def nearest_image(self, series_id: str, point_lps: np.ndarray) -> Dataset:
        """The header of the slice of a series whose plane is nearest a point (LPS, mm)."""
        headers = self.headers(series_id)
        first = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64)
        normal = np.cross(first[:3], first[3:])
        along = np.array([np.asarray(h.ImagePositionPatient, dtype=np.float64) @ normal for h in headers])
        return headers[int(np.argmin(np.abs(along - np.asarray(point_lps, dtype=np.float64) @ normal)))]


def _series_files(series: SeriesRecord, root: str | None, cache: dict[Path, list[DicomSeriesInfo]]) -> list[Path]:
    """The files of one DICOM series record (one stack of it for ``"{uid}#stack{i}"``), as ``read_series`` picks
    them."""
    path = Path(series.path)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    uid, stack = split_stack_series_id(series.series_id)
    if path.is_dir():
        if path not in cache:
            cache[path] = list_dicom_series(path)
        found = cache[path]
        chosen = next((info for info in found if info.series_uid == uid), None)
        if chosen is None and len(found) == 1:
            chosen = found[0]
    else:
        found = list_dicom_series(path)
        chosen = found[0] if found else None
    if chosen is None:
        raise NotDicomError("a series was not found among the DICOM files of its folder.")
    if stack is None:
        return list(chosen.files)
    if stack >= len(chosen.stacks):
        raise NotDicomError(f"stack {stack} of a series does not exist.")
    return list(chosen.stacks[stack].files)


def _sorted_headers(files: list[Path]) -> list[Dataset]:
    """Reads the headers (no pixels) and orders them as ``read_dicom_series`` orders slices."""
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64)
    row, column = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, column)
    along = np.array([np.asarray(h.ImagePositionPatient, dtype=np.float64) @ normal for h in headers])
    return [headers[i] for i in np.argsort(along, kind="stable")]


def collect_dicom_sources(record: StudyRecord) -> DicomSources:
    """The de-identified headers of a study's DICOM series (the sagittal one and every axial one).

    Args:
        record: the study, as ``lss.inference.open_study`` found it (absolute paths, or ``record.root`` set).

    Returns:
        The headers, by series id; axial series read from NIfTI/MHA files (a mixed study) are left out.

    Raises:
        NotDicomError: when the study has no sagittal series or its sagittal series is not DICOM (a NIfTI/MHA
            input): the DICOM outputs need DICOM source images to reference.
        StudyError: when a DICOM file cannot be read.
    """
    sagittal = record.sagittal()
    if sagittal is None or sagittal.format != "dicom":
        what = "no sagittal series" if sagittal is None else f"a {sagittal.format.upper()} sagittal series"
        raise NotDicomError(f"DICOM outputs (SEG, SR) need a DICOM input; this study has {what}, so there are no "
                            "source DICOM images to reference.")
    cache: dict[Path, list[DicomSeriesInfo]] = {}
    series: dict[str, list[Dataset]] = {}
    for number, item in enumerate([sagittal, *record.axials()], start=1):
        if item.format != "dicom":
            continue
        try:
            headers = [deidentified_header(h) for h in _sorted_headers(_series_files(item, record.root, cache))]
        except NotDicomError:
            raise
        except (StudyError, OSError, AttributeError, ValueError) as error:
            # Only the error's type: its text could quote a path or a header value.
            # Series by number, never by id (a UID links to the patient); the error by type (its text can quote
            # a path or a header value).
            raise NotDicomError(f"the headers of series {number} (1: sagittal, then the axial series) cannot be "
                                f"read ({type(error).__name__}).") from None
        series[item.series_id] = headers
    return DicomSources(series=series, sagittal_series=sagittal.series_id)
