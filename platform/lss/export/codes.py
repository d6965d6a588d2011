"""The coded concepts of the DICOM outputs: anatomy of each segment, measurement names and units, severities.

Standard codes come from pydicom's dictionary (``pydicom.sr.codedict.codes``), looked up by name, never typed in:

- segment categories: SCT 91723000 "Anatomical Structure" (DICOM CID 7150);
- posterior elements (pedicles, laminae, articular and spinous processes): SCT 40265002 "Arch of vertebra" (the
  vertebral arch and the processes it bears); spinal canal (the dural sac the model segments): SCT 61853006
  "Vertebral canal";
- level of a measurement: SCT "Level of L1/L2 intervertebral disc" ... "Level of L5/S1 intervertebral disc"
  (CID 1003, the finding site of each level's measurement group);
- measurements: SCT 42798000 "Area" (the dural sac cross-sectional area, UCUM ``mm2``), SCT 81827009 "Diameter"
  (its antero-posterior diameter: the longest run of dural sac pixels along the antero-posterior axis, UCUM ``mm``);
- severity: SCT 246112005 "Severity" with SCT 6736007 "Moderate" and SCT 24484000 "Severe".

Three concepts have no code in that dictionary, so they get codes of the project's own coding scheme ``99LSS``
(DICOM reserves designators starting with "99" for local schemes; every output declares it in its
CodingSchemeIdentificationSequence):

- ``99LSS VB`` "Vertebral body": the model's body class covers every vertebral body; pydicom's SCT dictionary has
  "Vertebra" (body and posterior elements together) and per-vertebra codes, none for the body alone.
- ``99LSS IVD`` "Intervertebral disc": the model's disc class covers every disc; pydicom's SCT dictionary only has
  per-level disc codes (e.g. "L4/L5 disc") and none for the structure in general.
- ``99LSS NORMAL_MILD`` "Normal/Mild": the RSNA 2024 class that merges normal and mild stenosis; SNOMED CT has
  "Normal" and "Mild" but no code for the merged class.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from lss.anatomy import LEVELS, Severity, Structure, parse_level

__all__ = [
    "LSS_SCHEME",
    "LSS_CODING_SCHEME",
    "ANATOMICAL_STRUCTURE",
    "VERTEBRAL_BODY",
    "INTERVERTEBRAL_DISC",
    "NORMAL_MILD",
    "SEGMENT_TYPES",
    "SEGMENT_LABELS",
    "SEVERITY",
    "SEVERITY_CODES",
    "AREA",
    "AP_DIAMETER",
    "MM",
    "MM2",
    "level_site",
    "severity_code",
    "severity_of_code",
]

LSS_SCHEME = "99LSS"
LSS_CODING_SCHEME = CodingSchemeIdentificationItem(
    designator=LSS_SCHEME,
    name="LSS local codes",
    responsible_organization="lss-platform (lss.export.codes)",
)

ANATOMICAL_STRUCTURE = codes.SCT.AnatomicalStructure
VERTEBRAL_BODY = Code("VB", LSS_SCHEME, "Vertebral body")
INTERVERTEBRAL_DISC = Code("IVD", LSS_SCHEME, "Intervertebral disc")
NORMAL_MILD = Code("NORMAL_MILD", LSS_SCHEME, "Normal/Mild")

# One segment per predicted structure; the segment number is the structure's index in the predicted masks.
SEGMENT_TYPES: dict[Structure, Code] = {
    Structure.VERTEBRAL_BODY: VERTEBRAL_BODY,
    Structure.POSTERIOR_ELEMENTS: codes.SCT.ArchOfVertebra,
    Structure.DISC: INTERVERTEBRAL_DISC,
    Structure.CANAL: codes.SCT.VertebralCanal,
}
SEGMENT_LABELS: dict[Structure, str] = {
    Structure.VERTEBRAL_BODY: "Vertebral bodies",
    Structure.POSTERIOR_ELEMENTS: "Posterior elements",
    Structure.DISC: "Intervertebral discs",
    Structure.CANAL: "Spinal canal (dural sac)",
}

SEVERITY = codes.SCT.Severity
SEVERITY_CODES: dict[Severity, Code] = {
    Severity.NORMAL_MILD: NORMAL_MILD,
    Severity.MODERATE: codes.SCT.Moderate,
    Severity.SEVERE: codes.SCT.Severe,
}

AREA = codes.SCT.Area
AP_DIAMETER = codes.SCT.Diameter
MM = codes.UCUM.Millimeter
MM2 = codes.UCUM.SquareMillimeter

_LEVEL_SITES: dict[str, Code] = {
    level: getattr(codes.SCT, f"LevelOf{level.replace('/', '')}IntervertebralDisc") for level in LEVELS
}


def level_site(level: str) -> Code:
    """The SCT code of a disc level ("L4/L5" -> "Level of L4/L5 intervertebral disc").

    Raises:
        ValueError: for a level that is not one of ``lss.anatomy.LEVELS``.
    """
    key = parse_level(level)
    if key not in _LEVEL_SITES:
        raise ValueError(f"no code for level {level!r}; expected one of {LEVELS}.")
    return _LEVEL_SITES[key]


def severity_code(severity: Severity | str) -> Code:
    """The code of a severity (``Severity`` or its value)."""
    return SEVERITY_CODES[Severity.parse(severity)]


def severity_of_code(code: Code | hd.sr.CodedConcept) -> Severity:
    """The severity a code stands for (inverse of ``severity_code``).

    Raises:
        ValueError: for a code that is none of ``SEVERITY_CODES``.
    """
    for severity, known in SEVERITY_CODES.items():
        if (code.value, code.scheme_designator) == (known.value, known.scheme_designator):
            return severity
    raise ValueError(f"code {code.value!r} ({code.scheme_designator}) is not a severity code of the outputs.")
