"""Training augmentations that mimic what real lumbar MRI does to a sample: pose, shape, coverage and appearance.

A sample is the dict of ``lss.model.inputs.case_to_sample``. Three transforms, each a MONAI ``Randomizable`` with its
probabilities as constructor arguments and ``set_random_state(seed)`` for reproducible draws per worker:

- ``SpatialAugment``: the sagittal image and its maps (``sagittal_target``, ``level_target``) warped by one random
  grid (MONAI ``AffineGrid`` + ``RandDeformGrid``, composed and resampled once as in MONAI's ``Rand2DElastic``), then
  a random field of view (a superior-inferior window and/or an anterior-posterior band) blanks the rest, as in scans
  that start anywhere from T9 to L2 or crops that cut the sacrum.
- ``RealScanIntensityAugment``: coil shading (``RandBiasField``), contrast and vendor look (``RandAdjustContrast``,
  ``RandHistogramShift``, scale / shift), noise (``RandGaussianNoise``) and resolution (``RandGaussianSmooth`` /
  ``RandGaussianSharpen``) of the sagittal and axial images; labels untouched.
- ``TrainingAugment``: both, spatial first, on a copy of the sample (the dataset caches its samples).

Label conventions kept by ``SpatialAugment``: a ``sagittal_target`` voxel is a structure index (0 background) or -1
(unknown); after warping, voxels that map outside the image or are blanked by the field-of-view cut are background
(0: nothing is visible there), unknown voxels stay -1 where they map, and a target with no known voxel (a case
without labels) stays all -1 so that "no labels" remains recognisable. ``level_target`` stays bool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (
    AffineGrid,
    RandAdjustContrast,
    RandBiasField,
    RandDeformGrid,
    RandGaussianNoise,
    RandGaussianSharpen,
    RandGaussianSmooth,
    RandHistogramShift,
    Randomizable,
    RandScaleIntensity,
    RandShiftIntensity,
    Resample,
)
from monai.utils import MAX_SEED, convert_to_tensor

__all__ = ["SpatialAugment", "RealScanIntensityAugment", "TrainingAugment"]

Sample = dict[str, torch.Tensor]


def _check_prob(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")
    return float(value)


def _check_range(name: str, value: Sequence[float], low: float, high: float, *,
                 strict_low: bool = False) -> tuple[float, float]:
    """A (min, max) pair inside [low, high] (or (low, high] with ``strict_low``), min <= max; NaN fails."""
    if len(value) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}.")
    lo, hi = float(value[0]), float(value[1])
    above_low = low < lo if strict_low else low <= lo
    if not (above_low and lo <= hi <= high):
        bound = "(" if strict_low else "["
        raise ValueError(f"{name} must be a (min, max) pair with min <= max inside {bound}{low}, {high}], "
                         f"got {value!r}.")
    return lo, hi


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A plain ``torch.Tensor`` (MONAI transforms may return a ``MetaTensor``)."""
    return convert_to_tensor(x, track_meta=False)


