"""The study manifest: what every dataset adapter produces and what preprocessing consumes.

One ``StudyRecord`` per study, stored one JSON object per line (``manifest.jsonl``). Paths are stored as given
(absolute, or relative to the manifest's folder) and resolved with ``StudyRecord.resolve``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lss.anatomy import Severity, Structure, label_partition, parse_level

__all__ = ["check_spacing_mm", "check_axcodes", "SeriesRecord", "LevelRecord", "StudyRecord", "read_manifest",
           "write_manifest", "MANIFEST_NAME"]

MANIFEST_NAME = "manifest.jsonl"

View = Literal["sagittal", "axial"]
ImageFormat = Literal["dicom", "nifti", "mha", "png"]


def check_spacing_mm(value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
    """A voxel-size override: three positive numbers, or None.

    Raises:
        ValueError: otherwise.
    """
    if value is not None and (len(value) != 3 or not all(v > 0 for v in value)):
        raise ValueError(f"spacing_mm must be three positive numbers, got {list(value)}.")
    return value


def check_axcodes(value: str | None) -> str | None:
    """An orientation override in nibabel axis codes ("RIP"), upper-cased, or None.

    Raises:
        ValueError: unless it names each of L/R, P/A, I/S once.
    """
    if value is None:
        return None
    code = value.strip().upper()
    pairs = ({"L", "R"}, {"P", "A"}, {"I", "S"})
    if len(code) != 3 or any(sum(c in pair for c in code) != 1 for pair in pairs):
        raise ValueError(f"axcodes must name each of L/R, P/A, I/S once, got {value!r}.")
    return code


class SeriesRecord(BaseModel):
    """One image series of a study.

    Attributes:
        series_id: unique within the study (a SeriesInstanceUID, a file stem, ...).
        view: "sagittal" or "axial".
        path: a DICOM series folder, or a NIfTI / MHA file.
        format: "dicom", "nifti" or "mha".
        mask_path: the series' label map (same grid as the image), if any: native labels (``lss.anatomy``), or the
            dataset's own values translated by ``label_map``.
        level: the disc level an axial stack was planned through ("L4/L5"); None for a series covering several.
        description: the series description (no patient data).
        label_map: dataset label value -> native label value (``lss.anatomy``); None: the mask holds native labels.
            A mask value that is neither 0 nor a key is an error (``bad_labels``).
        label_groups: the structures the mask labels, one list per label (``lss.anatomy.label_partition``):
            ``[["vertebral_body"]]`` for bodies only, ``[["vertebral_body", "posterior_elements"], ...]`` where one
            label covers both. None: every structure, each alone. An unlabelled structure is unknown, not background.
        required_structures: structures every mask of this series must contain (an empty one is ``empty_labels``);
            a labelled structure not listed here and absent from the mask is unknown for that case.
        labelled_span_only: the mask labels only part of the spine shown: outside the superior-inferior span of its
            labelled voxels every structure is unknown (e.g. the sacrum and T10 of a T11-L5 body mask).
        spacing_mm: voxel size override, per array axis (for files without spacing, such as PNG slices).
        axcodes: orientation override: the direction each array axis increases towards, as nibabel axis codes
            ("RAS" is the identity; a 2D sagittal PNG read as (1, rows, cols) with anterior to the left is "RIP").
    """

    model_config = ConfigDict(extra="forbid")

    series_id: str
    view: View
    path: str
    format: ImageFormat
    mask_path: str | None = None
    level: str | None = None
    description: str = ""
    label_map: dict[int, int] | None = None
    label_groups: list[list[str]] | None = None
    required_structures: list[str] = Field(default_factory=list)
    labelled_span_only: bool = False
    spacing_mm: tuple[float, float, float] | None = None
    axcodes: str | None = None

    @field_validator("level")
    @classmethod
    def _level(cls, value: str | None) -> str | None:
        return None if value is None else parse_level(value)

    @field_validator("label_groups")
    @classmethod
    def _groups(cls, value: list[list[str]] | None) -> list[list[str]] | None:
        if value is None:
            return None
        label_partition(value)  # raises for an unknown structure, an empty group or overlapping groups
        return [[Structure.parse(name).value for name in group] for group in value]

    @field_validator("required_structures")
    @classmethod
    def _required(cls, value: list[str]) -> list[str]:
        return [Structure.parse(name).value for name in value]

    @field_validator("spacing_mm")
    @classmethod
    def _spacing(cls, value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        return check_spacing_mm(value)

    @field_validator("axcodes")
    @classmethod
    def _axcodes(cls, value: str | None) -> str | None:
        return check_axcodes(value)

    def partition(self):
        """(C,) the structure partition of this series' mask (``lss.anatomy.label_partition``)."""
        return label_partition(self.label_groups)


