"""Dataset cards: one small YAML file says how a folder of image / mask pairs maps onto the platform's anatomy.

Any labelled dataset laid out as "one image file and one mask file per case" comes in through this one adapter;
its card names the files, says what each mask value is (``lss.anatomy``: structure, vertebra or disc level), what
is left unlabelled (unknown, never background), the geometry that files without any (PNG) lack, and the dataset's
own train / validation split. The format of a card, key by key, is in ``data/cards/README.md``; in short::

    name: fastcleverseg_vb2                      # study_id = "<name>_<id>"
    description: 17 sagittal T2 MRIs, vertebral bodies T11-L5
    source: Zukic et al. 2014; Ramos et al. 2024 (GitHub JonathanRamos/fastcleverseg)
    licence: GPL-3.0 (read in place, never copied)
    root: ../../../shared/data/real/fastcleverseg_vb2   # relative to this file; ~ and $VARS expanded
    image: vb2_{id}_t2.nii.gz                    # one named placeholder, the case id
    mask: vb2_{id}_vb_mask.nii.gz
    labels:                                      # dataset value -> what it is
      1: {structure: vertebral_body, vertebra: L5}
      2: {structure: vertebral_body, vertebra: L4}
    labelled_span_only: true

``discover(card_path)`` has the contract of every adapter (``lss.data.adapters.base``): one ``StudyRecord`` per
case (absolute paths; the series carries ``label_map``, ``label_groups``, ``required_structures``,
``labelled_span_only`` and the geometry overrides), an error entry for every case that cannot be used (an image
without its mask or a mask without its image: ``not_found``), and an exception only for the dataset as a whole (a
card that does not validate, a root that does not exist). The masks are not read here; preprocessing translates
and checks them (``lss.preprocessing.transforms``).

The dataset's split is not part of ``StudyRecord``: ask the card (``DatasetCard.split_of(study_id)``, or
``card_splits(card)`` for every split's study ids).
"""

from __future__ import annotations

import os
import re
import string
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from lss.anatomy import (
    CANAL_LABEL,
    VERTEBRAE,
    Structure,
    disc_label_for_level,
    label_partition,
    parse_level,
    posterior_label,
    unidentified_label,
    vertebra_label,
)
from lss.data.adapters.base import AdapterError, AdapterResult, error_entry
from lss.data.errors import ErrorCode, StudyError
from lss.data.io.itk import ITK_SUFFIXES
from lss.data.manifest import ImageFormat, SeriesRecord, StudyRecord, check_axcodes, check_spacing_mm

__all__ = [
    "LabelSpec",
    "CardGeometry",
    "SplitRule",
    "DatasetCard",
    "load_card",
    "discover",
    "card_splits",
    "CARD_SUFFIXES",
]

CARD_SUFFIXES: tuple[str, ...] = (".yaml", ".yml")
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def _ids(value: Any, what: str) -> Any:
    """Case ids must be strings: YAML reads 00 as 0 and 08 as "08", so an unquoted id is ambiguous."""
    if value is None or not isinstance(value, list):
        return value
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{what} lists {item!r}, which is not a string; quote case ids in YAML (\"00\", not 00).")
    return value


