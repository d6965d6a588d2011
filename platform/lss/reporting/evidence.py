"""Evidence images: what a reader looks at to check each sentence of a report.

Per study (PNG, matplotlib's Agg backend, no display needed):

- ``sagittal``: the mid-sagittal slice with the predicted vertebral bodies, posterior elements, discs and canal,
  each level's name at its disc and the canal AP line measured there;
- ``axial_<level>``: the level's axial slice with the dural sac contour and its area / AP diameter;
- ``attention_<level>``: the level prompt's attention over the sagittal slice (the Spatial Patch Cross-Attention
  map that the grade read);
- ``montage``: all of them on one page;
- ``sagittal_slice_<k>`` (on request, e.g. by the viewer's slider): slice ``k`` of the sagittal crop; the mid-sagittal
  one (the slice the model segments) carries the masks and level names, the others show the image alone.

Displayed in radiological convention: sagittal with anterior on the left and superior up; axial with anterior up
and the patient's right on the viewer's left. Axes are in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lss.anatomy import LEVELS, Structure, format_area_mm2, format_diameter_mm
from lss.colours import SEVERITY_COLOURS, STRUCTURE_COLOURS, UNSTATED_COLOUR
from lss.reporting.findings import StudyFindings

__all__ = ["image_id", "evidence_ids", "all_evidence_ids", "sagittal_slice_ids", "link_evidence",
           "render_evidence_png", "write_evidence_images"]

SLICE_PREFIX = "sagittal_slice_"


def _colour(finding) -> str:
    return UNSTATED_COLOUR if finding.stated_severity is None else SEVERITY_COLOURS[finding.stated_severity.value]


def _label(finding) -> str:
    """What an image says about a level: its stated grade, or why there is none."""
    if finding.stated_severity is not None:
        return finding.stated_severity.value
    return "not assessable" if not finding.assessable else "grade withheld"


def image_id(kind: str, level: str | None = None) -> str:
    """The id (and PNG stem) of an evidence image, e.g. ``axial_L4-L5``."""
    return kind if level is None else f"{kind}_{level.replace('/', '-')}"


def _overlay(mask: np.ndarray) -> np.ndarray:
    """(H, W) structure indices -> (H, W, 4) RGBA."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.float32)
    for index, colour in STRUCTURE_COLOURS.items():
        rgba[mask == index] = (*colour, 0.35)
    return rgba


def _show(ax, image: np.ndarray, spacing: Sequence[float], flip_x: bool = True, **kwargs):
    """Shows an (A, B) array with A along x and B along y (origin lower), in mm."""
    extent = (0, image.shape[0] * spacing[0], 0, image.shape[1] * spacing[1])
    ax.imshow(np.swapaxes(image, 0, 1), origin="lower", extent=extent, interpolation="nearest", **kwargs)
    if flip_x and not ax.xaxis_inverted():
        ax.invert_xaxis()
    return extent


def sagittal_slice_ids(prediction) -> list[str]:
    """The ids of the sagittal slice images of a prediction, in slice order (none without its ``sagittal_stack``)."""
    stack = getattr(prediction, "sagittal_stack", None)
    return [] if stack is None else [f"{SLICE_PREFIX}{k:02d}" for k in range(stack.shape[0])]


