"""Scans that hold no lumbar spine to diagnose, built on the fly as real NIfTI files (scanner-like int16 storage and
affines, so the readers infer the intended view from the geometry alone, as they would for a real upload).

Each builder returns a ``Volume`` whose ``meta["intended_view"]`` is the plane a reader must infer. The volumes are
drawn in a centred RAS grid (``array[x, y, z]``, mm) and stored the way scanners store the plane (``stored``).

=================  ======================================================================  ============
case               what                                                                     stored as
=================  ======================================================================  ============
head               skull shell + scalp, brain, lateral ventricles, cerebellum               sagittal
knee               femur and tibia (cortex + marrow), joint space with fluid, patella,      sagittal
                   muscle and subcutaneous fat
blank              all zeros                                                                sagittal
noise              Rician noise, no structure                                               sagittal
axial_only         lumbar-like axial cross-sections (body, vertebral body, canal)           axial
coronal_only       a coronal lumbar spine (bodies and discs in a column, psoas)             coronal
single_slice       one sagittal slice of a lumbar-like column (bodies, discs, canal)        sagittal
=================  ======================================================================  ============
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lss.data.io import write_nifti
from lss.data.volume import Volume, affine_from_axes

__all__ = ["BadStudy", "BAD_STUDIES", "NOT_A_SPINE", "head_volume", "knee_volume", "blank_volume", "noise_volume",
           "axial_only_volume", "coronal_only_volume", "single_slice_volume", "stored", "write_study", "study_bytes"]

# Stored axes per plane: (world axis, sign) for voxel axes i, j, k (world axes 0 = x R, 1 = y A, 2 = z S).
SAGITTAL = ((1, -1), (2, -1), (0, 1))  # i posterior, j inferior, k left -> right: the slice axis is k
AXIAL = ((0, -1), (1, -1), (2, 1))  # DICOM axial in RAS: i towards the left, j posterior, k superior
CORONAL = ((0, -1), (2, -1), (1, 1))  # i towards the left, j inferior, k anterior


def grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Centred world coordinates (mm) of a RAS-ordered ``(X, Y, Z)`` grid: three broadcastable arrays."""
    return tuple(((np.arange(n) - (n - 1) / 2.0) * s).reshape([-1 if a == b else 1 for b in range(3)])
                 for a, (n, s) in enumerate(zip(shape, spacing, strict=True)))


def stored(array: np.ndarray, spacing: tuple[float, float, float], axes: tuple[tuple[int, int], ...],
           centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0), intended_view: str = "") -> Volume:
    """A RAS-ordered array stored with other voxel axes, as a scanner would write it.

    Args:
        array: (X, Y, Z) values on the centred grid of ``grid``.
        spacing: (3,) voxel size along x, y, z, mm.
        axes: for voxel axes i, j, k: (world axis, sign), e.g. ``SAGITTAL``.
        centre_mm: world position of the grid centre.
        intended_view: the plane the readers must infer (kept in ``meta``).

    Returns:
        A ``Volume`` of int16 values whose affine maps the stored voxels back onto the same world positions.
    """
    order = [a for a, _ in axes]
    if sorted(order) != [0, 1, 2]:
        raise ValueError(f"axes must use each world axis once, got {axes!r}.")
    flipped = array
    for a, sign in axes:
        if sign < 0:
            flipped = np.flip(flipped, axis=a)
    out = np.ascontiguousarray(np.transpose(flipped, order))
    shape = array.shape
    first = np.array([((n - 1) / 2.0) * s if any(a == w and sign < 0 for a, sign in axes) else -((n - 1) / 2.0) * s
                      for w, (n, s) in enumerate(zip(shape, spacing, strict=True))])
    directions = np.zeros((3, 3))
    for row, (a, sign) in enumerate(axes):
        directions[row, a] = float(sign)
    affine = affine_from_axes(first + np.asarray(centre_mm, dtype=float), directions,
                              np.asarray([spacing[a] for a in order], dtype=float))
    values = np.clip(np.round(out), -32768, 32767).astype(np.int16)
    return Volume(values, affine, {"intended_view": intended_view})


def _ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    return (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2) <= 1.0


def _texture(shape, seed: int, sigma: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sigma, shape)


# ------------------------------------------------------------------------------------------------------------ builders
def head_volume(seed: int = 0) -> Volume:
    """A T2-like sagittal head: scalp (fat), dark skull shell, CSF rim, brain, bright ventricles, cerebellum.

    Returns:
        (I, J, K) = (AP 220, SI 240, LR 24) voxels at (1.0, 1.0, 5.5) mm, stored sagittal.
    """
    shape, spacing = (24, 220, 240), (5.5, 1.0, 1.0)
    x, y, z = grid(shape, spacing)
    head = (0.0, 0.0, 10.0)
    image = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape))
    image[_ellipsoid(x, y, z, head, (74, 96, 108))] = 650.0  # scalp fat
    image[_ellipsoid(x, y, z, head, (68, 90, 102))] = 60.0  # skull: dark cortical bone
    image[_ellipsoid(x, y, z, head, (62, 84, 96))] = 1100.0  # CSF around the brain
    image[_ellipsoid(x, y, z, head, (59, 81, 93))] = 420.0  # brain
    cerebellum = _ellipsoid(x, y, z, (0.0, -48.0, -52.0), (48, 30, 24))
    image[cerebellum] = 470.0
    for side in (-14.0, 14.0):  # lateral ventricles
        image[_ellipsoid(x, y, z, (side, 0.0, 22.0), (6, 32, 9))] = 1150.0
    image[_ellipsoid(x, y, z, (0.0, -8.0, -60.0), (9, 10, 40)) & (image > 0)] = 380.0  # brainstem
    image = np.where(image > 0, image + _texture(image.shape, seed, 18.0), np.abs(_texture(image.shape, seed + 1, 6.0)))
    return stored(image, spacing, SAGITTAL, intended_view="sagittal")


