"""The RSNA 2024 Lumbar Spine Degenerative Classification (Kaggle) dataset.

Layout (as downloaded)::

    root/train.csv                        study_id + 25 condition columns; we use the five central canal ones,
                                          ``anatomy.rsna_column(level)``: "Normal/Mild", "Moderate", "Severe" or empty
    root/train_series_descriptions.csv    study_id, series_id, series_description
                                          ("Sagittal T1", "Sagittal T2/STIR", "Axial T2")
    root/train_label_coordinates.csv      study_id, series_id, instance_number, condition, level ("L4/L5"), x, y
    root/train_images/{study_id}/{series_id}/{instance_number}.dcm
    root/test_series_descriptions.csv, root/test_images/...   (optional; no labels)

One ``StudyRecord`` per study (study_id "rsna_{study_id}", source "rsna2024"), series in the order Sagittal T2/STIR,
Sagittal T1, Axial T2 (so ``StudyRecord.sagittal()`` is the T2/STIR one), each a DICOM folder; axial series have
level None. An axial series made of several stacks (one angled along each disc, each with its own
ImageOrientationPatient, as most RSNA axial T2 series are) gives one record per axial stack, series_id
``f"{series_id}#stack{i}"`` (``lss.data.io.stack_series_id``; stack 0 the most cranial), path the series folder,
level None: preprocessing picks each level's stack from the level's point. An axial series whose headers cannot be
listed gives an error entry and is left out (the study is kept); so does a non-axial stack of an axial series.
Levels: severity from train.csv (None when the study or the value is missing) and ``point_ras`` from the "Spinal
Canal Stenosis" coordinate (preferably the one on the Sagittal T2/STIR series): the annotated instance's header
gives ``LPS = IPP + x * PixelSpacing[1] * row_cosine + y * PixelSpacing[0] * column_cosine``, flipped to RAS.
A study without a sagittal series gives a "missing_sagittal" error entry and no record.
Without a descriptions table, each series folder's first DICOM header supplies its description and view.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom

from lss.anatomy import LEVELS, RSNA_CONDITION, Severity, parse_level, rsna_column
from lss.config import InputLimits
from lss.data.adapters.base import AdapterError, AdapterResult, check_root, error_entry
from lss.data.errors import ErrorCode, StudyError
from lss.data.io.dicom import dicom_pixel_to_ras, list_dicom_series, stack_series_id
from lss.data.io.dicom.headers import read_file
from lss.data.io.view import view_of_normal
from lss.data.manifest import LevelRecord, SeriesRecord, StudyRecord

__all__ = ["discover", "SPLITS", "SERIES_ORDER"]

SPLITS: tuple[str, ...] = ("train", "test")
# Series description -> (view, rank); lower rank comes first in StudyRecord.series.
SERIES_ORDER: dict[str, tuple[str, int]] = {
    "sagittal t2/stir": ("sagittal", 0),
    "sagittal t1": ("sagittal", 1),
    "axial t2": ("axial", 2),
}


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise StudyError(ErrorCode.BAD_LABELS, f"{path.name} lacks the column(s) {missing}.", str(path))
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def _id_key(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 62, text)


def _view_of_description(description: str) -> tuple[str | None, int]:
    known = SERIES_ORDER.get(description.lower())
    if known is not None:
        return known
    text = description.lower()
    if "sag" in text:
        return "sagittal", 1 if "t1" in text else 0
    if "ax" in text:
        return "axial", 2
    return None, 3


def _header_of_first(folder: Path, limits: InputLimits | None) -> pydicom.Dataset | None:
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            header = read_file(path, stop_before_pixels=True, limits=limits)  # a deflated file inflates capped
        except StudyError:
            continue
        if header is not None:
            return header
    return None


def _describe_from_headers(folder: Path, limits: InputLimits | None) -> tuple[str, str | None]:
    """(description, view) of a series folder from its first DICOM header."""
    header = _header_of_first(folder, limits)
    if header is None:
        return "", None
    description = str(header.get("SeriesDescription", "") or "")
    try:
        iop = [float(v) for v in header.ImageOrientationPatient]
        view = view_of_normal(np.cross(iop[:3], iop[3:]))
    except (AttributeError, TypeError, ValueError):
        view = _view_of_description(description)[0]
    return description, view


def _axial_records(
    folder: Path, series_id: str, description: str, record_id: str, errors: list[AdapterError],
    limits: InputLimits | None,
) -> list[SeriesRecord]:
    """The records of an axial series folder: one, or one per axial stack when its slices form several."""
    whole = SeriesRecord(series_id=series_id, view="axial", path=str(folder), format="dicom", description=description)
    try:
        found = list_dicom_series(folder, limits=limits)
    except StudyError as error:
        errors.append(
            error_entry(
                record_id,
                error.code,
                f"axial series {series_id} cannot be listed: {error.message} It is left out.",
                folder,
            )
        )
        return []
    if len(found) != 1 or len(found[0].stacks) < 2:
        return [whole]  # one orientation (or several series in one folder: read_series reports that)
    records = []
    for stack in found[0].stacks:
        if stack.view != "axial":
            errors.append(
                error_entry(
                    record_id,
                    ErrorCode.UNSUPPORTED_FORMAT,
                    f"stack {stack.index} of axial series {series_id} ({stack.n_files} slice(s)) is {stack.view}; "
                    "it is left out.",
                    folder,
                )
            )
            continue
        records.append(whole.model_copy(update={"series_id": stack_series_id(series_id, stack.index)}))
    return records


def _severity(value: str, study_id: str, column: str, errors: list[AdapterError], path: Path) -> Severity | None:
    if not value:
        return None
    try:
        return Severity.parse(value)
    except ValueError:
        errors.append(
            error_entry(study_id, ErrorCode.BAD_LABELS, f"{column} {value!r} is no severity; left ungraded.", path)
        )
        return None


def _point(
    images: Path, study: str, row: dict[str, str], record_id: str, errors: list[AdapterError],
    limits: InputLimits | None,
) -> tuple[float, float, float] | None:
    path = images / study / row["series_id"]
    try:
        path = path / f"{int(float(row['instance_number']))}.dcm"
        header = read_file(path, stop_before_pixels=True, limits=limits, label="the annotated instance")
        if header is None:
            raise ValueError("not a DICOM file")
        ras = dicom_pixel_to_ras(header, float(row["x"]), float(row["y"]))
    except (OSError, EOFError, ValueError) as error:
        errors.append(
            error_entry(
                record_id,
                ErrorCode.NOT_AN_IMAGE,
                f"the annotated instance of level {row['level']} cannot be read ({type(error).__name__}); the level "
                "has no point.",
                path,
            )
        )
        return None
    except StudyError as error:
        errors.append(error_entry(record_id, error.code, f"the annotated instance of level {row['level']}: "
                                  f"{error.message} The level has no point.", path))
        return None
    return tuple(float(v) for v in ras)  # type: ignore[return-value]


def _discover_split(root: Path, split: str, errors: list[AdapterError], limits: InputLimits | None
                    ) -> list[StudyRecord]:
    images = root / f"{split}_images"
    descriptions_path = root / f"{split}_series_descriptions.csv"
    # study -> [(series_id, description)]
    series_of: dict[str, list[tuple[str, str | None, str]]] = defaultdict(list)
    if descriptions_path.is_file():
        for row in _read_csv(descriptions_path, ("study_id", "series_id", "series_description")):
            description = row["series_description"]
            series_of[row["study_id"]].append((row["series_id"], _view_of_description(description)[0], description))
    elif images.is_dir():
        for study_dir in images.iterdir():
            if study_dir.is_dir():
                for series_dir in study_dir.iterdir():
                    if series_dir.is_dir():
                        description, view = _describe_from_headers(series_dir, limits)
                        series_of[study_dir.name].append((series_dir.name, view, description))
    if not series_of:
        return []

    labels: dict[str, dict[str, str]] = {}
    labels_path = root / f"{split}.csv"
    if labels_path.is_file():
        for row in _read_csv(labels_path, ("study_id",)):
            labels[row["study_id"]] = row
    coordinates: dict[str, list[dict[str, str]]] = defaultdict(list)
    coordinates_path = root / f"{split}_label_coordinates.csv"
    if coordinates_path.is_file():
        for row in _read_csv(
            coordinates_path, ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
        ):
            if row["condition"].strip().lower() == RSNA_CONDITION.lower():
                coordinates[row["study_id"]].append(row)

    records = []
    for study in sorted(series_of, key=_id_key):
        record_id = f"rsna_{study}"
        ranked = []
        for order, (series_id, view, description) in enumerate(series_of[study]):
            folder = images / study / series_id
            if view is None:
                errors.append(
                    error_entry(
                        record_id,
                        ErrorCode.UNSUPPORTED_FORMAT,
                        f"series {series_id} is neither sagittal nor axial; skipped.",
                        folder,
                    )
                )
                continue
            if not folder.is_dir():
                errors.append(
                    error_entry(
                        record_id,
                        ErrorCode.NOT_FOUND,
                        f"{view} series {series_id} has no image folder.",
                        folder,
                    )
                )
                continue
            rank = _view_of_description(description)[1] if description else (0 if view == "sagittal" else 2)
            if view == "axial":
                items = _axial_records(folder, series_id, description, record_id, errors, limits)
            else:
                items = [
                    SeriesRecord(
                        series_id=series_id, view=view, path=str(folder), format="dicom", description=description
                    )
                ]
            ranked.extend((rank, order, item) for item in items)
        series = [item for _, _, item in sorted(ranked, key=lambda t: (t[0], t[1]))]
        if not any(item.view == "sagittal" for item in series):
            errors.append(
                error_entry(
                    record_id,
                    ErrorCode.MISSING_SAGITTAL,
                    f"study {study} has no sagittal series; it is left out.",
                    images / study,
                )
            )
            continue
        label_row = labels.get(study)
        sagittal_t2 = {
            item.series_id for item in series if item.view == "sagittal" and "t2" in item.description.lower()
        }
        points: dict[str, dict[str, str]] = {}
        for row in sorted(coordinates.get(study, []), key=lambda r: r["series_id"] not in sagittal_t2):
            try:
                level = parse_level(row["level"])
            except ValueError:
                errors.append(
                    error_entry(
                        record_id,
                        ErrorCode.BAD_LABELS,
                        f"coordinate level {row['level']!r} is unknown; skipped.",
                        coordinates_path,
                    )
                )
                continue
            points.setdefault(level, row)
        levels = []
        for level in LEVELS:
            column = rsna_column(level)
            severity = (
                _severity(label_row.get(column, ""), record_id, column, errors, labels_path) if label_row else None
            )
            point = _point(images, study, points[level], record_id, errors, limits) if level in points else None
            if label_row is not None or point is not None:
                levels.append(LevelRecord(level=level, severity=severity, point_ras=point))
        records.append(StudyRecord(study_id=record_id, source="rsna2024", series=series, levels=levels))
    return records


def discover(root: str | Path, *, limits: InputLimits | None = None) -> AdapterResult:
    """Builds one record per RSNA 2024 study, from the train split and the test split when present.

    Args:
        root: the competition folder.
        limits: the reading budget of the headers read here (``lss.data.io.limits``); None for the defaults.

    Returns:
        ``AdapterResult``: records of studies with a sagittal series; error entries for studies without one
        (missing_sagittal), missing series folders (not_found), unreadable annotated instances, bad labels.

    Raises:
        StudyError: NOT_FOUND when ``root`` does not exist; BAD_LABELS when a table lacks its key columns.
    """
    root = check_root(root)
    errors: list[AdapterError] = []
    records: list[StudyRecord] = []
    for split in SPLITS:
        records.extend(_discover_split(root, split, errors, limits))
    return AdapterResult(records, errors)
