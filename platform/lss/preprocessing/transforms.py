"""Preprocessing of one study with MONAI transforms: the same code runs in Ray Data, in a serial loop and in Serve.

Sagittal: channel-first -> ``Orientationd`` RAS -> ``Spacingd`` to ``sagittal_spacing_mm`` -> percentile intensity
scaling to [0, 1] -> a ``sagittal_shape`` crop centred on the spine (the mask's labels when there is a mask, else
the lumbar spine a first pass of the model finds in the whole field of view when a ``locator`` is given, see
``lss.preprocessing.locate``, else the field of view's centre; ``info["sagittal_crop_placed_by"]`` says which) -> pad.

Sagittal labels: the mask is read with the series' geometry overrides (``read_series_mask``), translated to native
labels through the series' ``label_map`` (a value neither 0 nor mapped is ``bad_labels``), checked against its
image's grid and its ``required_structures`` (``empty_labels``), and reduced to the label groups it really holds
(an optional structure absent from this mask is unknown here; nothing labelled at all is ``empty_labels``): the
case stores that ``label_partition`` and ``labelled_span_only``. A one-slice sagittal volume (a 2D slice) is
tiled along left-right, image and labels alike, so the crop has as many (identical) real slices as it takes
(``info["single_slice"]``).

Axial, per graded level: the ``axial_slices`` slices nearest the level (a stack planned through that disc, or the
slices of a multi-level axial series nearest the level's annotated point; series are read with ``read_series``, so
one stack of a multi-stack DICOM series, ``"{id}#stack{i}"``, is read alone; where several stacks reach the point,
the one whose middle slice is nearest it wins) -> ``Orientationd`` RAS -> in-plane
``Spacingd`` (slice spacing kept) -> percentile scaling -> an ``axial_shape`` crop centred on the canal (mask) or
the level point, else the image centre.

Reading budget (``config.limits``, ``lss.config.InputLimits``): the series and masks are read with it (each reader
checks its headers before decoding), and before ``Spacingd`` runs the size of the resampled image is checked
against ``max_resampled_voxels`` (``lss.data.io.limits.check_resampled``): the whole sagittal volume at
``sagittal_spacing_mm`` (after a single slice is tiled), each axial slab at the in-plane ``axial_spacing_mm`` with
its slices kept. Messages name series by view and number ("axial series 2": the record's axial series in order),
never by id: a series id can be a file name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lss.anatomy import CANAL_LABEL, LEVELS, Structure, label_partition, structure_of_label
from lss.config import PreprocessConfig
from lss.data.errors import ErrorCode, StudyError
from lss.data.io import read_series, read_series_mask
from lss.data.io.limits import check_declared_image, check_resampled
from lss.data.manifest import SeriesRecord, StudyRecord
from lss.data.volume import Volume
from lss.preprocessing.locate import Locator, anchor_caudal

__all__ = ["PreprocessedStudy", "preprocess_study", "check_volume"]


# MONAI's current default, given explicitly: its default is changing to the meta-tensor's space (FutureWarning).
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass
class PreprocessedStudy:
    """Model-ready arrays of one study.

    Attributes:
        sagittal_image: (X, Y, Z) float16 in [0, 1], RAS axes (left-right, posterior-anterior, inferior-superior).
        sagittal_labels: (X, Y, Z) int16 on-disk labels, or None without a mask.
        axial_image: (L, S, H, W) float16: per graded level (``LEVELS`` order) S slices (inferior to superior, the
            centre one through the disc) of H x W pixels, H along left -> right and W along posterior -> anterior
            (RAS in-plane); zeros where the level has no axial data.
        axial_labels: (L, S, H, W) int16 on-disk labels, or None without masks.
        axial_present: (L,) bool, True where the level has axial data.
        severity: (L,) int8 severity index, -1 where unknown.
        area_mm2, ap_mm: (L,) float32 measured ground truth, NaN where unknown.
        sagittal_affine: (4, 4) affine of the sagittal crop (RAS mm).
        axial_affines: (L, 4, 4) affines of the axial crops (identity where absent).
        info: what was done (crop centres, the series used, ``single_slice``, warnings).
        label_groups: the structure groups this case's sagittal mask labels (the series' groups less the optional
            ones absent here; ``lss.anatomy.label_partition``); None: every structure, each alone (or no mask).
        label_partition: (C,) int8 ``label_partition(label_groups)``, or None without sagittal labels.
        labelled_span_only: the mask labels only the superior-inferior span of its labelled voxels.
    """

    sagittal_image: np.ndarray
    sagittal_labels: np.ndarray | None
    axial_image: np.ndarray
    axial_labels: np.ndarray | None
    axial_present: np.ndarray
    severity: np.ndarray
    area_mm2: np.ndarray
    ap_mm: np.ndarray
    sagittal_affine: np.ndarray
    axial_affines: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    label_groups: list[list[str]] | None = None
    label_partition: np.ndarray | None = None
    labelled_span_only: bool = False

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as arrays (for ``np.savez``); missing label maps are left out, and with sagittal labels come
        ``label_partition`` ((C,) int8) and ``labelled_span_only`` (bool, shape ())."""
        out = {
            "sagittal_image": self.sagittal_image,
            "axial_image": self.axial_image,
            "axial_present": self.axial_present,
            "severity": self.severity,
            "area_mm2": self.area_mm2,
            "ap_mm": self.ap_mm,
            "sagittal_affine": self.sagittal_affine,
            "axial_affines": self.axial_affines,
        }
        if self.sagittal_labels is not None:
            out["sagittal_labels"] = self.sagittal_labels
            partition = label_partition(self.label_groups) if self.label_partition is None else self.label_partition
            out["label_partition"] = np.asarray(partition, dtype=np.int8)
            out["labelled_span_only"] = np.asarray(bool(self.labelled_span_only))
        if self.axial_labels is not None:
            out["axial_labels"] = self.axial_labels
        return out