class LabelSpec(BaseModel):
    """What one dataset mask value is.

    Attributes:
        structure: the structure it labels (``lss.anatomy.Structure`` value or name), or several when one value
            covers them together (SPIDER's vertebra label: ``[vertebral_body, posterior_elements]``).
        vertebra: the vertebra of a vertebral body / posterior elements label ("L5"), if the dataset says.
        level: the disc level of a disc label ("L4/L5"), if the dataset says.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    structure: tuple[Structure, ...]
    vertebra: str | None = None
    level: str | None = None

    @field_validator("structure", mode="before")
    @classmethod
    def _structure(cls, value: Any) -> tuple[Structure, ...]:
        values = [value] if isinstance(value, (str, Structure)) else list(value or [])
        if not values:
            raise ValueError("structure names no structure.")
        parsed = {Structure.parse(v) for v in values}
        if Structure.BACKGROUND in parsed:
            raise ValueError("background is mask value 0 and never a card label; leave the value out of labels.")
        return tuple(sorted(parsed, key=lambda s: s.index))

    @field_validator("vertebra")
    @classmethod
    def _vertebra(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = str(value).strip().upper()
        if name not in VERTEBRAE:
            raise ValueError(f"unknown vertebra {value!r}; expected one of {list(VERTEBRAE)} (or leave it out).")
        return name

    @field_validator("level")
    @classmethod
    def _level(cls, value: str | None) -> str | None:
        return None if value is None else parse_level(value)

    @model_validator(mode="after")
    def _identity(self) -> LabelSpec:
        first = self.structure[0]
        if self.vertebra is not None and self.level is not None:
            raise ValueError("a label has a vertebra or a level, not both.")
        if self.vertebra is not None and first not in (Structure.VERTEBRAL_BODY, Structure.POSTERIOR_ELEMENTS):
            raise ValueError(f"vertebra applies to vertebral_body / posterior_elements labels, not {first.value}.")
        if self.level is not None and first is not Structure.DISC:
            raise ValueError(f"level applies to disc labels, not {first.value}.")
        return self

    @property
    def group(self) -> tuple[str, ...]:
        """The structure values this label covers, in channel order."""
        return tuple(s.value for s in self.structure)

    @property
    def native(self) -> int:
        """The native label value (``lss.anatomy``) of this label: that of its first structure in channel order."""
        first = self.structure[0]
        if first is Structure.CANAL:
            return CANAL_LABEL
        if self.vertebra is not None:
            if first is Structure.VERTEBRAL_BODY:
                return vertebra_label(self.vertebra)
            return posterior_label(self.vertebra)
        if self.level is not None:
            return disc_label_for_level(self.level)
        return unidentified_label(first)


class CardGeometry(BaseModel):
    """Geometry the files lack or get wrong, applied to image and mask alike (``lss.data.io.geometry``).

    Attributes:
        spacing_mm: voxel size per array axis, mm; a 2D slice read as ``(1, rows, cols)`` takes its slice
            thickness first (``[4.0, 1.3, 1.3]``).
        axcodes: the direction each array axis increases towards ("RIP": a sagittal PNG, anterior left, superior up).
    """

    model_config = ConfigDict(extra="forbid")

    spacing_mm: tuple[float, float, float] | None = None
    axcodes: str | None = None

    @field_validator("spacing_mm")
    @classmethod
    def _spacing(cls, value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        return check_spacing_mm(value)

    @field_validator("axcodes")
    @classmethod
    def _axcodes(cls, value: str | None) -> str | None:
        return check_axcodes(value)


class SplitRule(BaseModel):
    """A split given by a regular expression that the whole case id must match (``re.fullmatch``)."""

    model_config = ConfigDict(extra="forbid")

    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"regex {value!r} does not compile: {error}.") from None
        return value

    def matches(self, case_id: str) -> bool:
        return re.fullmatch(self.regex, case_id) is not None


class _Pattern:
    """A file pattern with one named placeholder, as a glob (to list) and a regex (to read the id back)."""

    def __init__(self, pattern: str) -> None:
        import glob

        parts = list(string.Formatter().parse(pattern))
        fields = [p for p in parts if p[1] is not None]
        self.pattern = pattern
        self.field = fields[0][1]
        self.glob = "".join(glob.escape(text) + ("*" if name is not None else "") for text, name, _, _ in parts)
        self.regex = re.compile(
            "".join(re.escape(text) + (r"(?P<id>[^/]+)" if name is not None else "") for text, name, _, _ in parts)
        )
        self.literal = sum(len(text) for text, _, _, _ in parts)

    def match(self, relative: str) -> str | None:
        found = self.regex.fullmatch(relative)
        return None if found is None else found["id"]

    def path(self, root: Path, case_id: str) -> Path:
        return root / self.pattern.format(**{self.field: case_id})


def _check_pattern(value: str, what: str) -> str:
    value = str(value).strip().rstrip("/")
    if not value:
        raise ValueError(f"the {what} pattern is empty.")
    if value.startswith("/") or value.startswith("~") or ".." in Path(value).parts:
        raise ValueError(f"the {what} pattern {value!r} must be relative to root, without '..'.")
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as error:
        raise ValueError(f"the {what} pattern {value!r} is not a valid pattern: {error}.") from None
    fields = [(name, spec, conversion) for _, name, spec, conversion in parts if name is not None]
    if len(fields) != 1:
        raise ValueError(f"the {what} pattern {value!r} must hold exactly one placeholder such as {{id}}, "
                         f"found {len(fields)}.")
    name, spec, conversion = fields[0]
    if not name.isidentifier() or spec or conversion:
        raise ValueError(f"the {what} pattern's placeholder must be a plain name such as {{id}}, got {{{name}}}.")
    if any(c in text for text, *_ in parts for c in "*?["):
        raise ValueError(f"the {what} pattern {value!r} holds a glob character (*, ?, [); use the placeholder.")
    return value


def _infer_format(pattern: str) -> str:
    name = pattern.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "mha"
    if name.endswith(".png"):
        return "png"
    if name.endswith((".dcm", ".dicom", ".ima")) or not Path(name).suffix:
        return "dicom"  # a DICOM file, or a folder per case
    raise ValueError(f"the format of {pattern!r} cannot be inferred from its suffix; set format "
                     "(nifti, mha, dicom or png).")


class DatasetCard(BaseModel):
    """A dataset card (see the module docstring and ``data/cards/README.md``).

    Attributes:
        name: the dataset's name, the prefix of its study ids ("<name>_<id>"); letters, digits, "_", "-", ".".
        description: a sentence about the data.
        source: where it comes from, with the attribution its licence asks for.
        licence: its licence and any condition of use ("license" is accepted too).
        root: the data folder; a relative path is relative to the card's folder; "~" and "$VARS" are expanded.
        image: the image file (or DICOM folder) of a case, relative to root, with one placeholder: ``{id}``.
        mask: the mask file of a case, same placeholder; None for an unlabelled dataset.
        format: "nifti", "mha", "dicom" or "png"; default: inferred from the image pattern's suffix.
        view: the images' plane; "sagittal" (the only one a card can bring in today).
        labels: mask value -> ``LabelSpec``; a key may be a range "9-25" (each value the same, without vertebra
            or level). A mask value neither 0 nor listed is an error when the case is preprocessed.
        required: structures every mask must contain (an empty one makes that case an ``empty_labels`` error);
            default: every labelled structure. A labelled structure not required and absent from a mask is
            unknown for that case.
        labelled_span_only: masks label only part of the spine shown; outside their superior-inferior span
            everything is unknown.
        geometry: ``CardGeometry`` overrides (spacing, orientation) for files without (or with wrong) geometry.
        splits: split name -> case ids (a list of strings) or ``{regex: ...}``; disjoint; a case in none has no split.
        include: only these case ids (default: all found).
        exclude: case ids left out.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = ""
    source: str = ""
    licence: str = Field("", validation_alias=AliasChoices("licence", "license"))
    root: str
    image: str
    mask: str | None = None
    format: ImageFormat | None = None
    view: Literal["sagittal"] = "sagittal"
    labels: dict[int, LabelSpec] = Field(default_factory=dict)
    required: list[Structure] | None = None
    labelled_span_only: bool = False
    geometry: CardGeometry = Field(default_factory=CardGeometry)
    splits: dict[str, list[str] | SplitRule] = Field(default_factory=dict)
    include: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)

    _base_dir: Path | None = PrivateAttr(default=None)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return _check_pattern(value, "image")

    @field_validator("mask")
    @classmethod
    def _mask(cls, value: str | None) -> str | None:
        return None if value is None else _check_pattern(value, "mask")

    @field_validator("labels", mode="before")
    @classmethod
    def _expand_ranges(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[int, Any] = {}
        for key, spec in value.items():
            text = str(key)
            ranged = _RANGE.match(text)
            if ranged:
                low, high = int(ranged[1]), int(ranged[2])
                if low > high:
                    raise ValueError(f"label range {text!r} runs backwards.")
                if isinstance(spec, dict) and (spec.get("vertebra") is not None or spec.get("level") is not None):
                    raise ValueError(f"label range {text!r} cannot name one vertebra or level for every value.")
                keys = list(range(low, high + 1))
            elif isinstance(key, int) or text.strip().isdigit():
                keys = [int(text)]
            else:
                raise ValueError(f"label key {key!r} is neither a mask value nor a range such as '9-25'.")
            for number in keys:
                if number <= 0:
                    raise ValueError(f"label {number}: mask value 0 is the background and needs no entry; "
                                     "values must be positive.")
                if number in out:
                    raise ValueError(f"mask value {number} is listed twice.")
                out[number] = spec
        return out

    @field_validator("required", mode="before")
    @classmethod
    def _required(cls, value: Any) -> Any:
        if value is None:
            return None
        values = [value] if isinstance(value, str) else list(value)
        return [Structure.parse(v) for v in values]

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _case_ids(cls, value: Any, info) -> Any:
        return _ids(value, info.field_name)

    @field_validator("splits", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, ids in value.items():
                _ids(ids, f"split {name!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetCard:
        if self.format is None:
            self.format = _infer_format(self.image)
        if self.mask is not None and not self.labels:
            raise ValueError("a card with a mask pattern needs labels (what each mask value is).")
        if self.mask is None and self.labels:
            raise ValueError("labels are given but no mask pattern; add mask: or drop labels:.")
        if self.mask is not None:
            if self.mask == self.image:
                raise ValueError("the image and mask patterns are the same.")
            if _Pattern(self.mask).field != _Pattern(self.image).field:
                raise ValueError(f"the image and mask patterns use different placeholders "
                                 f"({{{_Pattern(self.image).field}}}, {{{_Pattern(self.mask).field}}}).")
        try:
            label_partition([list(group) for group in self.label_groups])
        except ValueError as error:
            raise ValueError(f"the labels do not partition the structures: {error}") from None
        labelled = {s for group in self.label_groups for s in group}
        missing = [s.value for s in (self.required or []) if s.value not in labelled]
        if missing:
            raise ValueError(f"required names {missing}, which no label covers (labelled: {sorted(labelled)}).")
        seen: dict[str, str] = {}
        for split, rule in self.splits.items():
            if isinstance(rule, list):
                for case_id in rule:
                    if case_id in seen and seen[case_id] != split:
                        raise ValueError(f"case {case_id!r} is in splits {seen[case_id]!r} and {split!r}.")
                    seen[case_id] = split
        if self.format == "png" and self.geometry.spacing_mm is None:
            warnings.warn(
                f"card {self.name!r}: PNG files hold no pixel spacing and geometry.spacing_mm is not set; "
                "1 mm pixels are assumed.", stacklevel=2,
            )
        return self

    # -- what the records carry ------------------------------------------------------------------------------------

    @property
    def label_map(self) -> dict[int, int]:
        """Dataset mask value -> native label value (``lss.anatomy``)."""
        return {value: spec.native for value, spec in sorted(self.labels.items())}

    @property
    def label_groups(self) -> list[list[str]]:
        """One group per distinct structure set of the labels, in channel order (``lss.anatomy.label_partition``)."""
        groups = sorted({spec.group for spec in self.labels.values()}, key=lambda g: Structure(g[0]).index)
        return [list(group) for group in groups]

    @property
    def required_structures(self) -> list[str]:
        """The structures every mask must contain (default: every labelled one), in channel order."""
        if self.required is not None:
            return [s.value for s in sorted(set(self.required), key=lambda s: s.index)]
        return [s for group in self.label_groups for s in group]

    def root_path(self) -> Path:
        """The data folder: "~" and "$VARS" expanded, a relative path resolved against the card's folder.

        Raises:
            StudyError: NOT_FOUND when it does not exist (naming an environment variable left unset).
        """
        text = os.path.expandvars(os.path.expanduser(self.root))
        path = Path(text)
        if not path.is_absolute():
            path = (self._base_dir or Path.cwd()) / path
        if not path.exists():
            unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
            hint = f" (environment variable {', '.join(unset)} is not set)" if unset else ""
            raise StudyError(ErrorCode.NOT_FOUND, f"the root of card {self.name!r} does not exist{hint}.", str(path))
        return path.resolve()

    def study_id(self, case_id: str) -> str:
        """The study id of a case: ``"<name>_<case id>"``."""
        return f"{self.name}_{case_id}"

    def split_of(self, study_id: str) -> str | None:
        """The split ("train", "val", ...) of one of this card's studies, or None when no split lists it.

        Raises:
            ValueError: when ``study_id`` is not one of this card's (no ``"<name>_"`` prefix), or two splits claim it.
        """
        prefix = f"{self.name}_"
        if not study_id.startswith(prefix):
            raise ValueError(f"{study_id!r} is not a study of card {self.name!r} (ids start with {prefix!r}).")
        case_id = study_id[len(prefix):]
        found = [name for name, rule in self.splits.items()
                 if (case_id in rule if isinstance(rule, list) else rule.matches(case_id))]
        if len(found) > 1:
            raise ValueError(f"case {case_id!r} of card {self.name!r} is in splits {found}; splits must be disjoint.")
        return found[0] if found else None

    def series_record(self, case_id: str, image: Path, mask: Path | None) -> SeriesRecord:
        """The sagittal ``SeriesRecord`` of one case (absolute paths)."""
        return SeriesRecord(
            series_id=case_id,
            view=self.view,
            path=str(image),
            format=self.format,
            mask_path=None if mask is None else str(mask),
            label_map=self.label_map if mask is not None else None,
            label_groups=self.label_groups if mask is not None else None,
            required_structures=self.required_structures if mask is not None else [],
            labelled_span_only=self.labelled_span_only,
            spacing_mm=self.geometry.spacing_mm,
            axcodes=self.geometry.axcodes,
        )


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(card)"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)


def load_card(path: str | Path) -> DatasetCard:
    """Reads and validates a dataset card; its root resolves against the card's folder.

    Raises:
        StudyError: NOT_FOUND when the card file does not exist.
        ValueError: when the file is not YAML, not a mapping, or not a valid card (one line per problem, each
            naming the key, e.g. ``labels.3.vertebra: unknown vertebra 'L6'``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise StudyError(ErrorCode.NOT_FOUND, f"dataset card {path.name} does not exist.", str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path.name} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path.name} is not a dataset card: a YAML mapping of keys (name, root, image, ...) is needed."
        )
    try:
        card = DatasetCard.model_validate(data)
    except ValidationError as error:
        raise ValueError(f"{path.name} is not a valid dataset card:\n{_format_errors(error)}") from None
    card._base_dir = path.resolve().parent
    return card


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _list(root: Path, pattern: _Pattern, other: _Pattern | None, folders: bool) -> dict[str, Path]:
    """Case id -> path of every file (or folder, for DICOM) under ``root`` that ``pattern`` matches.

    A path that the other pattern matches too goes to the more specific pattern (more literal characters): with
    ``{id}.png`` and ``{id}_mask.png``, ``00_mask.png`` is a mask, never the image of case "00_mask".
    """
    found: dict[str, Path] = {}
    for path in root.glob(pattern.glob):
        if not (path.is_file() or (folders and path.is_dir())):
            continue
        relative = path.relative_to(root).as_posix()
        case_id = pattern.match(relative)
        if case_id is None:
            continue
        if other is not None and other.match(relative) is not None and other.literal > pattern.literal:
            continue
        found[case_id] = path.resolve()
    return found


def discover(card: str | Path | DatasetCard) -> AdapterResult:
    """One record per case of a dataset card.

    Args:
        card: the card's YAML file (or a ``DatasetCard``; a relative root then resolves against the current folder).

    Returns:
        ``AdapterResult``: records sorted by case id (natural order), each with one sagittal series; error entries
        ``not_found`` for an image without its mask, a mask without its image, or an ``include`` id with neither;
        ``no_image`` (study_id "") when nothing under root matches the image pattern.

    Raises:
        StudyError: NOT_FOUND when the card file or its root does not exist.
        ValueError: when the card does not validate (see ``load_card``).
    """
    card = card if isinstance(card, DatasetCard) else load_card(card)
    root = card.root_path()
    image_pattern = _Pattern(card.image)
    mask_pattern = None if card.mask is None else _Pattern(card.mask)
    folders = card.format == "dicom"
    images = _list(root, image_pattern, mask_pattern, folders)
    masks = {} if mask_pattern is None else _list(root, mask_pattern, image_pattern, folders=False)
    errors: list[AdapterError] = []
    if not images:
        errors.append(error_entry("", ErrorCode.NO_IMAGE,
                                  f"no file under the root of card {card.name!r} matches {card.image!r}.", root))
    case_ids = sorted(set(images) | set(masks), key=_natural)
    if card.include is not None:
        for case_id in card.include:
            if case_id not in images and case_id not in masks:
                errors.append(error_entry(card.study_id(case_id), ErrorCode.NOT_FOUND,
                                          f"case {case_id!r} is in include but no file matches {card.image!r}.",
                                          image_pattern.path(root, case_id)))
        case_ids = [c for c in case_ids if c in set(card.include)]
    case_ids = [c for c in case_ids if c not in set(card.exclude)]
    records: list[StudyRecord] = []
    for case_id in case_ids:
        study_id = card.study_id(case_id)
        image, mask = images.get(case_id), masks.get(case_id)
        if image is None:
            errors.append(error_entry(study_id, ErrorCode.NOT_FOUND,
                                      f"case {case_id!r} has a mask but no image matching {card.image!r}; skipped.",
                                      mask))
            continue
        if mask_pattern is not None and mask is None:
            errors.append(error_entry(study_id, ErrorCode.NOT_FOUND,
                                      f"case {case_id!r} has an image but no mask matching {card.mask!r}; skipped.",
                                      image))
            continue
        records.append(StudyRecord(study_id=study_id, source=card.name,
                                   series=[card.series_record(case_id, image, mask)]))
    return AdapterResult(records, errors)


def card_splits(card: str | Path | DatasetCard, study_ids: list[str] | None = None) -> dict[str, list[str]]:
    """Each split of a card with its study ids, e.g. ``{"train": ["vesal_sagittal_2d_00", ...], "val": [...]}``.

    Args:
        card: a card file or ``DatasetCard``.
        study_ids: the studies to sort into splits; default: every record ``discover`` finds.

    Returns:
        split name -> study ids, every split of the card present (possibly empty), in the given (or discovered)
        order; studies in no split are left out.

    Raises:
        StudyError, ValueError: as ``discover`` and ``DatasetCard.split_of``.
    """
    card = card if isinstance(card, DatasetCard) else load_card(card)
    if study_ids is None:
        study_ids = [record.study_id for record in discover(card).records]
    out: dict[str, list[str]] = {name: [] for name in card.splits}
    for study_id in study_ids:
        split = card.split_of(study_id)
        if split is not None:
            out[split].append(study_id)
    return out
