"""The single source of truth for lumbar anatomy, label values, severities and grading cut-offs.

Every other module imports these names; none hard-codes a level name, a label value or a cut-off.

Label values on disk follow SPIDER (van der Graaf et al., Sci Data 11:264, 2024): one label per vertebra
(1-25), one per intervertebral disc (201-225), the spinal canal 100. Vertebrae are numbered caudal to cranial
starting at the sacrum (S1 = 1, L5 = 2, ... T12 = 7, T11 = 8) and disc ``200 + k`` lies directly cranial to
vertebra ``k``,
so disc 201 is L5/S1, matching SPIDER's ``radiological_gradings.csv`` ("IVD label 1 = L5/S1, upward").
This project adds two ranges SPIDER does not use: ``300 + k`` is the posterior elements (pedicles, laminae, facets,
spinous process) of vertebra k, so that ``1-25`` is the vertebral body alone in the native convention (the
phantoms), and ``400 + Structure.index`` is a structure whose vertebra or level is not known (a 2D dataset that
labels "disc" without saying which). In SPIDER's own masks ``1-25`` is the whole vertebra: a dataset card
(``lss.data.adapters.card``) records that this label covers body and posterior elements together (a partial label, see
``label_partition``).
Verify the vertebra direction on real SPIDER masks before relying on vertebra identities; the disc and canal
labels, which grading uses, do not depend on it.

Cut-offs come from ``shared/reference/clinical_grading.md``: dural sac cross-sectional area (Bolender /
Schonstrom: < 100 mm2 stenosis, < 70-75 mm2 severe) and canal AP diameter (Verbiest: < 10 mm absolute stenosis).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = [
    "LEVELS",
    "VERTEBRAE",
    "Severity",
    "SEVERITIES",
    "Structure",
    "Tissue",
    "GradingCutoffs",
    "CUTOFFS",
    "CANAL_LABEL",
    "PARTIAL_VERTEBRA_OFFSET",
    "DISC_LABEL_OFFSET",
    "POSTERIOR_LABEL_OFFSET",
    "UNIDENTIFIED_LABEL_OFFSET",
    "posterior_label",
    "unidentified_label",
    "label_partition",
    "partition_groups",
    "vertebra_label",
    "disc_label",
    "disc_label_for_level",
    "level_for_disc_label",
    "level_key",
    "parse_level",
    "structure_of_label",
    "to_structure_mask",
    "grade_from_measurements",
    "grade_from_sagittal_ap",
    "REPORTED_AREA_STEP_MM2",
    "REPORTED_DIAMETER_STEP_MM",
    "format_area_mm2",
    "format_diameter_mm",
    "RSNA_CLASS_BALANCE",
    "RSNA_CONDITION",
    "RSNA_SEVERITY_WEIGHTS",
    "rsna_column",
    "UNGRADED_DISCS",
]

# Vertebrae from caudal to cranial, as the SPIDER labels count them.
VERTEBRAE: tuple[str, ...] = ("S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11")

# The five graded lumbar levels, cranial to caudal (anatomical reading order, as RSNA 2024 lists them).
LEVELS: tuple[str, ...] = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")

# Discs above the top graded level; present in the phantom (and often in the field of view), not graded.
UNGRADED_DISCS: tuple[str, ...] = ("T12/L1", "T11/T12")

CANAL_LABEL = 100
PARTIAL_VERTEBRA_OFFSET = 100  # SPIDER: 101-125 are partially visible vertebrae
DISC_LABEL_OFFSET = 200
POSTERIOR_LABEL_OFFSET = 300  # this project: 301-325 are the posterior elements of vertebra 1-25
UNIDENTIFIED_LABEL_OFFSET = 400  # this project: 400 + Structure.index, a structure of unknown vertebra / level


class Severity(str, Enum):
    """Central canal stenosis severity, in the RSNA 2024 three-class convention (ordered)."""

    NORMAL_MILD = "Normal/Mild"
    MODERATE = "Moderate"
    SEVERE = "Severe"

    @property
    def index(self) -> int:
        return SEVERITIES.index(self)

    @classmethod
    def from_index(cls, index: int) -> Severity:
        if not 0 <= int(index) < len(SEVERITIES):
            raise ValueError(f"severity index must be in 0..{len(SEVERITIES) - 1}, got {index!r}.")
        return SEVERITIES[int(index)]

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        """Accepts a Severity, its index, its value ("Normal/Mild") or a loose spelling ("normal_mild")."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, (int, np.integer)):
            return cls.from_index(int(value))
        key = str(value).strip().lower().replace("_", "/").replace(" ", "")
        for severity in SEVERITIES:
            if severity.value.lower().replace(" ", "") == key:
                return severity
        if key in ("normal", "mild"):
            return cls.NORMAL_MILD
        raise ValueError(f"unknown severity {value!r}; expected one of {[s.value for s in SEVERITIES]}.")