class SpatialAugment(Randomizable):
    """Random pose, shape and field of view of the sagittal input, with its maps moved by the same draw.

    One grid per call: with ``prob_affine`` a MONAI ``AffineGrid`` (rotation, isotropic zoom, shear, translation), with
    ``prob_elastic`` a smooth MONAI ``RandDeformGrid`` displacement (control points every ``elastic_spacing`` pixels,
    upsampled bicubically, as in ``Rand2DElastic``); the image is resampled bilinearly and the maps by nearest
    neighbour, both with zero padding. Then, with ``prob_fov_si``, only a random window of the superior-inferior axis
    (Z) is kept, and with ``prob_fov_ap`` only a random band of the posterior-anterior axis (Y): the rest of the image
    is set to 0, of ``sagittal_target`` to background (0) and of ``level_target`` to False.

    Defaults: pose differences between patients and positioning (lordosis, tilt of the crop: +-12 degrees; body size
    and crop placement: zoom 0.85-1.2, shifts up to 15 % of each side) are common, so the affine is drawn often
    (0.7); the elastic warp is mild (about 2 px = 2.5 mm standard deviation at most on 30 mm control spacing), enough
    for shape variation without tearing thin structures (discs, canal). About a third of samples get a partial
    superior-inferior coverage keeping 55-95 % of the height (the 240 mm crop holds the lumbar spine with margins;
    a scan that starts at L2 or stops above the sacrum keeps roughly that share); an anterior-posterior band (a
    narrow phase-encoding field of view) is rarer (0.1) and keeps 60-95 % of the depth.

    Args:
        prob_affine: probability of the random affine.
        rotate_range: largest in-plane rotation, radians (drawn uniformly in +-rotate_range).
        zoom_range: (min, max) isotropic zoom of the anatomy (> 1 enlarges it); drawn uniformly.
        translate_fraction: largest shift along each axis as a fraction of that axis's size.
        shear_range: largest shear coefficient (MONAI ``AffineGrid`` ``shear_params``), drawn in +-shear_range.
        prob_elastic: probability of the elastic deformation.
        elastic_spacing: distance of the deformation's control points, pixels (Y, Z).
        elastic_magnitude: (min, max) of the standard deviation of the control-point offsets, pixels.
        prob_fov_si: probability of keeping only a superior-inferior window.
        fov_si_keep: (min, max) fraction of the height (Z) kept by the window.
        prob_fov_ap: probability of keeping only a posterior-anterior band.
        fov_ap_keep: (min, max) fraction of the depth (Y) kept by the band.
        image_key: key of the (S, Y, Z) float image.
        target_key: key of the (Y, Z) int64 structure target (-1 unknown).
        mask_keys: keys of (C, Y, Z) bool maps (e.g. the (L, Y, Z) ``level_target``).
        allow_missing_keys: skip a missing ``target_key`` / ``mask_keys`` entry instead of raising ``KeyError``.

    Raises:
        ValueError: a probability outside [0, 1], a negative range, a zoom or keep range that is empty or outside
            (0, ...], a non-positive control spacing.

    Example::

        augment = SpatialAugment(prob_fov_si=0.5)
        augment.set_random_state(seed=worker_seed)
        out = augment(sample)  # sample["sagittal"] (S, Y, Z), ["sagittal_target"] (Y, Z), ["level_target"] (L, Y, Z)
    """

    def __init__(
        self,
        prob_affine: float = 0.7,
        rotate_range: float = math.radians(12.0),
        zoom_range: tuple[float, float] = (0.85, 1.2),
        translate_fraction: float = 0.15,
        shear_range: float = 0.05,
        prob_elastic: float = 0.3,
        elastic_spacing: tuple[int, int] = (24, 24),
        elastic_magnitude: tuple[float, float] = (0.0, 2.0),
        prob_fov_si: float = 0.3,
        fov_si_keep: tuple[float, float] = (0.55, 0.95),
        prob_fov_ap: float = 0.1,
        fov_ap_keep: tuple[float, float] = (0.6, 0.95),
        image_key: str = "sagittal",
        target_key: str = "sagittal_target",
        mask_keys: Sequence[str] = ("level_target",),
        allow_missing_keys: bool = False,
    ) -> None:
        self.prob_affine = _check_prob("prob_affine", prob_affine)
        self.prob_elastic = _check_prob("prob_elastic", prob_elastic)
        self.prob_fov_si = _check_prob("prob_fov_si", prob_fov_si)
        self.prob_fov_ap = _check_prob("prob_fov_ap", prob_fov_ap)
        if not 0.0 <= rotate_range <= math.pi:
            raise ValueError(f"rotate_range must be in [0, pi] radians, got {rotate_range!r}.")
        if not 0.0 <= translate_fraction < 1.0:
            raise ValueError(f"translate_fraction must be in [0, 1), got {translate_fraction!r}.")
        if not 0.0 <= shear_range < 1.0:
            raise ValueError(f"shear_range must be in [0, 1), got {shear_range!r}.")
        self.rotate_range = float(rotate_range)
        self.translate_fraction = float(translate_fraction)
        self.shear_range = float(shear_range)
        self.zoom_range = _check_range("zoom_range", zoom_range, 0.0, math.inf, strict_low=True)
        if len(elastic_spacing) != 2 or any(int(s) != s or s < 1 for s in elastic_spacing):
            raise ValueError(f"elastic_spacing must be two positive integers (Y, Z) in pixels, "
                             f"got {elastic_spacing!r}.")
        self.elastic_spacing = (int(elastic_spacing[0]), int(elastic_spacing[1]))
        self.elastic_magnitude = _check_range("elastic_magnitude", elastic_magnitude, 0.0, math.inf)
        self.fov_si_keep = _check_range("fov_si_keep", fov_si_keep, 0.0, 1.0, strict_low=True)
        self.fov_ap_keep = _check_range("fov_ap_keep", fov_ap_keep, 0.0, 1.0, strict_low=True)
        if isinstance(mask_keys, str):
            raise TypeError(f"mask_keys must be a sequence of keys, not the string {mask_keys!r}.")
        self.image_key = image_key
        self.target_key = target_key
        self.mask_keys = tuple(mask_keys)
        self.allow_missing_keys = allow_missing_keys
        self._deform = RandDeformGrid(spacing=self.elastic_spacing, magnitude_range=self.elastic_magnitude)
        self._resample = Resample()
        self._params: dict = {}
        self.set_random_state()

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SpatialAugment:
        """Seeds every draw of this transform (the elastic offsets share its ``RandomState``)."""
        super().set_random_state(seed, state)
        self._deform.set_random_state(state=self.R)
        return self

    def randomize(self, spatial_size: Sequence[int]) -> None:
        """Draws the parameters of one call for an image of ``spatial_size`` (Y, Z); the elastic offsets are drawn
        when the grid is built."""
        size_y, size_z = spatial_size
        params: dict = {"affine": self.R.rand() < self.prob_affine}
        if params["affine"]:
            params["rotate"] = self.R.uniform(-self.rotate_range, self.rotate_range)
            params["zoom"] = self.R.uniform(*self.zoom_range)
            params["shear"] = tuple(self.R.uniform(-self.shear_range, self.shear_range, size=2))
            params["translate"] = tuple(self.R.uniform(-self.translate_fraction, self.translate_fraction, size=2)
                                        * np.array([size_y, size_z]))
        params["elastic"] = self.R.rand() < self.prob_elastic
        params["fov_z"] = self._window(size_z, self.fov_si_keep) if self.R.rand() < self.prob_fov_si else None
        params["fov_y"] = self._window(size_y, self.fov_ap_keep) if self.R.rand() < self.prob_fov_ap else None
        self._params = params

    def _window(self, size: int, keep: tuple[float, float]) -> tuple[int, int]:
        length = max(1, int(round(size * self.R.uniform(*keep))))
        start = int(self.R.randint(0, size - length + 1))
        return start, start + length

    def _grid(self, spatial_size: tuple[int, int]) -> torch.Tensor | None:
        """The (3, Y, Z) homogeneous sampling grid of the drawn parameters (MONAI pixel coordinates), None if none."""
        p = self._params
        if not p["affine"] and not p["elastic"]:
            return None
        affine = None
        if p["affine"]:
            affine = AffineGrid(rotate_params=p["rotate"], shear_params=p["shear"], translate_params=p["translate"],
                                scale_params=(1.0 / p["zoom"],) * 2, dtype=torch.float32)
        if not p["elastic"]:
            return affine(spatial_size=spatial_size)[0]
        grid = self._deform(spatial_size=spatial_size)  # coarse control grid with random offsets (draws from self.R)
        if affine is not None:
            grid = affine(grid=grid)[0]
        grid = torch.nn.functional.interpolate(
            grid[None].float(), scale_factor=self.elastic_spacing, mode="bicubic", align_corners=False,
            recompute_scale_factor=True,
        )[0]
        start = [(g - s) // 2 for g, s in zip(grid.shape[1:], spatial_size, strict=True)]
        return grid[:, start[0] : start[0] + spatial_size[0], start[1] : start[1] + spatial_size[1]]

    def __call__(self, sample: Sample) -> Sample:
        """Augments one sample (one new draw).

        Args:
            sample: ``image_key`` (S, Y, Z) float, ``target_key`` (Y, Z) int64 (-1 unknown), each of ``mask_keys``
                (C, Y, Z) bool; other keys are passed through.

        Returns:
            a new dict with the same keys, shapes and dtypes; the input and its tensors are not modified.

        Raises:
            KeyError: a missing key (unless ``allow_missing_keys`` for the maps).
            ValueError: an image that is not (S, Y, Z) or a map of another spatial size or dtype.
        """
        out = dict(sample)
        image = sample[self.image_key]
        if image.ndim != 3:
            raise ValueError(f"{self.image_key} must be (S, Y, Z), got shape {tuple(image.shape)}.")
        spatial_size = (int(image.shape[1]), int(image.shape[2]))
        target = self._get(sample, self.target_key, spatial_size, ndim=2)
        masks = {key: m for key in self.mask_keys if (m := self._get(sample, key, spatial_size, ndim=3)) is not None}
        if target is not None and target.dtype != torch.int64:
            raise ValueError(f"{self.target_key} must be int64, got {target.dtype}.")
        for key, mask in masks.items():
            if mask.dtype != torch.bool:
                raise ValueError(f"{key} must be bool, got {mask.dtype}.")
        self.randomize(spatial_size)
        labelled = target is not None and bool((target >= 0).any())

        grid = self._grid(spatial_size)
        if grid is not None:
            image = _plain(self._resample(image, grid, mode="bilinear", padding_mode="zeros")).to(image.dtype)
            moving = {key: mask for key, mask in masks.items() if bool(mask.any())}  # all-False maps stay so
            if labelled or moving:
                # One nearest-neighbour pass for all maps. The target is shifted by +2 so that 0 marks "outside"
                # (zero padding) and -1 -> 1 survives as a value of its own.
                channels = [mask.float() for mask in moving.values()]
                if labelled:
                    channels.insert(0, (target + 2).float()[None])
                stack = _plain(self._resample(torch.cat(channels), grid, mode="nearest", padding_mode="zeros"))
                if labelled:
                    shifted = stack[0].round().long()
                    target = torch.where(shifted == 0, torch.zeros_like(shifted), shifted - 2)
                    stack = stack[1:]
                start = 0
                for key, mask in moving.items():
                    masks[key] = stack[start : start + mask.shape[0]] > 0.5
                    start += mask.shape[0]

        visible = self._visible(spatial_size, image.device)
        if visible is not None:
            image = image * visible
            masks = {key: mask & visible for key, mask in masks.items()}
            if labelled:
                target = torch.where(visible, target, torch.zeros_like(target))

        out[self.image_key] = image if image is not sample[self.image_key] else image.clone()
        if target is not None:
            out[self.target_key] = target if target is not sample[self.target_key] else target.clone()
        for key, mask in masks.items():
            out[key] = mask if mask is not sample[key] else mask.clone()
        return out

    def _get(self, sample: Sample, key: str, spatial_size: tuple[int, int], ndim: int) -> torch.Tensor | None:
        if key not in sample:
            if self.allow_missing_keys:
                return None
            raise KeyError(f"the sample has no {key!r} (keys: {sorted(sample)}); "
                           "pass allow_missing_keys=True to skip it.")
        value = sample[key]
        if value.ndim != ndim or tuple(value.shape[-2:]) != spatial_size:
            want = "(Y, Z)" if ndim == 2 else "(C, Y, Z)"
            raise ValueError(f"{key} must be {want} with (Y, Z) = {spatial_size} of {self.image_key}, "
                             f"got shape {tuple(value.shape)}.")
        return value

    def _visible(self, spatial_size: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        """(Y, Z) bool: the kept field of view, None when all is kept."""
        fov_y, fov_z = self._params["fov_y"], self._params["fov_z"]
        if fov_y is None and fov_z is None:
            return None
        visible = torch.zeros(spatial_size, dtype=torch.bool, device=device)
        y0, y1 = fov_y if fov_y is not None else (0, spatial_size[0])
        z0, z1 = fov_z if fov_z is not None else (0, spatial_size[1])
        visible[y0:y1, z0:z1] = True
        return visible


class RealScanIntensityAugment(Randomizable):
    """Random appearance of the sagittal and axial images, as scanners, coils and protocols vary; labels untouched.

    In this order, each with its own probability: a smooth multiplicative bias field (coil shading), gamma contrast,
    a random monotone histogram remapping (vendor / T2 weighting look), scale and shift of the intensities, Gaussian
    noise, then a blur (thicker slices, lower resolution) or a sharpening (vendor edge enhancement); the result is
    clamped to [0, 1.5]. The sagittal image gets one draw; the axial stacks of all levels share another
    (``axial_per_level=False``: one protocol for the study's axial series) or get one each. Levels without axial
    data (all zeros) are left as they are.

    Defaults: appearance is what differs most between sites, so contrast, scale and noise are frequent (0.5) and
    moderate (gamma 0.7-1.5, +-15 % scale, noise std up to 0.04 of the [0, 1] range); coil shading (0.3) with
    Legendre coefficients in +-0.15 gives a field that typically spans 0.75-1.35 across the image (surface coils
    shade the anterior abdomen); histogram remapping (0.3) changes the tissue contrast ratios (T2 weighting,
    vendor); blur and sharpening are rarer (0.1 each) and mild.

    With ``preserve_zeros`` the voxels that are exactly 0 (padding added by preprocessing, levels without axial data,
    the outside of a spatial augmentation) stay 0, as they are in real inputs whatever the scanner.

    Args:
        prob_bias: probability of the bias field (MONAI ``RandBiasField``).
        bias_degree: polynomial degree of the bias field.
        bias_coeff_range: (min, max) of its Legendre coefficients.
        prob_contrast: probability of the gamma contrast (``RandAdjustContrast``).
        gamma_range: (min, max) gamma.
        prob_histogram_shift: probability of the histogram remapping (``RandHistogramShift``).
        histogram_control_points: (min, max) number of its control points (>= 3).
        prob_scale: probability of multiplying by 1 + U(-scale_factor, scale_factor) (``RandScaleIntensity``).
        scale_factor: largest relative scale.
        prob_shift: probability of adding U(-shift_offset, shift_offset) (``RandShiftIntensity``).
        shift_offset: largest shift.
        prob_noise: probability of Gaussian noise (``RandGaussianNoise``, std drawn in [0, noise_std]).
        noise_std: largest standard deviation of the noise.
        prob_smooth: probability of a Gaussian blur (``RandGaussianSmooth``).
        smooth_sigma: (min, max) sigma of the blur, pixels.
        prob_sharpen: probability of an unsharp-mask sharpening (``RandGaussianSharpen``).
        sharpen_alpha: (min, max) strength of the sharpening.
        preserve_zeros: keep exact zeros of the input at 0.
        axial_per_level: one draw per axial level instead of one for all levels.
        image_keys: keys of the images: (S, Y, Z) sagittal and/or (L, S_ax, H, W) axial (a 4-D image is augmented
            as L stacks of S_ax channels).

    Raises:
        ValueError: a probability outside [0, 1], a negative strength, an empty or inverted range, fewer than 3
            histogram control points, a bias degree below 1.
    """

    def __init__(
        self,
        prob_bias: float = 0.3,
        bias_degree: int = 3,
        bias_coeff_range: tuple[float, float] = (-0.15, 0.15),
        prob_contrast: float = 0.5,
        gamma_range: tuple[float, float] = (0.7, 1.5),
        prob_histogram_shift: float = 0.3,
        histogram_control_points: tuple[int, int] = (5, 10),
        prob_scale: float = 0.5,
        scale_factor: float = 0.15,
        prob_shift: float = 0.3,
        shift_offset: float = 0.05,
        prob_noise: float = 0.5,
        noise_std: float = 0.04,
        prob_smooth: float = 0.1,
        smooth_sigma: tuple[float, float] = (0.25, 1.0),
        prob_sharpen: float = 0.1,
        sharpen_alpha: tuple[float, float] = (1.0, 5.0),
        preserve_zeros: bool = True,
        axial_per_level: bool = False,
        image_keys: Sequence[str] = ("sagittal", "axial"),
    ) -> None:
        if bias_degree < 1:
            raise ValueError(f"bias_degree must be >= 1, got {bias_degree!r}.")
        _check_range("bias_coeff_range", bias_coeff_range, -math.inf, math.inf)
        _check_range("gamma_range", gamma_range, 0.0, math.inf, strict_low=True)
        lo, hi = _check_range("histogram_control_points", histogram_control_points, 3, math.inf)
        if int(lo) != lo or int(hi) != hi:
            raise ValueError(f"histogram_control_points must be integers, got {histogram_control_points!r}.")
        for name, value in (("scale_factor", scale_factor), ("shift_offset", shift_offset), ("noise_std", noise_std)):
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")
        if scale_factor >= 1.0:
            raise ValueError(f"scale_factor must be < 1 (the scale is 1 + U(-f, f)), got {scale_factor!r}.")
        _check_range("smooth_sigma", smooth_sigma, 0.0, math.inf)
        _check_range("sharpen_alpha", sharpen_alpha, 0.0, math.inf)
        if isinstance(image_keys, str):
            raise TypeError(f"image_keys must be a sequence of keys, not the string {image_keys!r}.")
        self.image_keys = tuple(image_keys)
        self.preserve_zeros = preserve_zeros
        self.axial_per_level = axial_per_level
        self.prob_bias = _check_prob("prob_bias", prob_bias)
        # The bias field is drawn on a (1, ...) image of ones and multiplies every channel (MONAI would draw the same
        # field once per channel); the other transforms act on the channel-first image as a whole.
        self._bias = RandBiasField(degree=bias_degree, coeff_range=tuple(bias_coeff_range), prob=1.0)
        self._transforms = [
            RandAdjustContrast(prob=_check_prob("prob_contrast", prob_contrast), gamma=tuple(gamma_range)),
            RandHistogramShift(num_control_points=(int(lo), int(hi)),
                               prob=_check_prob("prob_histogram_shift", prob_histogram_shift)),
            RandScaleIntensity(factors=scale_factor, prob=_check_prob("prob_scale", prob_scale)),
            RandShiftIntensity(offsets=shift_offset, prob=_check_prob("prob_shift", prob_shift)),
            RandGaussianNoise(std=noise_std, prob=_check_prob("prob_noise", prob_noise)),
            RandGaussianSmooth(sigma_x=tuple(smooth_sigma), sigma_y=tuple(smooth_sigma),
                               sigma_z=tuple(smooth_sigma), prob=_check_prob("prob_smooth", prob_smooth)),
            RandGaussianSharpen(alpha=tuple(sharpen_alpha), prob=_check_prob("prob_sharpen", prob_sharpen)),
        ]
        self.set_random_state()

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None
                         ) -> RealScanIntensityAugment:
        """Seeds this transform; its MONAI transforms get seeds drawn from it (as ``monai.transforms.Compose``)."""
        super().set_random_state(seed, state)
        for transform in (self._bias, *self._transforms):
            transform.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data: None = None) -> None:
        """Nothing to draw here: each MONAI transform draws its own parameters when called."""

    def augment_image(self, image: torch.Tensor) -> torch.Tensor:
        """One draw applied to a channel-first image.

        Args:
            image: (C, *spatial) float, 2-D or 3-D spatial.

        Returns:
            a new (C, *spatial) tensor of the same dtype, in [0, 1.5].
        """
        if not torch.any(image != 0):
            return image.clone()  # nothing to see (an absent axial level): stays all zeros
        out = image
        if self.R.rand() < self.prob_bias:
            field = _plain(self._bias(torch.ones((1, *image.shape[1:]), dtype=torch.float32)))
            out = out * field.to(out.dtype)
        for transform in self._transforms:
            out = transform(out)
        out = _plain(out).to(image.dtype).clamp(0.0, 1.5)
        if self.preserve_zeros:
            out = torch.where(image == 0, torch.zeros_like(out), out)
        return out

    def __call__(self, sample: Sample) -> Sample:
        """Augments the images of one sample.

        Args:
            sample: the ``image_keys``: (S, Y, Z) or (L, S_ax, H, W) float tensors; other keys are passed through.

        Returns:
            a new dict; the input and its tensors are not modified.

        Raises:
            KeyError: a missing image key.
            ValueError: an image that is not 3-D or 4-D.
        """
        out = dict(sample)
        for key in self.image_keys:
            if key not in sample:
                raise KeyError(f"the sample has no {key!r} (keys: {sorted(sample)}).")
            image = sample[key]
            if image.ndim == 3:
                out[key] = self.augment_image(image)
            elif image.ndim == 4 and self.axial_per_level:
                out[key] = torch.stack([self.augment_image(level) for level in image])
            elif image.ndim == 4:
                present = image.flatten(1).ne(0).any(dim=1)  # (L,): levels with data share one draw
                shown = image[present]
                out[key] = torch.zeros_like(image)
                out[key][present] = self.augment_image(shown.reshape(-1, *image.shape[2:])).reshape(shown.shape)
            else:
                raise ValueError(f"{key} must be (S, Y, Z) or (L, S, H, W), got shape {tuple(image.shape)}.")
        return out