def knee_volume(seed: int = 1) -> Volume:
    """A T2-like sagittal knee: femur above, tibia below (dark cortex, fatty marrow), a joint space with cartilage
    and fluid, the patella in front, muscle and subcutaneous fat around.

    Returns:
        (I, J, K) = (AP 256, SI 256, LR 28) voxels at (0.6, 0.6, 3.5) mm, stored sagittal.
    """
    shape, spacing = (28, 256, 256), (3.5, 0.6, 0.6)
    x, y, z = grid(shape, spacing)
    image = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape))
    limb = ((x / 52.0) ** 2 + (y / 58.0) ** 2 <= 1.0) & (np.abs(z) < 80)
    image[limb] = 850.0  # subcutaneous fat
    image[((x / 46.0) ** 2 + (y / 52.0) ** 2 <= 1.0) & limb] = 320.0  # muscle
    gap = 2.5  # half the joint space, mm
    femur_shaft = ((x / 15.0) ** 2 + ((y + 4.0) / 15.0) ** 2 <= 1.0) & (z > 20.0)
    condyles = _ellipsoid(x, y, z, (0.0, -6.0, 20.0 + gap), (40, 30, 20)) & (z > gap)
    tibia_plateau = _ellipsoid(x, y, z, (0.0, -4.0, -15.0 - gap), (38, 26, 15)) & (z < -gap)
    tibia_shaft = ((x / 14.0) ** 2 + ((y + 2.0) / 14.0) ** 2 <= 1.0) & (z < -15.0)
    for bone in (femur_shaft | condyles, tibia_plateau | tibia_shaft):
        image[bone & limb] = 80.0  # cortex
        inner = np.zeros_like(bone)
        inner[:, 3:-3, 3:-3] = bone[:, 3:-3, 3:-3] & bone[:, :-6, 3:-3] & bone[:, 6:, 3:-3] \
            & bone[:, 3:-3, :-6] & bone[:, 3:-3, 6:]
        image[inner & limb] = 720.0  # fatty marrow
    joint = (np.abs(z) <= gap) & ((x / 40.0) ** 2 + ((y + 5.0) / 30.0) ** 2 <= 1.0)
    image[joint] = 1050.0  # joint fluid
    image[(np.abs(np.abs(z) - gap - 1.0) <= 1.0) & ((x / 38.0) ** 2 + ((y + 5.0) / 28.0) ** 2 <= 1.0)] = 520.0
    image[_ellipsoid(x, y, z, (0.0, 38.0, 25.0), (20, 8, 18))] = 700.0  # patella
    image = np.where(image > 0, image + _texture(image.shape, seed, 20.0), np.abs(_texture(image.shape, seed + 1, 6.0)))
    return stored(image, spacing, SAGITTAL, intended_view="sagittal")


def blank_volume() -> Volume:
    """An all-zero sagittal volume: (I, J, K) = (AP 256, SI 320, LR 15) voxels at (0.75, 0.75, 3.5) mm."""
    return stored(np.zeros((15, 256, 320)), (3.5, 0.75, 0.75), SAGITTAL, intended_view="sagittal")


def noise_volume(seed: int = 2) -> Volume:
    """Rician (magnitude) noise with no structure, stored sagittal: (AP 256, SI 320, LR 15) at (0.75, 0.75, 3.5) mm."""
    rng = np.random.default_rng(seed)
    shape = (15, 256, 320)
    image = np.abs(rng.normal(60.0, 120.0, shape) + 1j * rng.normal(0.0, 120.0, shape))
    return stored(image, (3.5, 0.75, 0.75), SAGITTAL, intended_view="sagittal")