SEVERITIES: tuple[Severity, ...] = (Severity.NORMAL_MILD, Severity.MODERATE, Severity.SEVERE)


class Structure(str, Enum):
    """Segmentation classes used for training; index = channel. Built from on-disk labels by ``to_structure_mask``.

    The vertebra is two classes because real labels split it differently: one dataset labels vertebral bodies
    only, another the whole vertebra (body and posterior elements as one label).
    """

    BACKGROUND = "background"
    VERTEBRAL_BODY = "vertebral_body"
    POSTERIOR_ELEMENTS = "posterior_elements"
    DISC = "disc"
    CANAL = "spinal_canal"

    @property
    def index(self) -> int:
        return list(Structure).index(self)

    @classmethod
    def parse(cls, value: str | Structure) -> Structure:
        """A structure from its value ("vertebral_body") or name ("VERTEBRAL_BODY"); "canal" is the spinal canal.

        Raises:
            ValueError: for a name that is no structure.
        """
        if isinstance(value, Structure):
            return value
        key = str(value).strip().lower().replace(" ", "_").replace("-", "_")
        aliases = {"canal": cls.CANAL, "body": cls.VERTEBRAL_BODY, "posterior": cls.POSTERIOR_ELEMENTS}
        if key in aliases:
            return aliases[key]
        for structure in cls:
            if key in (structure.value, structure.name.lower()):
                return structure
        raise ValueError(f"unknown structure {value!r}; expected one of {[s.value for s in cls]}.")


class Tissue(int, Enum):
    """Tissue classes of the synthetic label map (finer than the on-disk masks; they drive image contrast)."""

    AIR = 0
    BODY = 1  # abdominal and other soft tissue
    SUBCUTANEOUS_FAT = 2
    MUSCLE = 3
    MARROW = 4
    CORTICAL_BONE = 5
    POSTERIOR_ELEMENTS = 6
    ANNULUS = 7
    NUCLEUS = 8
    EPIDURAL_FAT = 9
    LIGAMENTUM_FLAVUM = 10
    CSF = 11
    CAUDA_EQUINA = 12


@dataclass(frozen=True)
class GradingCutoffs:
    """Published cut-offs used to grade central canal stenosis from measurements at a disc level.

    Attributes:
        severe_area_mm2: dural sac area below which stenosis is severe (absolute), Bolender/Schonstrom 70-75 mm2.
        stenosis_area_mm2: dural sac area below which there is stenosis (at least moderate), 100 mm2.
        relative_area_mm2: dural sac area below which stenosis is early/relative (still Normal/Mild here), 130 mm2.
        absolute_ap_mm: canal AP diameter below which stenosis is absolute (Verbiest), 10 mm; counts as at least
            moderate because AP alone does not separate moderate from severe.
        normal_ap_mm: canal AP diameter above which the canal is normal (Verbiest), 13 mm.
    """

    severe_area_mm2: float = 75.0
    stenosis_area_mm2: float = 100.0
    relative_area_mm2: float = 130.0
    absolute_ap_mm: float = 10.0
    normal_ap_mm: float = 13.0


CUTOFFS = GradingCutoffs()