class TrainingAugment(Randomizable):
    """The training augmentation of a sample: ``SpatialAugment`` then ``RealScanIntensityAugment``.

    Spatial first, so that the bias field and noise are drawn in the frame the model sees (as in nnU-Net and MONAI
    pipelines). The input dict is never modified (``CaseDataset`` caches it); the output is a new dict.

    Args:
        spatial: True for a default ``SpatialAugment``, False for none, or a configured instance.
        intensity: True for a default ``RealScanIntensityAugment``, False for none, or a configured instance.
        seed: seed of the random state (each worker passes its own, e.g. ``seed * 100 + rank``).

    Raises:
        TypeError: ``spatial`` / ``intensity`` neither a bool nor the matching transform.

    Example::

        dataset = CaseDataset(data_dir, split["train"], augment=TrainingAugment(seed=seed * 100 + rank))
    """

    def __init__(self, spatial: bool | SpatialAugment = True, intensity: bool | RealScanIntensityAugment = True,
                 seed: int = 0) -> None:
        self.spatial = self._build("spatial", spatial, SpatialAugment)
        self.intensity = self._build("intensity", intensity, RealScanIntensityAugment)
        self.set_random_state(seed)

    @staticmethod
    def _build(name: str, value, cls):
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            return cls() if value else None
        raise TypeError(f"{name} must be a bool or a {cls.__name__}, got {type(value).__name__}.")

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> TrainingAugment:
        """Seeds this transform and, from it, each part."""
        super().set_random_state(seed, state)
        for part in (self.spatial, self.intensity):
            if part is not None:
                part.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data: None = None) -> None:
        """Nothing to draw here: each part draws its own parameters."""

    def __call__(self, sample: Sample) -> Sample:
        """Augments one sample (see ``SpatialAugment`` and ``RealScanIntensityAugment`` for the keys).

        Returns:
            a new dict with the same keys, shapes and dtypes.
        """
        out = dict(sample)
        if self.spatial is not None:
            out = self.spatial(out)
        if self.intensity is not None:
            out = self.intensity(out)
        return out