def _column_profile(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Along z (mm): where the vertebral bodies and the discs between them are (six bodies, 38 mm apart)."""
    pitch, height = 38.0, 27.0
    phase = np.mod(z + height / 2, pitch)  # 0 at a body's lower endplate
    inside = np.abs(z) <= 3 * pitch
    return inside & (phase < height), inside & (phase >= height)


def _lumbar_column(y: np.ndarray, z: np.ndarray, body_y: float = 0.0) -> np.ndarray:
    """A mid-sagittal-like picture (Y, Z): bodies with discs between, a bright canal behind, muscle further back."""
    shape = np.broadcast_shapes(y.shape, z.shape)
    bodies, discs = _column_profile(z)
    front = np.abs(y - body_y) <= 18.0
    image = np.full(shape, 280.0)
    image[np.broadcast_to(bodies & front, shape)] = 430.0
    image[np.broadcast_to(discs & front, shape)] = 780.0
    image[np.broadcast_to(np.abs(y - body_y + 31.0) <= 7.0, shape)] = 1100.0  # the canal: CSF
    image[np.broadcast_to((y - body_y < -40.0) & (y - body_y > -70.0), shape)] = 380.0  # posterior elements
    return image


def axial_only_volume(seed: int = 3) -> Volume:
    """Lumbar-like axial cross-sections (body outline, fat, vertebral body, canal), stored axial.

    Returns:
        (I, J, K) = (LR 256, AP 256, SI 14) voxels at (0.7, 0.7, 4.0) mm.
    """
    shape, spacing = (256, 256, 14), (0.7, 0.7, 4.0)
    x, y, z = grid(shape, spacing)
    section = np.zeros(shape[:2] + (1,))  # one cross-section, repeated along z
    section[((x / 85.0) ** 2 + (y / 70.0) ** 2 <= 1.0)[..., 0]] = 800.0  # subcutaneous fat
    section[((x / 75.0) ** 2 + (y / 60.0) ** 2 <= 1.0)[..., 0]] = 330.0  # muscle
    section[((x / 22.0) ** 2 + ((y - 5.0) / 16.0) ** 2 <= 1.0)[..., 0]] = 450.0  # vertebral body / disc
    section[((x / 9.0) ** 2 + ((y + 22.0) / 7.0) ** 2 <= 1.0)[..., 0]] = 1100.0  # canal
    image = np.repeat(section, shape[2], axis=2)
    image = np.where(image > 0, image + _texture(image.shape, seed, 18.0), 0.0)
    return stored(image, spacing, AXIAL, intended_view="axial")


def coronal_only_volume(seed: int = 4) -> Volume:
    """A coronal lumbar spine (bodies and discs in a column down the midline, psoas beside it), stored coronal.

    Returns:
        (I, J, K) = (LR 256, SI 320, AP 14) voxels at (0.75, 0.75, 4.0) mm.
    """
    shape, spacing = (256, 14, 320), (0.75, 4.0, 0.75)
    x, y, z = grid(shape, spacing)
    full = np.broadcast_shapes(x.shape, y.shape, z.shape)
    bodies, discs = _column_profile(z)
    image = np.full(full, 300.0)
    image[np.broadcast_to((np.abs(x) <= 24.0) & bodies, full)] = 430.0
    image[np.broadcast_to((np.abs(x) <= 25.0) & discs, full)] = 780.0
    image[np.broadcast_to((np.abs(np.abs(x) - 45.0) <= 14.0) & (np.abs(y) <= 28.0) & (z < 60.0), full)] = 340.0
    image[np.broadcast_to(np.abs(x) > 110.0, full)] = 800.0  # flank fat
    image = image + _texture(image.shape, seed, 18.0)
    return stored(image, spacing, CORONAL, intended_view="coronal")


def single_slice_volume(seed: int = 5) -> Volume:
    """One sagittal slice of a lumbar-like column (bodies, discs, canal): (AP 256, SI 320, LR 1) at
    (0.75, 0.75, 4.0) mm, stored sagittal."""
    shape, spacing = (1, 256, 320), (4.0, 0.75, 0.75)
    x, y, z = grid(shape, spacing)
    image = _lumbar_column(y, z, body_y=20.0) * np.ones(shape)
    image = image + _texture(image.shape, seed, 18.0)
    return stored(image, spacing, SAGITTAL, intended_view="sagittal")


# ------------------------------------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class BadStudy:
    """A scan no grade may come from.

    Attributes:
        build: makes the volume.
        codes: the ``StudyError`` codes a refusal may carry; empty: any code.
    """

    build: Callable[[], Volume]
    codes: frozenset[str] = frozenset()


BAD_STUDIES: dict[str, BadStudy] = {
    "head": BadStudy(head_volume),
    "knee": BadStudy(knee_volume),
    "blank": BadStudy(blank_volume),
    "noise": BadStudy(noise_volume),
    "axial_only": BadStudy(axial_only_volume, frozenset({"missing_sagittal"})),
    "coronal_only": BadStudy(coronal_only_volume, frozenset({"missing_sagittal"})),
    "single_slice": BadStudy(single_slice_volume, frozenset({"too_few_slices"})),
}
NOT_A_SPINE: tuple[str, ...] = ("head", "knee", "blank", "noise")  # 422 or every level not assessable


def write_study(case: str, folder: str | Path) -> Path:
    """Writes case ``case`` of ``BAD_STUDIES`` as ``folder/{case}.nii.gz`` and returns the path."""
    return write_nifti(BAD_STUDIES[case].build(), Path(folder) / f"{case}.nii.gz")


def study_bytes(case: str, folder: str | Path) -> bytes:
    """The bytes of the NIfTI file ``write_study`` writes (for an upload)."""
    return write_study(case, folder).read_bytes()