def grade_from_measurements(area_mm2: float, ap_mm: float, cutoffs: GradingCutoffs = CUTOFFS) -> Severity:
    """The rule grade of one level from its dural sac area and AP diameter.

    Severe if the area is below ``severe_area_mm2``; Moderate if the area is below ``stenosis_area_mm2`` or the AP
    diameter is below ``absolute_ap_mm``; Normal/Mild otherwise.

    Raises:
        ValueError: when a measurement is negative or not finite.
    """
    for name, value in (("area_mm2", area_mm2), ("ap_mm", ap_mm)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {value!r}.")
    if area_mm2 < cutoffs.severe_area_mm2:
        return Severity.SEVERE
    if area_mm2 < cutoffs.stenosis_area_mm2 or ap_mm < cutoffs.absolute_ap_mm:
        return Severity.MODERATE
    return Severity.NORMAL_MILD


def grade_from_sagittal_ap(ap_mm: float, cutoffs: GradingCutoffs = CUTOFFS) -> Severity:
    """The rule grade of a level from the canal AP diameter on the mid-sagittal slice alone (no axial area).

    Moderate below ``absolute_ap_mm`` (Verbiest's absolute stenosis; the AP diameter alone does not separate
    moderate from severe), Normal/Mild otherwise.

    Raises:
        ValueError: when ``ap_mm`` is negative or not finite.
    """
    if not np.isfinite(ap_mm) or ap_mm < 0:
        raise ValueError(f"ap_mm must be a finite non-negative number, got {ap_mm!r}.")
    return Severity.MODERATE if ap_mm < cutoffs.absolute_ap_mm else Severity.NORMAL_MILD


# Radiologists write a dural sac area to the nearest 5 mm2 and a diameter to the nearest 0.5 mm: finer digits are
# below what a measurement on 0.5-1 mm pixels can carry. Every text (reports, references, evidence captions) uses
# these; the numbers in report.json, the SR and the API keep the measured precision.
REPORTED_AREA_STEP_MM2 = 5.0
REPORTED_DIAMETER_STEP_MM = 0.5


def _round_to(value: float, step: float) -> float:
    if not np.isfinite(value):
        raise ValueError(f"a measurement to report must be finite, got {value!r}.")
    # floor(x + 0.5): halves round up, the way a reader rounds (Python's round() would round 72.5 to 72).
    return float(np.floor(value / step + 0.5) * step)


def format_area_mm2(area_mm2: float) -> str:
    """An area as a report writes it: to the nearest 5 mm2, no decimals (``"115 mm2"``).

    Raises:
        ValueError: when ``area_mm2`` is not finite.
    """
    return f"{_round_to(area_mm2, REPORTED_AREA_STEP_MM2):.0f} mm2"


def format_diameter_mm(diameter_mm: float) -> str:
    """A diameter as a report writes it: to the nearest 0.5 mm, one decimal (``"11.5 mm"``).

    Raises:
        ValueError: when ``diameter_mm`` is not finite.
    """
    return f"{_round_to(diameter_mm, REPORTED_DIAMETER_STEP_MM):.1f} mm"


def _check_vertebra(name: str) -> int:
    if name not in VERTEBRAE:
        raise ValueError(f"unknown vertebra {name!r}; expected one of {VERTEBRAE}.")
    return VERTEBRAE.index(name)


def vertebra_label(name: str) -> int:
    """SPIDER label value of a vertebra (S1 = 1, L5 = 2, ..., T12 = 7, T11 = 8)."""
    return _check_vertebra(name) + 1


def disc_label(upper: str, lower: str) -> int:
    """SPIDER label value of the disc between two adjacent vertebrae (L5/S1 = 201, ..., T12/L1 = 206, T11/T12 = 207)."""
    lower_index = _check_vertebra(lower)
    if _check_vertebra(upper) != lower_index + 1:
        raise ValueError(f"{upper}/{lower} are not adjacent vertebrae.")
    return DISC_LABEL_OFFSET + lower_index + 1


def parse_level(level: str) -> str:
    """Normalises a level name: "L4/L5", "l4_l5", "L4-L5" and "l4l5" all give "L4/L5".

    Raises:
        ValueError: when the text names no disc level of the phantom.
    """
    text = str(level).strip().upper().replace("_", "/").replace("-", "/").replace(" ", "")
    if "/" not in text and len(text) in (4, 5, 6):
        # "L4L5", "T12L1", "T11T12"
        split = 3 if text.startswith(("T11", "T12")) else 2
        text = f"{text[:split]}/{text[split:]}"
    if text in LEVELS or text in UNGRADED_DISCS:
        return text
    raise ValueError(f"unknown level {level!r}; expected one of {LEVELS + UNGRADED_DISCS}.")


def level_key(level: str) -> str:
    """Lower-case key of a level as used in column names: "L4/L5" -> "l4_l5" (the RSNA 2024 spelling)."""
    return parse_level(level).lower().replace("/", "_")


def disc_label_for_level(level: str) -> int:
    """On-disk label of the disc at a level: "L5/S1" -> 201, "L4/L5" -> 202, ..., "T12/L1" -> 206."""
    upper, lower = parse_level(level).split("/")
    return disc_label(upper, lower)


def level_for_disc_label(label: int) -> str:
    """Inverse of ``disc_label_for_level``.

    Raises:
        ValueError: for a label that is no disc of the phantom.
    """
    index = int(label) - DISC_LABEL_OFFSET
    if not 1 <= index < len(VERTEBRAE):
        raise ValueError(f"label {label} is no disc label "
                         f"(expected {DISC_LABEL_OFFSET + 1}..{DISC_LABEL_OFFSET + len(VERTEBRAE) - 1}).")
    return f"{VERTEBRAE[index]}/{VERTEBRAE[index - 1]}"


def posterior_label(name: str) -> int:
    """Native label value of a vertebra's posterior elements (S1 = 301, L5 = 302, ..., T11 = 308)."""
    return POSTERIOR_LABEL_OFFSET + vertebra_label(name)


def unidentified_label(structure: Structure | str) -> int:
    """Native label value of a structure whose vertebra or level is unknown: 400 + ``Structure.index``.

    Raises:
        ValueError: for the background, which needs no label.
    """
    structure = Structure.parse(structure)
    if structure is Structure.BACKGROUND:
        raise ValueError("the background has label 0, not an unidentified label.")
    return UNIDENTIFIED_LABEL_OFFSET + structure.index


def structure_of_label(label: int) -> Structure:
    """Training structure of one native on-disk label value (partial vertebrae count as vertebral bodies)."""
    label = int(label)
    if label == CANAL_LABEL:
        return Structure.CANAL
    if 1 <= label <= 25 or PARTIAL_VERTEBRA_OFFSET + 1 <= label <= PARTIAL_VERTEBRA_OFFSET + 25:
        return Structure.VERTEBRAL_BODY
    if DISC_LABEL_OFFSET + 1 <= label <= DISC_LABEL_OFFSET + 25:
        return Structure.DISC
    if POSTERIOR_LABEL_OFFSET + 1 <= label <= POSTERIOR_LABEL_OFFSET + 25:
        return Structure.POSTERIOR_ELEMENTS
    if UNIDENTIFIED_LABEL_OFFSET + 1 <= label < UNIDENTIFIED_LABEL_OFFSET + len(Structure):
        return list(Structure)[label - UNIDENTIFIED_LABEL_OFFSET]
    return Structure.BACKGROUND


def label_partition(groups: list[list[str | Structure]] | None) -> np.ndarray:
    """Which structures a label map supervises, as a partition of the structure channels.

    A dataset labels some structures (each alone: a "disc" label), some together (SPIDER's vertebra label covers
    the body and the posterior elements), and leaves the rest unlabelled: those are unknown, never background, so
    they share one class with the background (the marginal of Shi et al., MedIA 2021). The partition maps each
    structure channel to the lowest channel of its group; a structure in no group maps to 0 (background).

    Args:
        groups: one list of structure names per label, e.g. ``[["vertebral_body"]]`` (bodies only) or
            ``[["vertebral_body", "posterior_elements"], ["disc"], ["spinal_canal"]]`` (SPIDER). None: every
            structure is labelled alone (fully labelled, the phantoms).

    Returns:
        (C,) int64 with ``C = len(Structure)``: the identity for a fully labelled map.

    Raises:
        ValueError: when a group is empty, names the background or an unknown structure, or two groups share one.
    """
    partition = np.zeros(len(Structure), dtype=np.int64)
    if groups is None:
        return np.arange(len(Structure), dtype=np.int64)
    seen: set[Structure] = set()
    for group in groups:
        members = sorted({Structure.parse(name) for name in group}, key=lambda s: s.index)
        if not members:
            raise ValueError("a label group must name at least one structure.")
        if Structure.BACKGROUND in members:
            raise ValueError("the background is never a label group (it is what no label covers).")
        if seen.intersection(members):
            raise ValueError(f"structures {sorted(s.value for s in seen.intersection(members))} "
                             "are in two label groups.")
        seen.update(members)
        for member in members:
            partition[member.index] = members[0].index
    return partition


def partition_groups(partition: np.ndarray) -> list[list[Structure]]:
    """The groups of a partition (``label_partition``), background group first: ``[[bg, unlabelled...], ...]``."""
    partition = np.asarray(partition).astype(int)
    structures = list(Structure)
    return [[structures[c] for c in range(len(partition)) if partition[c] == r]
            for r in sorted(set(partition.tolist()))]


def to_structure_mask(labels: np.ndarray) -> np.ndarray:
    """Maps a native on-disk label map to structure indices (``Structure.index``), any shape, returns uint8."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        rounded = np.rint(labels)
        if not np.allclose(labels, rounded):
            raise ValueError("a label map must hold integer values.")
        labels = rounded.astype(np.int32)
    out = np.zeros(labels.shape, dtype=np.uint8)
    out[(labels >= 1) & (labels <= 25)] = Structure.VERTEBRAL_BODY.index
    out[(labels >= PARTIAL_VERTEBRA_OFFSET + 1)
        & (labels <= PARTIAL_VERTEBRA_OFFSET + 25)] = Structure.VERTEBRAL_BODY.index
    out[(labels >= DISC_LABEL_OFFSET + 1) & (labels <= DISC_LABEL_OFFSET + 25)] = Structure.DISC.index
    out[(labels >= POSTERIOR_LABEL_OFFSET + 1)
        & (labels <= POSTERIOR_LABEL_OFFSET + 25)] = Structure.POSTERIOR_ELEMENTS.index
    for structure in list(Structure)[1:]:
        out[labels == UNIDENTIFIED_LABEL_OFFSET + structure.index] = structure.index
    out[labels == CANAL_LABEL] = Structure.CANAL.index
    return out


# RSNA 2024 central canal stenosis class balance (1,975 training studies), from clinical_grading.md:
# level -> (Normal/Mild, Moderate, Severe) fractions.
RSNA_CLASS_BALANCE: dict[str, tuple[float, float, float]] = {
    "L1/L2": (0.956, 0.034, 0.011),
    "L2/L3": (0.897, 0.076, 0.027),
    "L3/L4": (0.822, 0.116, 0.062),
    "L4/L5": (0.751, 0.120, 0.129),
    "L5/S1": (0.965, 0.026, 0.010),
}

# RSNA 2024 sample weights of the severities in its weighted log loss (Normal/Mild, Moderate, Severe).
RSNA_SEVERITY_WEIGHTS: tuple[float, float, float] = (1.0, 2.0, 4.0)

# The RSNA 2024 condition name of central canal stenosis (train.csv column prefix, coordinates "condition").
RSNA_CONDITION = "Spinal Canal Stenosis"


def rsna_column(level: str) -> str:
    """RSNA 2024 ``train.csv`` column of central canal stenosis at a level: "spinal_canal_stenosis_l4_l5"."""
    return f"{RSNA_CONDITION.lower().replace(' ', '_')}_{level_key(level)}"
