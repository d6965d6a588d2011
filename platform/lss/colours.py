"""The display colours of the project, one table for every picture: the structure overlays of the evidence images
(``lss.reporting.evidence``), the recommended display colours of the DICOM SEG segments (``lss.export.seg``), the
structure lines of the tuning plots (``lss.tuning.report``) and the grade colours of the evidence images.

The web viewer (``lss/serve/static/viewer.css``) keeps its own, darker grade colours for white text on a badge.
"""

from __future__ import annotations

from lss.anatomy import Severity, Structure

__all__ = ["STRUCTURE_COLOURS", "BACKGROUND_COLOUR", "SEVERITY_COLOURS", "UNSTATED_COLOUR", "rgb255"]

# RGB in [0, 1] per foreground structure index (``Structure.index``).
STRUCTURE_COLOURS: dict[int, tuple[float, float, float]] = {
    Structure.VERTEBRAL_BODY.index: (0.95, 0.85, 0.25),
    Structure.POSTERIOR_ELEMENTS.index: (0.75, 0.4, 1.0),
    Structure.DISC.index: (0.25, 0.65, 1.0),
    Structure.CANAL.index: (1.0, 0.3, 0.3),
}
# Background where a plot needs a colour for it (it is never overlaid).
BACKGROUND_COLOUR: tuple[float, float, float] = (0.5, 0.5, 0.5)

# Per stated grade (``Severity.value``), as matplotlib colour strings.
SEVERITY_COLOURS: dict[str, str] = {
    Severity.NORMAL_MILD.value: "#7CFC00",
    Severity.MODERATE.value: "#FFA500",
    Severity.SEVERE.value: "#FF3030",
}
UNSTATED_COLOUR = "#B0B0B0"  # not assessable / withheld: no grade, so no grade colour


def rgb255(colour: tuple[float, float, float]) -> tuple[int, int, int]:
    """An RGB colour in [0, 1] as integers 0-255 (DICOM's RecommendedDisplayRGBValue), rounded to nearest.

    Raises:
        ValueError: for anything but three channels in [0, 1].
    """
    if len(colour) != 3 or not all(0.0 <= float(c) <= 1.0 for c in colour):
        raise ValueError(f"colour must be three channels in [0, 1], got {tuple(colour)}.")
    return tuple(int(float(c) * 255 + 0.5) for c in colour)  # type: ignore[return-value]