def check_volume(volume: Volume, config: PreprocessConfig, what: str, min_slices: int = 1) -> None:
    """Rejects volumes no transform should see: NaNs, absurd spacing, too few slices.

    Raises:
        StudyError: NON_FINITE, ABSURD_SPACING or TOO_FEW_SLICES.
    """
    if not np.all(np.isfinite(volume.array)):
        raise StudyError(ErrorCode.NON_FINITE, f"the {what} holds NaN or infinite values.")
    low, high = config.spacing_limits_mm
    spacing = volume.spacing
    if np.any(spacing < low) or np.any(spacing > high):
        raise StudyError(
            ErrorCode.ABSURD_SPACING,
            f"the {what} has voxel size {np.round(spacing, 3).tolist()} mm, outside {low}-{high} mm.",
        )
    slices = min(volume.shape)
    if slices < min_slices:
        raise StudyError(ErrorCode.TOO_FEW_SLICES, f"the {what} has {slices} slices; at least {min_slices} are needed.")


def _to_meta(volume: Volume):
    import torch
    from monai.data import MetaTensor

    return MetaTensor(torch.as_tensor(np.ascontiguousarray(volume.array, dtype=np.float32))[None],
                      affine=torch.as_tensor(volume.affine))


def _read_mask(record: StudyRecord, series: SeriesRecord, what: str, config: PreprocessConfig,
               image: Volume | None = None) -> Volume:
    """A series' mask with the series' geometry overrides, its values translated to native labels.

    Raises:
        StudyError: a reader's error (IMAGE_TOO_LARGE over ``config.limits``); BAD_LABELS when it is off ``image``'s
            grid (if given) or holds unmapped values.
    """
    try:
        mask = read_series_mask(series, record.root, limits=config.limits)
    except StudyError as error:
        error.message = f"{what}: {error.message}"
        raise
    if image is not None and (mask.shape != image.shape or not np.allclose(mask.affine, image.affine, atol=1e-3)):
        raise StudyError(ErrorCode.BAD_LABELS, f"the {what} does not match its image's grid.")
    return Volume(_native_labels(mask.array, series.label_map, what), mask.affine, mask.meta)


def _native_labels(values: np.ndarray, label_map: dict[int, int] | None, what: str) -> np.ndarray:
    """A mask's values as native labels (int16): through ``label_map`` when given, else as they are.

    Raises:
        StudyError: BAD_LABELS for non-integer values, or values neither 0 nor in ``label_map`` (listed).
    """
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        rounded = np.rint(values)
        if not np.allclose(values, rounded):
            raise StudyError(ErrorCode.BAD_LABELS, f"the {what} holds non-integer values.")
        values = rounded.astype(np.int64)
    if label_map is None:
        return values.astype(np.int16)
    present, inverse = np.unique(values, return_inverse=True)
    unmapped = [int(v) for v in present if v != 0 and int(v) not in label_map]
    if unmapped:
        shown = ", ".join(str(v) for v in unmapped[:10]) + (" ..." if len(unmapped) > 10 else "")
        raise StudyError(
            ErrorCode.BAD_LABELS,
            f"the {what} holds value(s) {shown} that its dataset's labels do not map (mapped: {sorted(label_map)}).",
        )
    lookup = np.array([0 if v == 0 else label_map[int(v)] for v in present], dtype=np.int16)
    return lookup[inverse].reshape(values.shape)


