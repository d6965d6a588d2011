"""Any folder of images: DICOM series, NIfTI or MetaImage/NRRD files, with no label tables.

What counts as a study:

- ``root`` is an image file: that file is the study (study_id = its name without suffix).
- ``root`` directly holds image files (DICOM, .nii/.nii.gz, .mha/.mhd/.nrrd): ``root`` is one study, with every
  image under it (recursively).
- otherwise each immediate subfolder holding images is a study (study_id = the folder name), with every image under
  it; but when all of them are DICOM series of one StudyInstanceUID (a study split into series folders), ``root``
  is one study.

Series: DICOM series from ``list_dicom_series`` (series_id = SeriesInstanceUID, path = the folder holding its files;
read it back with ``lss.data.io.read_series``), image files from their header (series_id = file name without
suffix). An axial DICOM series made of several stacks (slices with different ImageOrientationPatient, e.g. one
angled stack per disc) gives one record per stack, series_id ``f"{SeriesInstanceUID}#stack{i}"``
(``lss.data.io.stack_series_id``; stack 0 the most cranial), level None. The view comes from the orientation
(DICOM) or the affine (files). Sagittal series come first, ordered
non-localiser (5 or more slices, no "loc"/"scout"/"survey" in the description) before localiser, then T2 (by
description or file name) before others; axial series follow, with level None. Coronal, mixed-orientation and
non-MR series are not listed. A file named ``{stem}_mask``/``_seg``/``_label``/``_labels`` is the mask of ``{stem}``:
the image file of that stem, or the DICOM series in the folder of that name (never an image of its own).
A study without a sagittal series gives a "missing_sagittal" error entry, an unreadable one an entry with its
reader's code; neither stops the others. Folder and file names become study ids: rename any that carry patient data.
Error messages name neither (nor a SeriesDescription): series and files are numbered ("DICOM series 2", "image file
3"), so they can be shown to whoever uploaded the study. Headers are read within ``limits`` (``lss.data.io.limits``):
an image file over it gives an "image_too_large" entry and is left out.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lss.config import InputLimits
from lss.data.adapters.base import AdapterError, AdapterResult, check_root, error_entry
from lss.data.errors import ErrorCode, StudyError
from lss.data.io.detect import read_image_geometry
from lss.data.io.dicom import DicomSeriesInfo, is_dicom_file, list_dicom_series, stack_series_id
from lss.data.io.dicom.headers import quoted_modality
from lss.data.io.itk import ITK_SUFFIXES
from lss.data.io.nifti import is_nifti_path
from lss.data.io.view import guess_view, through_plane_axis
from lss.data.manifest import SeriesRecord, StudyRecord

__all__ = ["discover", "MASK_SUFFIXES", "LOCALISER_WORDS"]

MASK_SUFFIXES: tuple[str, ...] = ("_mask", "_seg", "_labels", "_label")
LOCALISER_WORDS: tuple[str, ...] = ("loc", "scout", "survey", "3-plane", "3pl", "tripilot")
MIN_SLICES = 5  # fewer slices than this makes a series a localiser for ranking


@dataclass
class _Candidate:
    record: SeriesRecord
    n_slices: int

    def rank(self, order: int) -> tuple[int, int, int, int]:
        text = f"{self.record.description} {self.record.series_id}".lower()
        localiser = self.n_slices < MIN_SLICES or any(word in text for word in LOCALISER_WORDS)
        view = 0 if self.record.view == "sagittal" else 1
        return (view, int(localiser), int("t2" not in text), order)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", *ITK_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_volume_file(path: Path) -> bool:
    return is_nifti_path(path) or path.suffix.lower() in ITK_SUFFIXES


def _holds_images(folder: Path) -> bool:
    return any(
        p.is_file()
        and not p.name.startswith(".")
        and (_is_volume_file(p) or p.suffix.lower() == ".dcm" or is_dicom_file(p))
        for p in folder.rglob("*")
    )


def _direct_images(folder: Path) -> bool:
    return any(
        p.is_file()
        and not p.name.startswith(".")
        and (_is_volume_file(p) or p.suffix.lower() == ".dcm" or is_dicom_file(p))
        for p in folder.iterdir()
    )


class _Study:
    """The images of one study, gathered before the record is built."""

    def __init__(self, study_id: str, location: Path, limits: InputLimits | None = None) -> None:
        self.study_id = study_id
        self.location = location
        self.limits = limits
        self.dicom: list[DicomSeriesInfo] = []
        self.files: list[Path] = []

    @classmethod
    def scan(cls, study_id: str, location: Path, errors: list[AdapterError],
             limits: InputLimits | None = None) -> _Study | None:
        study = cls(study_id, location, limits)
        if location.is_file():
            if _is_volume_file(location):
                study.files.append(location)
                return study
            return study if study._scan_dicom(location, errors) else None
        study.files = sorted(
            p for p in location.rglob("*") if p.is_file() and not p.name.startswith(".") and _is_volume_file(p)
        )
        if not study._scan_dicom(location, errors):
            return None
        return study

    def _scan_dicom(self, location: Path, errors: list[AdapterError]) -> bool:
        """Lists the DICOM series under ``location``; False (with an error entry) when the study is unusable."""
        try:
            self.dicom = list_dicom_series(location, limits=self.limits)
        except StudyError as error:
            if error.code == ErrorCode.NO_IMAGE and self.files:
                return True  # no DICOM here; the image files make the study
            errors.append(error_entry(self.study_id, error))
            return False
        return True


def _dicom_candidates(study: _Study, errors: list[AdapterError]) -> list[_Candidate]:
    candidates = []
    for number, info in enumerate(study.dicom, start=1):
        if info.modality and info.modality != "MR":
            errors.append(
                error_entry(
                    study.study_id,
                    ErrorCode.WRONG_MODALITY,
                    f"DICOM series {number} has Modality {quoted_modality(info.modality)}; not listed.",
                    info.files[0].parent,
                )
            )
            continue
        if info.view not in ("sagittal", "axial"):
            continue  # coronal, mixed (3-plane localisers) or without orientation
        folder = Path(os.path.commonpath([str(p.parent) for p in info.files]))
        record = SeriesRecord(
            series_id=info.series_uid, view=info.view, path=str(folder), format="dicom", description=info.description
        )
        if info.view == "axial" and len(info.stacks) > 1:
            # One angled stack per disc (all axial, or the view would be "mixed"): one record per stack.
            for stack in info.stacks:
                stack_record = record.model_copy(update={"series_id": stack_series_id(info.series_uid, stack.index)})
                candidates.append(_Candidate(stack_record, stack.n_files))
            continue
        candidates.append(_Candidate(record, info.n_files))
    return candidates


def _mask_base(stem: str, is_partner) -> str | None:
    """``{base}`` of a file named ``{base}_mask`` (or another ``MASK_SUFFIXES``) when ``is_partner(base)``."""
    return next((stem[: -len(s)] for s in MASK_SUFFIXES if stem.lower().endswith(s) and is_partner(stem[: -len(s)])),
                None)


def _file_candidates(study: _Study, errors: list[AdapterError],
                     dicom_folders: dict[Path, SeriesRecord | None]) -> list[_Candidate]:
    stems = {_stem(p): p for p in study.files}
    masks: dict[str, Path] = {}
    images = []
    for stem, path in stems.items():
        base = _mask_base(stem, lambda b: b in stems)
        if base is not None:
            masks[base] = path
            continue
        # The mask of a DICOM series stored beside its folder (``axial_l4_l5/`` + ``axial_l4_l5_mask.nii.gz``): a
        # label map, never an image series of its own (read as one, it would be graded).
        folder = _mask_base(stem, lambda b, parent=path.parent: parent / b in dicom_folders)
        if folder is not None:
            if dicom_folders[path.parent / folder] is not None:
                dicom_folders[path.parent / folder].mask_path = str(path)
            continue
        images.append((stem, path))
    numbers = {path: number for number, path in enumerate(study.files, start=1)}
    candidates = []
    for stem, path in images:
        try:
            shape, affine = read_image_geometry(path, limits=study.limits)
        except StudyError as error:
            entry = error_entry(study.study_id, error, path=path)
            entry["message"] = f"image file {numbers[path]} of the study: {error.message}"
            errors.append(entry)
            continue
        spacing = [float(v) for v in (affine[:3, :3] ** 2).sum(axis=0) ** 0.5]
        slice_axis = through_plane_axis(shape, spacing)
        view = guess_view(affine, slice_axis=slice_axis)
        if view not in ("sagittal", "axial"):
            continue
        mask = masks.get(stem)
        record = SeriesRecord(
            series_id=stem,
            view=view,
            path=str(path),
            format="nifti" if is_nifti_path(path) else "mha",
            mask_path=None if mask is None else str(mask),
            description=stem,
        )
        candidates.append(_Candidate(record, int(shape[slice_axis])))
    return candidates


def _record(study: _Study, errors: list[AdapterError]) -> StudyRecord | None:
    dicom = _dicom_candidates(study, errors)
    # A mask attaches to a DICOM series whose folder holds that one record alone (not to the stacks of a
    # multi-stack series, which share one folder: None).
    folders = Counter(Path(c.record.path) for c in dicom)
    dicom_folders = {Path(c.record.path): c.record if folders[Path(c.record.path)] == 1 else None for c in dicom}
    candidates = dicom + _file_candidates(study, errors, dicom_folders)
    ranked = [c for _, c in sorted(enumerate(candidates), key=lambda t: t[1].rank(t[0]))]
    series = [c.record for c in ranked]
    seen: dict[str, int] = {}
    for item in series:  # series ids must be unique within a study
        count = seen.get(item.series_id, 0)
        seen[item.series_id] = count + 1
        if count:
            item.series_id = f"{item.series_id}_{count + 1}"
    if not any(item.view == "sagittal" for item in series):
        views = sorted({item.view for item in series})
        errors.append(
            error_entry(
                study.study_id,
                ErrorCode.MISSING_SAGITTAL,
                f"the study has no sagittal series (found: {views or 'no usable series'}); it is left out.",
                study.location,
            )
        )
        return None
    source = series[0].format
    return StudyRecord(study_id=study.study_id, source=source, series=series)


def discover(root: str | Path, *, limits: InputLimits | None = None) -> AdapterResult:
    """Builds one record per study found under ``root`` (see the module docstring for what a study is).

    Args:
        root: a DICOM folder, a NIfTI/MHA file, or a folder of study folders.
        limits: the reading budget of the headers read here (``lss.data.io.limits``); None for the defaults.

    Returns:
        ``AdapterResult`` with absolute paths.

    Raises:
        StudyError: NOT_FOUND when ``root`` does not exist; NO_IMAGE when nothing under it is an image.
    """
    root = check_root(root)
    errors: list[AdapterError] = []
    if root.is_file() or _direct_images(root):
        locations = [(_stem(root) if root.is_file() else root.name, root)]
    else:
        locations = [
            (p.name, p)
            for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith(".") and _holds_images(p)
        ]
    if not locations:
        raise StudyError(ErrorCode.NO_IMAGE, "no DICOM, NIfTI or MetaImage file was found.", str(root))
    studies = [
        s
        for s in (_Study.scan(study_id, location, errors, limits) for study_id, location in locations)
        if s is not None
    ]

    # Series folders of one DICOM study: merge them into a study named after root.
    study_uids = {info.study_uid for s in studies for info in s.dicom}
    if len(studies) > 1 and len(study_uids) == 1 and "" not in study_uids and not any(s.files for s in studies):
        merged = _Study(root.name, root, limits)
        merged.dicom = [info for s in studies for info in s.dicom]
        studies = [merged]

    records = [r for r in (_record(study, errors) for study in studies) if r is not None]
    return AdapterResult(records, errors)