def _sagittal_slice(ax, prediction, findings: StudyFindings, k: int) -> None:
    if k == prediction.sagittal_slice:
        _sagittal(ax, prediction, findings)
        return
    sy, sz = prediction.sagittal_spacing
    _show(ax, prediction.sagittal_stack[k] / 255.0, (sy, sz), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{findings.study_id}: sagittal, slice {k}\n(no masks: the model segments slice "
                 f"{prediction.sagittal_slice})", fontsize=7)
    ax.set_xlabel("anterior  <-  mm  ->  posterior", fontsize=6)
    ax.tick_params(labelsize=5)


def _sagittal(ax, prediction, findings: StudyFindings) -> None:
    sy, sz = prediction.sagittal_spacing
    _show(ax, prediction.sagittal_image, (sy, sz), cmap="gray", vmin=0, vmax=1)
    _show(ax, _overlay(prediction.sagittal_mask), (sy, sz))
    for finding in findings.levels:
        m = finding.measurements
        if m.disc_centre_px is None:
            continue
        y, z = m.disc_centre_px
        colour = _colour(finding)
        ax.text((y + 0.5) * sy + 14, (z + 0.5) * sz, finding.level, color=colour, fontsize=7, ha="right",
                va="center", fontweight="bold")
        if m.sagittal_ap_line_px is not None:
            (y0, z0), (y1, z1) = m.sagittal_ap_line_px
            ax.plot([(y0 + 0.5) * sy, (y1 + 0.5) * sy], [(z0 + 0.5) * sz, (z1 + 0.5) * sz], color="white", lw=1)
    ax.set_title(f"{findings.study_id}: sagittal, slice {prediction.sagittal_slice}", fontsize=8)
    ax.set_xlabel("anterior  <-  mm  ->  posterior", fontsize=6)
    ax.tick_params(labelsize=5)


def _axial(ax, prediction, findings: StudyFindings, li: int) -> None:
    finding = findings.levels[li]
    spacing = prediction.axial_spacing[li]
    if not prediction.axial_present[li]:
        ax.text(0.5, 0.5, f"{finding.level}\nno axial image", ha="center", va="center", fontsize=8,
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    _show(ax, prediction.axial_images[li], spacing, cmap="gray", vmin=0, vmax=1)
    sac = prediction.axial_masks[li] == Structure.CANAL.index
    if sac.any():
        h, w = sac.shape
        xs, ys = (np.arange(h) + 0.5) * spacing[0], (np.arange(w) + 0.5) * spacing[1]
        ax.contour(xs, ys, sac.T.astype(float), levels=[0.5], colors=[_colour(finding)],
                   linewidths=1)
    m = finding.measurements
    measured = (f"{format_area_mm2(m.area_mm2)}, AP {format_diameter_mm(m.ap_mm)}"
                if m.area_mm2 is not None and m.ap_mm is not None
                else "sac not segmented")
    where = f" (slice {m.axial_slice['slice']})" if m.axial_slice and m.axial_slice.get("slice") is not None else ""
    ax.set_title(f"{finding.level}: {_label(finding)}\n{measured}\n{where.strip()}", fontsize=6)
    ax.tick_params(labelsize=5)


def _attention(ax, prediction, findings: StudyFindings, li: int) -> None:
    finding = findings.levels[li]
    sy, sz = prediction.sagittal_spacing
    _show(ax, prediction.sagittal_image, (sy, sz), cmap="gray", vmin=0, vmax=1)
    heat = prediction.level_attention[li]
    heat = heat / max(float(heat.max()), 1e-12)
    _show(ax, heat, (sy, sz), cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    ax.set_title(f'prompt "{finding.level}": attention', fontsize=7)
    ax.tick_params(labelsize=5)


def evidence_ids(level: str) -> list[str]:
    """The ids of the evidence images that show one level's finding."""
    return [image_id("sagittal"), image_id("axial", level), image_id("attention", level), image_id("montage")]


def all_evidence_ids() -> list[str]:
    """Every evidence image id of a study."""
    return ([image_id("sagittal"), image_id("montage")] + [image_id("axial", lv) for lv in LEVELS]
            + [image_id("attention", lv) for lv in LEVELS])


def link_evidence(findings: StudyFindings) -> None:
    """Records in each finding the ids of the images that show it (whether or not they are rendered yet)."""
    for finding in findings.levels:
        finding.evidence = evidence_ids(finding.level)


def _figure(key: str, prediction, findings: StudyFindings):
    # Figure objects, not pyplot: no global state, so that a server can render several images in threads at once.
    from matplotlib.figure import Figure

    if key == image_id("sagittal"):
        figure = Figure(figsize=(3.2, 4.2))
        ax = figure.subplots()
        _sagittal(ax, prediction, findings)
        return figure
    if key in sagittal_slice_ids(prediction):
        figure = Figure(figsize=(3.2, 4.2))
        _sagittal_slice(figure.subplots(), prediction, findings, int(key[len(SLICE_PREFIX):]))
        return figure
    if key == image_id("montage"):
        n = len(LEVELS)
        figure = Figure(figsize=(2.0 * (n + 1), 6.4))
        grid = figure.add_gridspec(2, n + 1)
        _sagittal(figure.add_subplot(grid[:, 0]), prediction, findings)
        for li in range(n):
            _axial(figure.add_subplot(grid[0, li + 1]), prediction, findings, li)
            _attention(figure.add_subplot(grid[1, li + 1]), prediction, findings, li)
        figure.suptitle(f"{findings.study_id}: evidence (masks, dural sac, level-prompt attention)", fontsize=9)
        return figure
    for li, level in enumerate(LEVELS):
        if key == image_id("axial", level):
            figure = Figure(figsize=(2.6, 2.8))
            ax = figure.subplots()
            _axial(ax, prediction, findings, li)
            return figure
        if key == image_id("attention", level):
            figure = Figure(figsize=(2.6, 3.4))
            ax = figure.subplots()
            _attention(ax, prediction, findings, li)
            return figure
    raise KeyError(f"unknown evidence image {key!r}; expected one of {all_evidence_ids()} or "
                   f"{SLICE_PREFIX}<k> for a slice of the sagittal crop.")


def render_evidence_png(prediction, findings: StudyFindings, key: str, dpi: int = 110) -> bytes:
    """One evidence image as PNG bytes.

    Raises:
        KeyError: for an id that is not one of ``all_evidence_ids()``.
    """
    import io

    figure = _figure(key, prediction, findings)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def write_evidence_images(prediction, findings: StudyFindings, out_dir: str | Path, dpi: int = 110) -> dict[str, str]:
    """Writes every evidence PNG of one study and records their ids in the findings.

    Args:
        prediction: the study's ``lss.inference.StudyPrediction``.
        findings: its ``StudyFindings``; each level's ``evidence`` list gets the ids of the images that show it.
        out_dir: folder for the PNGs (created).
        dpi: resolution.

    Returns:
        image id -> file path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for key in all_evidence_ids():
        path = out_dir / f"{key}.png"
        path.write_bytes(render_evidence_png(prediction, findings, key, dpi))
        written[key] = str(path)
    link_evidence(findings)
    return written