def _case_label_groups(labels: np.ndarray, series: SeriesRecord, what: str) -> list[list[str]] | None:
    """The label groups a mask (native labels) really holds: the series' groups less optional absent ones.

    Raises:
        StudyError: EMPTY_LABELS when a required structure is absent, or no labelled group is present.
    """
    present = {structure_of_label(int(v)) for v in np.unique(labels) if v != 0} - {Structure.BACKGROUND}
    groups = series.label_groups
    if groups is None:
        missing = [s for s in series.required_structures if Structure(s) not in present]
        if missing:
            raise StudyError(ErrorCode.EMPTY_LABELS, f"the {what} has no {', '.join(missing)} label; its dataset "
                                                     "requires one in every mask.")
        return None
    kept = [group for group in groups if any(Structure(name) in present for name in group)]
    kept_structures = {name for group in kept for name in group}
    missing = [name for name in series.required_structures if name not in kept_structures]
    if missing:
        raise StudyError(ErrorCode.EMPTY_LABELS, f"the {what} has no {', '.join(missing)} label; its dataset "
                                                 "requires one in every mask.")
    if not kept:
        labelled = sorted({name for group in groups for name in group})
        raise StudyError(ErrorCode.EMPTY_LABELS, f"the {what} labels none of {labelled}: nothing to learn from.")
    return kept


def _left_right_axis(volume: Volume) -> int:
    """The voxel axis closest to the left-right direction."""
    return int(np.argmax(np.abs(volume.axes[:, 0])))


def _tile_slice(volume: Volume, axis: int, count: int) -> Volume:
    """A one-slice volume repeated ``count`` times along ``axis``, the original slice in the middle."""
    array = np.repeat(volume.array, count, axis=axis)
    affine = volume.affine.copy()
    affine[:3, 3] -= affine[:3, axis] * (count - 1) / 2.0
    return Volume(array, affine, volume.meta)


def _read_series(record: StudyRecord, series: SeriesRecord, what: str, config: PreprocessConfig) -> Volume:
    """A series' image through ``read_series``, which honours its ``series_id``: the SeriesInstanceUID in a folder
    of several DICOM series, and ``"{id}#stack{i}"`` for one stack of a multi-stack series; read within
    ``config.limits``."""
    try:
        return read_series(series, record.root, limits=config.limits)  # the same path as record.resolve(series.path)
    except StudyError as error:
        error.message = f"{what}: {error.message}"
        raise


def _scale(image, config: PreprocessConfig):
    from monai.transforms import ScaleIntensityRangePercentiles

    low, high = config.intensity_percentiles
    return ScaleIntensityRangePercentiles(lower=low, upper=high, b_min=0.0, b_max=1.0, clip=True)(image)


def _crop(data: dict, centre: np.ndarray, size: tuple[int, ...]):
    from monai.transforms import Compose, ResizeWithPadOrCropd, SpatialCropd

    keys = [k for k in ("image", "label", "inside") if k in data]
    spatial = np.array(data["image"].shape[1:])
    centre = np.clip(np.round(centre).astype(int), 0, spatial - 1)
    return Compose([
        SpatialCropd(keys=keys, roi_center=centre.tolist(), roi_size=list(size)),
        ResizeWithPadOrCropd(keys=keys, spatial_size=list(size), mode="constant"),
    ])(data)


def _spine_centre(labels: np.ndarray | None, shape: tuple[int, ...], structure_labels=None,
                  crop_z: int | None = None, margin_z: int = 8) -> np.ndarray:
    """The centre of the labelled voxels; with ``crop_z``, a labelled span longer than the crop is anchored at its
    caudal end (as the model's first pass does where it cannot count the levels, ``lss.preprocessing.locate``):
    levels are counted from the sacrum, so the lowest labelled vertebra and what lies below it stay in the crop."""
    if labels is not None:
        selected = labels > 0 if structure_labels is None else np.isin(labels, structure_labels)
        if selected.any():
            points = np.argwhere(selected)
            centre = points.mean(axis=0)
            if crop_z is not None:
                centre[-1] = anchor_caudal(centre[-1], points[:, -1].min(), points[:, -1].max(), crop_z, margin_z)
            return centre
    return (np.array(shape) - 1) / 2.0


