"""The SPIDER lumbar spine MRI dataset.

SPIDER: van der Graaf J.W., van Hooff M.L., Buckens C.F.M. et al., "Lumbar spine segmentation in MR images: a
dataset and a public benchmark", Scientific Data 11:264 (2024), Zenodo record 10159290. Licence CC BY 4.0:
credit the SPIDER authors wherever its images, masks or gradings are used.

Layout (as downloaded)::

    root/images/{patient}_{t1|t2|t2_SPACE}.mha     sagittal MR volumes
    root/masks/{same name}.mha                      label maps (1-25 vertebrae, 100 canal, 201-225 discs)
    root/radiological_gradings.csv                  Patient, IVD label (1 = L5/S1 upward), Modic, UP endplate,
                                                    LOW endplate, Spondylolisthesis, Disc herniation,
                                                    Disc narrowing, Disc bulging, Pfirrman grade
    root/overview.csv                               optional; not used (it holds sex and birth date columns)

One ``StudyRecord`` per image file (study_id "spider_{patient}_{sequence}", e.g. "spider_1_t2"), with one sagittal
series (format "mha"; mask_path when the mask exists) and one ``LevelRecord`` per graded level L1/L2..L5/S1 of the
patient (T12/L1 and above are not graded here). SPIDER has no central canal stenosis grade, so ``severity`` is None;
the gradings go to ``findings`` as ints: pfirrmann, modic, upper_endplate, lower_endplate, spondylolisthesis,
disc_herniation, disc_narrowing, disc_bulging. IVD label 0 (two rows of the real table) names no level and is
skipped.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from lss.anatomy import LEVELS, level_for_disc_label
from lss.data.adapters.base import AdapterError, AdapterResult, check_root, error_entry
from lss.data.errors import ErrorCode, StudyError
from lss.data.manifest import LevelRecord, SeriesRecord, StudyRecord

# What a SPIDER mask labels (``lss.anatomy.label_partition``): vertebra (body + posterior elements), disc, canal.
SPIDER_LABEL_GROUPS = [["vertebral_body", "posterior_elements"], ["disc"], ["spinal_canal"]]

__all__ = ["discover", "FINDING_COLUMNS", "GRADINGS_FILE", "SEQUENCES", "SPIDER_LABEL_GROUPS"]

GRADINGS_FILE = "radiological_gradings.csv"
# SPIDER column -> LevelRecord.findings key.
FINDING_COLUMNS: dict[str, str] = {
    "Pfirrman grade": "pfirrmann",
    "Modic": "modic",
    "UP endplate": "upper_endplate",
    "LOW endplate": "lower_endplate",
    "Spondylolisthesis": "spondylolisthesis",
    "Disc herniation": "disc_herniation",
    "Disc narrowing": "disc_narrowing",
    "Disc bulging": "disc_bulging",
}
# File name sequence -> series description.
SEQUENCES: dict[str, str] = {"t1": "Sagittal T1", "t2": "Sagittal T2", "t2_SPACE": "Sagittal T2 SPACE"}
_NAME = re.compile(r"^(?P<patient>\d+)_(?P<sequence>t1|t2|t2_SPACE)$", re.IGNORECASE)
_DISC_LABEL_OFFSET = 200


def _sequence(text: str) -> str:
    return next(name for name in SEQUENCES if name.lower() == text.lower())


def _read_gradings(path: Path, errors: list[AdapterError]) -> dict[str, list[LevelRecord]]:
    """Patient -> graded levels (L1/L2..L5/S1), from radiological_gradings.csv."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("Patient", "IVD label") if c not in (reader.fieldnames or [])]
        if missing:
            raise StudyError(ErrorCode.BAD_LABELS, f"{path.name} lacks the column(s) {missing}.", str(path))
        levels: dict[str, dict[str, LevelRecord]] = {}
        for line, row in enumerate(reader, start=2):
            patient = (row.get("Patient") or "").strip()
            try:
                ivd = int(float(row["IVD label"]))
                level = level_for_disc_label(_DISC_LABEL_OFFSET + ivd)
            except (TypeError, ValueError):
                level = None
            if not patient or level not in LEVELS:
                continue  # IVD label 0, T12/L1 and above, or an empty row
            findings = {}
            try:
                for column, key in FINDING_COLUMNS.items():
                    value = (row.get(column) or "").strip()
                    if value:
                        findings[key] = int(float(value))
            except ValueError:
                errors.append(
                    error_entry(
                        f"spider_{patient}",
                        ErrorCode.BAD_LABELS,
                        f"{path.name} line {line}: {column} {value!r} is not a number; "
                        f"the level {level} is left ungraded.",
                        path,
                    )
                )
                continue
            if level in levels.setdefault(patient, {}):
                errors.append(
                    error_entry(
                        f"spider_{patient}",
                        ErrorCode.BAD_LABELS,
                        f"{path.name} line {line}: level {level} is graded twice; the first row is kept.",
                        path,
                    )
                )
                continue
            levels[patient][level] = LevelRecord(level=level, findings=findings)
    return {patient: [by_level[lv] for lv in LEVELS if lv in by_level] for patient, by_level in levels.items()}


def discover(root: str | Path) -> AdapterResult:
    """Builds one record per SPIDER image.

    Args:
        root: the SPIDER folder (holding ``images/``, ``masks/`` and ``radiological_gradings.csv``).

    Returns:
        ``AdapterResult``; an image whose name does not follow ``{patient}_{t1|t2|t2_SPACE}.mha`` gives an error
        entry (unsupported_format) and no record. A missing gradings table gives records without levels.

    Raises:
        StudyError: NOT_FOUND when ``root`` or ``root/images`` does not exist; BAD_LABELS when the gradings table
            lacks its Patient / IVD label columns.
    """
    root = check_root(root)
    images = root / "images"
    if not images.is_dir():
        raise StudyError(ErrorCode.NOT_FOUND, f"{root.name} has no images/ folder; not a SPIDER layout.", str(images))
    errors: list[AdapterError] = []
    gradings_path = root / GRADINGS_FILE
    gradings = _read_gradings(gradings_path, errors) if gradings_path.is_file() else {}
    records: list[StudyRecord] = []
    for image in sorted(
        images.glob("*.mha"), key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]
    ):
        match = _NAME.match(image.stem)
        if match is None:
            errors.append(
                error_entry(
                    image.stem,
                    ErrorCode.UNSUPPORTED_FORMAT,
                    f"{image.name} does not follow SPIDER's {{patient}}_{{t1|t2|t2_SPACE}}.mha naming; skipped.",
                    image,
                )
            )
            continue
        patient, sequence = match["patient"], _sequence(match["sequence"])
        mask = root / "masks" / image.name
        series = SeriesRecord(
            series_id=image.stem,
            view="sagittal",
            path=str(image),
            format="mha",
            mask_path=str(mask) if mask.is_file() else None,
            description=SEQUENCES[sequence],
            # SPIDER's vertebra label is the whole vertebra: one label over the body and the posterior elements.
            label_groups=SPIDER_LABEL_GROUPS if mask.is_file() else None,
        )
        levels = [level.model_copy(deep=True) for level in gradings.get(patient, [])]
        records.append(StudyRecord(study_id=f"spider_{image.stem}", source="spider", series=[series], levels=levels))
    return AdapterResult(records, errors)