class LevelRecord(BaseModel):
    """Ground truth (or annotation) of one disc level.

    Attributes:
        level: "L1/L2" .. "L5/S1".
        severity: central canal stenosis severity, if known.
        area_mm2: dural sac cross-sectional area at the disc, if measured.
        ap_mm: dural sac AP diameter at the disc, if measured.
        point_ras: a world point (RAS+, mm) at the level's disc / canal, if known (used to pick axial slices).
        findings: other per-level findings (disc height, bulge, ligamentum flavum thickness, Pfirrmann grade, ...).
    """

    model_config = ConfigDict(extra="forbid")

    level: str
    severity: Severity | None = None
    area_mm2: float | None = None
    ap_mm: float | None = None
    point_ras: tuple[float, float, float] | None = None
    findings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        return parse_level(value)

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Severity | None:
        return None if value is None else Severity.parse(value)


class StudyRecord(BaseModel):
    """One study: its series, per-level labels and reference report.

    Attributes:
        study_id: unique within the dataset; never a patient identifier.
        source: where it came from: "synthetic", "spider", "rsna2024", "dicom", "nifti".
        series: the study's image series; preprocessing needs one sagittal series.
        levels: per-level labels, in any order (may be empty for unlabelled data).
        reports: reference radiology reports, by style name (synthetic data), possibly empty.
        root: folder that relative paths are relative to (set by ``read_manifest``; not stored).
    """

    model_config = ConfigDict(extra="forbid")

    study_id: str
    source: str
    series: list[SeriesRecord]
    levels: list[LevelRecord] = Field(default_factory=list)
    reports: dict[str, str] = Field(default_factory=dict)
    root: str | None = Field(default=None, exclude=True)

    def resolve(self, path: str | None) -> Path | None:
        """The absolute path of a path stored in this record."""
        if path is None:
            return None
        candidate = Path(path)
        if candidate.is_absolute() or self.root is None:
            return candidate
        return Path(self.root) / candidate

    def sagittal(self) -> SeriesRecord | None:
        """The study's sagittal series (the first one, if several)."""
        return next((s for s in self.series if s.view == "sagittal"), None)

    def axials(self) -> list[SeriesRecord]:
        return [s for s in self.series if s.view == "axial"]

    def level(self, level: str) -> LevelRecord | None:
        key = parse_level(level)
        return next((lv for lv in self.levels if lv.level == key), None)


def write_manifest(records: list[StudyRecord], path: str | Path) -> Path:
    """Writes records as JSON lines (atomically: a reader never sees half a manifest)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as handle:
        for record in records:
            handle.write(record.model_dump_json() + "\n")
    tmp.replace(path)
    return path


def read_manifest(path: str | Path) -> list[StudyRecord]:
    """Reads a JSON-lines manifest; relative paths resolve against its folder.

    Raises:
        FileNotFoundError: when the manifest does not exist.
        ValueError: on a line that is not a valid record (the message gives the line number).
    """
    path = Path(path)
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = StudyRecord.model_validate(json.loads(line))
            except Exception as error:  # noqa: BLE001 - re-raised with the line number
                raise ValueError(f"{path}:{number}: not a valid study record: {error}") from error
            record.root = str(path.parent.resolve())
            records.append(record)
    return records