def _sagittal(record: StudyRecord, series: SeriesRecord, config: PreprocessConfig, locator: Locator | None = None):
    from monai.transforms import Orientationd, Spacingd

    volume = _read_series(record, series, "sagittal series", config)
    lr_axis = _left_right_axis(volume)
    single = volume.shape[lr_axis] == 1 and sorted(volume.shape)[1] > 1  # a 2D sagittal slice
    if single and not series.mask_path:
        # One slice is labelled data to learn from (the Vesal slices), not a study to diagnose: no parasagittal
        # context, no check that it is the midline.
        raise StudyError(ErrorCode.TOO_FEW_SLICES, "the sagittal series is a single slice: 2D slices are accepted as "
                         f"labelled training data only; a diagnosis needs at least {config.min_slices} slices.")
    check_volume(volume, config, "sagittal series", min_slices=1 if single else config.min_slices)
    mask, groups = None, None
    if series.mask_path:
        mask = _read_mask(record, series, "sagittal mask", config, image=volume)
        groups = _case_label_groups(mask.array, series, "sagittal mask")
    shape = list(volume.shape)
    if single:
        # Enough copies to fill the crop after resampling to the sagittal slice spacing: real 2.5D neighbours.
        thickness = float(volume.spacing[lr_axis])
        count = max(config.sagittal_shape[0], int(np.ceil(config.sagittal_shape[0] * config.sagittal_spacing_mm[0]
                                                          / thickness)) + 2)
        shape[lr_axis] = count
        # A thin slice is copied many times: the copies count as read voxels (float32), before they are made.
        check_declared_image(shape, 4, config.limits, "the sagittal slice, tiled to fill the crop")
    # Coarse voxels over a wide field of view upsample into a huge array: refused before Spacingd allocates it.
    check_resampled(shape, volume.affine, config.sagittal_spacing_mm, config.limits, "the sagittal series")
    if single:
        volume = _tile_slice(volume, lr_axis, count)
        mask = None if mask is None else _tile_slice(mask, lr_axis, count)
    data = {"image": _to_meta(volume)}
    if mask is not None:
        data["label"] = _to_meta(mask)
    keys = list(data)
    modes = ["bilinear" if k == "image" else "nearest" for k in keys]
    data = Orientationd(keys=keys, axcodes="RAS", labels=RAS_LABELS)(data)
    data = Spacingd(keys=keys, pixdim=config.sagittal_spacing_mm, mode=modes)(data)
    data["image"] = _scale(data["image"], config)
    labels = data["label"][0].numpy().round().astype(np.int16) if "label" in data else None
    # The crop follows the spine: where the mask puts it, else where a first pass of the model over the whole field
    # of view finds it (lss.preprocessing.locate), else the field of view's centre.
    if labels is not None and (labels > 0).any():
        centre, placed_by = _spine_centre(labels, labels.shape, crop_z=config.sagittal_shape[2]), "labels"
    else:
        centre = locator(data["image"][0].numpy()) if locator is not None else None
        placed_by = "model_pass" if centre is not None else "field_of_view_centre"
        if centre is None:
            centre = (np.array(data["image"].shape[1:]) - 1) / 2.0
    # Which crop pixels hold the acquired image and which are padding: levels beyond the image's edge are "not in
    # the field of view", not "not found" (lss.reporting.levels).
    data["inside"] = torch.ones_like(data["image"][:1])
    data = _crop(data, centre, config.sagittal_shape)
    image = data["image"][0].numpy().astype(np.float16)
    labels = data["label"][0].numpy().round().astype(np.int16) if "label" in data else None
    inside_z = np.flatnonzero(data["inside"][0].numpy().max(axis=(0, 1)) > 0.5)
    info = {"sagittal_centre_vox": np.asarray(centre, dtype=float).round(1).tolist(), "single_slice": bool(single),
            "sagittal_crop_placed_by": placed_by,
            "sagittal_fov_z": [int(inside_z.min()), int(inside_z.max())] if inside_z.size else None}
    return image, labels, np.asarray(data["image"].affine, dtype=np.float64), info, groups


def _nearest_slices(volume: Volume, point: np.ndarray | None) -> tuple[int, float | None]:
    """The centre slice: the one nearest ``point`` along the slice normal (with its distance, mm), else the middle."""
    n = volume.shape[2]
    if point is None:
        return n // 2, None
    k = volume.index(np.asarray(point))[2]
    centre = int(np.clip(np.round(k), 0, n - 1))
    return centre, float(abs(k - centre) * volume.spacing[2])


