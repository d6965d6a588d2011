"""Clinical-protocol views of a phantom: a sagittal T2 series and an angled axial T2 stack through each disc.

Each view is a voxel grid in world space (a ``Volume`` affine); the phantom is evaluated at the voxel centres for
the mask and at several points across each slice's thickness for the image (partial volume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lss.anatomy import DISC_LABEL_OFFSET, VERTEBRAE, Tissue
from lss.data.synth.phantom import DISCS, SpinePhantom
from lss.data.synth.render import Contrast, finish_image, tissue_intensity
from lss.data.volume import Volume, affine_from_axes

__all__ = ["ViewGrid", "sagittal_grid", "sample_sagittal_extent", "axial_grid", "render_view"]


@dataclass(frozen=True)
class ViewGrid:
    """A voxel grid: ``shape`` (I, J, K), world ``origin`` of voxel 0, unit ``axes`` (3, 3) and ``spacing`` (3,)."""

    shape: tuple[int, int, int]
    origin: np.ndarray
    axes: np.ndarray
    spacing: np.ndarray
    slice_thickness: float

    @property
    def affine(self) -> np.ndarray:
        return affine_from_axes(self.origin, self.axes, self.spacing)


def _rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _centred_grid(centre, axes, spacing, shape, thickness) -> ViewGrid:
    axes = np.asarray(axes, dtype=float)
    spacing = np.asarray(spacing, dtype=float)
    half = (np.asarray(shape) - 1) / 2.0
    origin = np.asarray(centre, dtype=float) - (half * spacing) @ axes
    return ViewGrid(tuple(int(n) for n in shape), origin, axes, spacing, float(thickness))


def _vertebra_span_w(phantom: SpinePhantom, name: str) -> tuple[float, float]:
    """Arc length ``w`` of a vertebral body's lower and upper endplate (S1 and T11, open, get their nominal height)."""
    k = VERTEBRAE.index(name)
    bounds = phantom.disc_bounds
    low = float(bounds[k - 1, 1]) if k > 0 else -float(phantom.vertebra_height[0])
    high = float(bounds[k, 0]) if k < len(bounds) else low + float(phantom.vertebra_height[k])
    return low, high


def sample_sagittal_extent(
    phantom: SpinePhantom,
    rng: np.random.Generator,
    sacrum_mm: tuple[float, float] = (10.0, 50.0),
    max_extent_mm: float = 260.0,
) -> tuple[float, float]:
    """A random superior-inferior field of view along the spine, as ``w`` (arc length, mm) of its two edges.

    The inferior edge lies ``sacrum_mm`` below the top endplate of S1 (inside the sacrum); the superior edge anywhere
    from the middle of the L2 body to the top of T11 (the phantom's top vertebra), so that L1/L2 and the discs above
    are in the field of view or not; the extent stays within ``max_extent_mm``.

    Returns:
        (w_inferior, w_superior).

    Raises:
        ValueError: for a negative depth or an extent too short to reach L2 from the sacrum.
    """
    if not 0.0 <= sacrum_mm[0] <= sacrum_mm[1]:
        raise ValueError(f"sacrum_mm must be 0 <= min <= max, got {sacrum_mm!r}.")
    bottom = -float(rng.uniform(*sacrum_mm))
    l2_low, l2_high = _vertebra_span_w(phantom, "L2")
    lowest_top = (l2_low + l2_high) / 2.0
    highest_top = min(_vertebra_span_w(phantom, "T11")[1], bottom + float(max_extent_mm))
    if highest_top < lowest_top:
        raise ValueError(f"a field of view of at most {max_extent_mm} mm can not reach L2 from {-bottom:.0f} mm "
                         "inside the sacrum.")
    return bottom, float(rng.uniform(lowest_top, highest_top))


def sagittal_grid(
    phantom: SpinePhantom,
    inplane_mm: float,
    slice_mm: float,
    fov_mm: tuple[float, float],
    lateral_coverage_mm: float,
    yaw_deg: float = 0.0,
    extent_w: tuple[float, float] | None = None,
) -> ViewGrid:
    """A sagittal series as scanners write it: rows run anterior -> posterior, columns superior -> inferior,
    slices left -> right; centred on the lumbar spine, optionally rotated (yaw) about the superior axis.

    Args:
        inplane_mm: pixel size.
        slice_mm: slice thickness (= slice spacing, no gap).
        fov_mm: (superior-inferior, anterior-posterior) field of view.
        lateral_coverage_mm: left-right extent of the slice stack.
        extent_w: (inferior, superior) edges of the field of view as arc lengths ``w`` along the spine
            (``sample_sagittal_extent``), taken at the middle of the vertebral bodies' depth; the superior-inferior
            field of view spans them and ``fov_mm[0]`` is ignored. None: ``fov_mm[0]`` centred on the lumbar spine.
    """
    if extent_w is None:
        top_l1 = float(phantom.disc_bounds[4, 1] + phantom.vertebra_height[5])
        centre, _, _, _ = phantom.frame_at(w=top_l1 / 2, v=12.0)
    else:
        low_w, high_w = (float(w) for w in extent_w)
        if not high_w > low_w:
            raise ValueError(f"extent_w must be (inferior, superior) with inferior < superior, got {extent_w!r}.")
        edges = [phantom.frame_at(w=w, v=float(np.interp(w, phantom.disc_mid, phantom.body_depth)) / 2)[0]
                 for w in (low_w, high_w)]
        centre, _, _, _ = phantom.frame_at(w=(low_w + high_w) / 2, v=12.0)
        centre = np.array([centre[0], centre[1], (edges[0][2] + edges[1][2]) / 2])
        fov_mm = (float(edges[1][2] - edges[0][2]), fov_mm[1])
    rotation = _rotation_z(np.deg2rad(yaw_deg))
    axes = np.stack([
        rotation @ np.array([0.0, -1.0, 0.0]),  # i: towards posterior
        np.array([0.0, 0.0, -1.0]),  # j: towards inferior
        rotation @ np.array([1.0, 0.0, 0.0]),  # k: towards the patient's right (k = i x j, as DICOM orders slices)
    ])
    shape = (
        int(round(fov_mm[1] / inplane_mm)),
        int(round(fov_mm[0] / inplane_mm)),
        max(int(round(lateral_coverage_mm / slice_mm)), 1),
    )
    return _centred_grid(centre, axes, (inplane_mm, inplane_mm, slice_mm), shape, slice_mm)


def axial_grid(
    phantom: SpinePhantom, level: str, inplane_mm: float, slice_mm: float, fov_mm: float, slices: int
) -> ViewGrid:
    """An axial stack angled along the disc of ``level``: rows run right -> left, columns anterior -> posterior,
    slices inferior -> superior along the spine; the centre slice lies on the disc mid-plane when ``slices`` is odd.
    """
    j = DISCS.index(level)
    _, lateral, radial, tangent = phantom.frame_at(w=float(phantom.disc_mid[j]))
    centre, _, _, _ = phantom.frame_at(w=float(phantom.disc_mid[j]), v=5.0)
    axes = np.stack([-lateral, -radial, tangent])
    n = int(round(fov_mm / inplane_mm))
    return _centred_grid(centre, axes, (inplane_mm, inplane_mm, slice_mm), (n, n, slices), slice_mm)


def render_view(
    phantom: SpinePhantom,
    grid: ViewGrid,
    contrast: Contrast,
    rng: np.random.Generator,
    through_slice_samples: int = 3,
    meta: dict | None = None,
) -> tuple[Volume, Volume]:
    """Renders an image and its on-disk label mask on ``grid``.

    Returns:
        (image, mask): float32 image and int16 native label mask (``lss.anatomy``), both (I, J, K) with the grid's
            affine.
    """
    samples = max(int(through_slice_samples), 1)
    if samples % 2 == 0:
        samples += 1  # an odd count puts one sample on the slice centre, where the mask is read
    offsets = ((np.arange(samples) + 0.5) / samples - 0.5) * grid.slice_thickness
    ni, nj, nk = grid.shape
    ii, jj = np.meshgrid(np.arange(ni), np.arange(nj), indexing="ij")
    plane = ii[..., None] * grid.spacing[0] * grid.axes[0] + jj[..., None] * grid.spacing[1] * grid.axes[1]
    clean = np.zeros(grid.shape, dtype=np.float32)
    mask = np.zeros(grid.shape, dtype=np.int16)
    centres = np.zeros((*grid.shape, 3), dtype=np.float32)
    for k in range(nk):
        slice_origin = grid.origin + k * grid.spacing[2] * grid.axes[2]
        centre_points = plane + slice_origin
        centres[:, :, k] = centre_points
        points = centre_points[None] + offsets[:, None, None, None] * grid.axes[2]
        tissue, label = phantom.labels_world(points)
        disc_index = np.clip(label - DISC_LABEL_OFFSET - 1, 0, len(DISCS) - 1)
        grade = np.where(tissue == Tissue.NUCLEUS, phantom.pfirrmann[disc_index], 1)
        clean[:, :, k] = tissue_intensity(tissue, grade, contrast, rng).mean(axis=0)
        mask[:, :, k] = label[samples // 2]
    image = finish_image(clean, centres, contrast, rng)
    meta = dict(meta or {})
    return Volume(image, grid.affine, meta), Volume(mask, grid.affine, {**meta, "kind": "mask"})