def _slab(volume: Volume, centre: int, count: int) -> Volume:
    """``count`` slices centred on ``centre`` (edge slices repeated at the stack's ends)."""
    n = volume.shape[2]
    indices = np.clip(np.arange(centre - count // 2, centre + count // 2 + 1), 0, n - 1)
    affine = volume.affine.copy()
    start = centre - count // 2
    affine[:3, 3] = volume.affine[:3, :3] @ np.array([0.0, 0.0, float(start)]) + volume.affine[:3, 3]
    return Volume(volume.array[:, :, indices], affine, volume.meta)


def _axial(record: StudyRecord, config: PreprocessConfig, cache: dict[str, tuple[Volume, Volume | None]]):
    from monai.transforms import Orientationd, Spacingd

    n_levels, s = len(LEVELS), config.axial_slices
    h, w = config.axial_shape
    images = np.zeros((n_levels, s, h, w), dtype=np.float16)
    labels = np.zeros((n_levels, s, h, w), dtype=np.int16)
    affines = np.tile(np.eye(4), (n_levels, 1, 1))
    present = np.zeros(n_levels, dtype=bool)
    any_mask = False
    info: dict[str, Any] = {}
    axials = record.axials()
    # Messages name an axial series by its number among the record's axial series: its id can be a file name.
    names = {id(series): f"axial series {number}" for number, series in enumerate(axials, start=1)}
    for li, level in enumerate(LEVELS):
        level_record = record.level(level)
        point = np.asarray(level_record.point_ras) if level_record and level_record.point_ras else None
        candidates = [a for a in axials if a.level == level] or [a for a in axials if a.level is None]
        if not candidates or (not any(a.level == level for a in axials) and point is None):
            continue  # a multi-level stack needs the level's point to know which slices to take
        best = None
        for series in candidates:
            if series.series_id not in cache:
                name = names[id(series)]
                volume = _read_series(record, series, name, config)
                check_volume(volume, config, name)
                # What Spacingd will make of a slab of this series: its slices kept, the plane at axial_spacing_mm.
                slab = (*volume.shape[:2], s)
                check_resampled(slab, volume.affine, (*config.axial_spacing_mm, None), config.limits,
                                f"a slab of {s} slices of {name}")
                mask = _read_mask(record, series, f"mask of {name}", config) if series.mask_path else None
                if mask is not None and mask.shape != volume.shape:
                    raise StudyError(ErrorCode.BAD_LABELS, f"the mask of {name} does not match its image.")
                cache[series.series_id] = (volume, mask)
            volume, mask = cache[series.series_id]
            centre, distance = _nearest_slices(volume, point if series.level is None else None)
            if series.level is None and point is not None:
                # Only accept a slice within one slice thickness of the level's point.
                if distance is None or distance > 1.0 * volume.spacing[2] + 1e-6:
                    continue
            # Where stacks overlap (per-disc stacks angled differently often do), the stack planned through the
            # point wins: first one whose slab needs no repeated edge slice, then the one whose middle slice is
            # nearest the point, then the nearest slice.
            n_slices = volume.shape[2]
            padded = not s // 2 <= centre <= n_slices - 1 - s // 2
            off_middle = 0.0 if distance is None else abs(centre - (n_slices - 1) / 2.0) * float(volume.spacing[2])
            key = (padded, round(off_middle, 3), distance or 0.0)
            if best is None or key < best[0]:
                best = (key, series, volume, mask, centre)
        if best is None:
            continue
        _, series, volume, mask, centre = best
        data = {"image": _to_meta(_slab(volume, centre, s))}
        if mask is not None:
            data["label"] = _to_meta(_slab(mask, centre, s))
        keys = list(data)
        modes = ["bilinear" if k == "image" else "nearest" for k in keys]
        data = Orientationd(keys=keys, axcodes="RAS", labels=RAS_LABELS)(data)
        data = Spacingd(keys=keys, pixdim=(*config.axial_spacing_mm, -1.0), mode=modes)(data)
        data["image"] = _scale(data["image"], config)
        slab_labels = data["label"][0].numpy().round().astype(np.int16) if "label" in data else None
        if slab_labels is not None and (slab_labels == CANAL_LABEL).any():
            centre_vox = _spine_centre(slab_labels, slab_labels.shape, [CANAL_LABEL])
        elif point is not None:
            inverse = np.linalg.inv(np.asarray(data["image"].affine, dtype=np.float64))
            centre_vox = inverse[:3, :3] @ point + inverse[:3, 3]
        else:
            centre_vox = (np.array(data["image"].shape[1:]) - 1) / 2.0
        # Orientation to RAS may have flipped the slice axis: the crop keeps every slice either way.
        spatial = np.array(data["image"].shape[1:])
        centre_vox = np.asarray(centre_vox, dtype=float)
        centre_vox[2] = (spatial[2] - 1) / 2.0
        data = _crop(data, centre_vox, (h, w, s))
        # (H, W, S) -> (S, H, W)
        images[li] = np.moveaxis(data["image"][0].numpy(), -1, 0).astype(np.float16)
        if "label" in data:
            labels[li] = np.moveaxis(data["label"][0].numpy().round(), -1, 0).astype(np.int16)
            any_mask = True
        affines[li] = np.asarray(data["image"].affine, dtype=np.float64)
        present[li] = True
        info[level] = {"series": series.series_id, "centre_slice": int(centre)}
    return images, (labels if any_mask else None), affines, present, info


def preprocess_study(record: StudyRecord, config: PreprocessConfig, locator: Locator | None = None,
                     sagittal_from: PreprocessedStudy | None = None) -> PreprocessedStudy:
    """Reads a study's series and turns them into model-ready arrays.

    Args:
        record: the study.
        config: the preprocessing settings.
        locator: places the sagittal crop of a study without a mask (``lss.inference.locate.SpineLocator``: a
            first pass of the model over the whole field of view); None: the field of view's centre.
        sagittal_from: this study preprocessed before with the same ``config`` and ``locator``: its sagittal arrays
            are taken as they are and only the axial series are read (the sagittal part does not depend on the
            levels, so the diagnosis chain's second pass, once unlabelled axial series have levels, skips it).

    Raises:
        StudyError: MISSING_SAGITTAL, a reader's error, IMAGE_TOO_LARGE (a series over ``config.limits``, as read
            or once resampled to the model's grid), BAD_LABELS (a mask off its image's grid, or holding a value
            its ``label_map`` does not map), EMPTY_LABELS (a required structure absent, or nothing labelled), or
            PREPROCESSING_FAILED for anything a transform raised.
    """
    sagittal = record.sagittal()
    if sagittal is None:
        raise StudyError(ErrorCode.MISSING_SAGITTAL, "the study has no sagittal series.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if sagittal_from is None:
                sag_image, sag_labels, sag_affine, info, groups = _sagittal(record, sagittal, config, locator)
            else:
                sag_image, sag_labels, sag_affine = (sagittal_from.sagittal_image, sagittal_from.sagittal_labels,
                                                     sagittal_from.sagittal_affine)
                info = {k: v for k, v in sagittal_from.info.items() if k not in ("axial", "sagittal_series")}
                groups = sagittal_from.label_groups
            axial_image, axial_labels, axial_affines, present, axial_info = _axial(record, config, {})
    except StudyError:
        raise
    except Exception as error:  # noqa: BLE001 - any transform failure becomes a listed, coded error
        # The type only: a library's message can quote a path or a header value. The cause stays chained for
        # whoever debugs it locally (Serve's logs drop exception messages).
        raise StudyError(ErrorCode.PREPROCESSING_FAILED, f"a transform failed ({type(error).__name__}).") from error
    severity = np.full(len(LEVELS), -1, dtype=np.int8)
    area = np.full(len(LEVELS), np.nan, dtype=np.float32)
    ap = np.full(len(LEVELS), np.nan, dtype=np.float32)
    for li, level in enumerate(LEVELS):
        level_record = record.level(level)
        if level_record is None:
            continue
        if level_record.severity is not None:
            severity[li] = level_record.severity.index
        if level_record.area_mm2 is not None:
            area[li] = level_record.area_mm2
        if level_record.ap_mm is not None:
            ap[li] = level_record.ap_mm
    info.update({"axial": axial_info, "sagittal_series": sagittal.series_id})
    return PreprocessedStudy(
        sagittal_image=sag_image,
        sagittal_labels=sag_labels,
        axial_image=axial_image,
        axial_labels=axial_labels,
        axial_present=present,
        severity=severity,
        area_mm2=area,
        ap_mm=ap,
        sagittal_affine=sag_affine,
        axial_affines=axial_affines,
        info=info,
        label_groups=groups,
        label_partition=None if sag_labels is None else label_partition(groups).astype(np.int8),
        labelled_span_only=bool(sag_labels is not None and sagittal.labelled_span_only),
    )
