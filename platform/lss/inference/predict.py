"""Runs the model on preprocessed cases and keeps, per study, what the findings and the evidence images need.

The model sees the 2.5D inputs of ``lss.model.case_to_sample``; this module turns its batched outputs into one
``StudyPrediction`` per study, in NumPy, with the attention maps brought up to image resolution so that they can be
laid over the image they explain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lss.anatomy import LEVELS
from lss.model.canal_offset import CanalOffset
from lss.model.input_range import image_statistics
from lss.reporting.levels import name_levels
from lss.reporting.measurements import disc_centre_ras, principal_axes

__all__ = ["StudyPrediction", "predict_cases", "disc_centres", "disc_centres_of_mask", "column_spacing", "fov_z_of"]


def column_spacing(affine: np.ndarray, columns: tuple[int, int]) -> tuple[float, float]:
    """Pixel spacing (mm) of two voxel axes: the norms of the affine's columns."""
    affine = np.asarray(affine, dtype=np.float64)
    return float(np.linalg.norm(affine[:3, columns[0]])), float(np.linalg.norm(affine[:3, columns[1]]))


@dataclass
class StudyPrediction:
    """The model's output for one study, on the preprocessed grid.

    Attributes:
        study_id: the study.
        sagittal_image: (Y, Z) the mid-sagittal slice of the input (posterior -> anterior, inferior -> superior).
        sagittal_mask: (Y, Z) int predicted structure index (``lss.anatomy.Structure`` order).
        sagittal_spacing: (2,) mm per pixel along Y and Z.
        sagittal_slice: index of the mid-sagittal slice in the sagittal crop.
        sagittal_affine: (4, 4) RAS affine of the sagittal crop.
        level_attention: (L, Y, Z) the sagittal attention of each level prompt, upsampled to the image, each map
            summing to 1.
        axial_present: (L,) bool, True where the level had axial data.
        axial_images: (L, H, W) the centre axial slice of each level (zeros where absent); H left -> right,
            W posterior -> anterior.
        axial_masks: (L, H, W) int predicted structure index (0 where absent).
        axial_spacing: (L, 2) mm per pixel along H and W.
        axial_attention: (L, H, W) each level prompt's attention over its own axial slice (zeros where absent).
        axial_affines: (L, 4, 4) RAS affines of the axial crops.
        severity_probs: (L, 3) probabilities of Normal/Mild, Moderate, Severe.
        canal_area_mm2: (L,) the model's soft canal area on its axial masks (0 where absent).
        level_features: (L, F) the features the severity head read (the learned report generator reads them too).
        info: the preprocessing record (series used, slices, warnings).
        sagittal_stack: (S, Y, Z) uint8 every slice of the sagittal crop (0..255 for 0..1), for browsing; the model
            segments only ``sagittal_slice`` of it. None for predictions made before it existed.
        level_discs: (L, Y, Z) bool, each level's disc as named by counting from the sacrum
            (``lss.reporting.levels``); the level prompts' attention was restricted to it. None when not named here
            (the findings then name the levels themselves).
        naming: ``LevelNaming.summary()`` of that naming (empty when ``level_discs`` is None).
        abstain_threshold: the model's calibrated confidence below which a grade is withheld (0: never).
        input_statistics: ``lss.model.input_range.image_statistics`` of the mid-sagittal slice.
        input_outside: one sentence per statistic outside the range the model was trained on (then the study is
            not assessable).
    """

    study_id: str
    sagittal_image: np.ndarray
    sagittal_mask: np.ndarray
    sagittal_spacing: tuple[float, float]
    sagittal_slice: int
    sagittal_affine: np.ndarray
    level_attention: np.ndarray
    axial_present: np.ndarray
    axial_images: np.ndarray
    axial_masks: np.ndarray
    axial_spacing: np.ndarray
    axial_attention: np.ndarray
    axial_affines: np.ndarray
    severity_probs: np.ndarray
    canal_area_mm2: np.ndarray
    level_features: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    sagittal_stack: np.ndarray | None = None
    level_discs: np.ndarray | None = None
    naming: dict[str, Any] = field(default_factory=dict)
    abstain_threshold: float = 0.0
    input_statistics: dict[str, float] = field(default_factory=dict)
    input_outside: list[str] = field(default_factory=list)

    @property
    def levels(self) -> tuple[str, ...]:
        return LEVELS


def _display_bytes(image: np.ndarray) -> np.ndarray:
    """Intensities scaled to 0..1 (the preprocessing's percentile scaling) -> uint8, a quarter of the float bytes."""
    return np.round(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) attention -> (N, H, W), bilinear, renormalised to sum to 1 per map."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
    up = up / up.flatten(1).sum(dim=1).clamp_min(1e-12)[:, None, None]
    return up.cpu().numpy()


def predict_cases(
    model: torch.nn.Module,
    cases: Sequence[Mapping[str, np.ndarray]],
    study_ids: Sequence[str],
    infos: Sequence[Mapping[str, Any]] | None = None,
    device: str | torch.device = "cpu",
) -> list[StudyPrediction]:
    """Predicts a batch of preprocessed cases.

    Args:
        model: an ``lss.model.LSSModel`` (put in eval mode here).
        cases: arrays of ``load_case`` / ``PreprocessedStudy.arrays()``; all with the same shapes.
        study_ids: one id per case.
        infos: the preprocessing ``info`` of each case (optional).
        device: where the model runs.

    Raises:
        ValueError: for an empty batch, a length mismatch, or axial inputs that do not fit the model.
    """
    from lss.model import case_to_sample, collate_samples

    if not cases:
        raise ValueError("predict_cases needs at least one case.")
    if len(study_ids) != len(cases) or (infos is not None and len(infos) != len(cases)):
        raise ValueError(f"{len(cases)} cases but {len(study_ids)} study ids"
                         + ("" if infos is None else f" and {len(infos)} infos") + ".")
    for sid, case in zip(study_ids, cases, strict=True):
        if case["axial_image"].shape[1] != model.axial_slices:
            raise ValueError(f"study {sid}: {case['axial_image'].shape[1]} axial slices per level, the model takes "
                             f"{model.axial_slices}.")
    model = model.eval()
    device = torch.device(device)
    batch = collate_samples([case_to_sample(dict(c), model.config.sagittal_slices) for c in cases])
    inputs = (batch["sagittal"].to(device), batch["axial"].to(device), batch["axial_present"].to(device))
    # Pass 1 segments and the levels are named on its mask by counting from the sacrum; pass 2 grades each level
    # with its prompt's attention held to the disc that anatomy named.
    sagittal_mask, namings = _name_levels_of(model, inputs[0], cases, infos)
    regions = np.stack([[n.discs[level] if n.discs[level] is not None else np.zeros(sagittal_mask.shape[1:], bool)
                         for level in LEVELS] for n in namings])
    with torch.no_grad():
        out = model(*inputs, level_regions=torch.from_numpy(regions).to(device))
    input_range = getattr(model, "input_range", None)
    statistics = [image_statistics(np.asarray(case["sagittal_image"][case["sagittal_image"].shape[0] // 2]),
                                   _inside(sagittal_mask.shape[1:], fov_z_of(infos[b] if infos is not None else None)))
                  for b, case in enumerate(cases)]
    calibration = getattr(model, "calibration", None)
    if calibration is not None:
        probs = calibration.probabilities(out.severity_logits, inputs[2]).cpu().numpy()
        threshold = float(calibration.abstain_threshold)
    else:
        probs, threshold = out.severity_logits.softmax(dim=-1).cpu().numpy(), 0.0
    level_attention = out.level_attention(model.prompts)
    n_levels = len(LEVELS)
    results = []
    for b, (sid, case) in enumerate(zip(study_ids, cases, strict=True)):
        centre = case["sagittal_image"].shape[0] // 2
        image = np.asarray(case["sagittal_image"][centre], dtype=np.float32)
        present = np.asarray(case["axial_present"], dtype=bool)
        axial_images = np.asarray(case["axial_image"][:, case["axial_image"].shape[1] // 2], dtype=np.float32)
        axial_images = axial_images * present[:, None, None]
        hw = tuple(axial_images.shape[1:])
        if out.axial_logits is not None:
            # The canal offset fitted on validation makes the measured sac area unbiased (lss.model.canal_offset).
            axial_logits = getattr(model, "canal_offset", CanalOffset()).apply(out.axial_logits[b], channel_dim=1)
            axial_masks = axial_logits.argmax(dim=1).cpu().numpy().astype(np.int16) * present[:, None, None]
            axial_attention = _upsample(out.axial_attention[b], hw) * present[:, None, None]
        else:
            axial_masks = np.zeros((n_levels, *hw), dtype=np.int16)
            axial_attention = np.zeros((n_levels, *hw), dtype=np.float32)
        results.append(StudyPrediction(
            study_id=str(sid),
            sagittal_image=image,
            sagittal_mask=sagittal_mask[b],
            sagittal_spacing=column_spacing(case["sagittal_affine"], (1, 2)),
            sagittal_slice=int(centre),
            sagittal_affine=np.asarray(case["sagittal_affine"], dtype=np.float64),
            level_attention=_upsample(level_attention[b], tuple(image.shape)),
            axial_present=present,
            axial_images=axial_images,
            axial_masks=axial_masks,
            axial_spacing=np.array([column_spacing(a, (0, 1)) for a in case["axial_affines"]]),
            axial_attention=axial_attention.astype(np.float32),
            axial_affines=np.asarray(case["axial_affines"], dtype=np.float64),
            severity_probs=probs[b],
            canal_area_mm2=out.canal_area_mm2[b].cpu().numpy(),
            level_features=out.level_features[b].cpu().numpy(),
            info=dict(infos[b]) if infos is not None else {},
            sagittal_stack=_display_bytes(case["sagittal_image"]),
            level_discs=regions[b],
            naming=namings[b].summary(),
            abstain_threshold=threshold,
            input_statistics={k: round(v, 4) for k, v in statistics[b].items()},
            input_outside=[] if input_range is None else input_range.outside(statistics[b]),
        ))
    return results


def _inside(shape: tuple[int, int], fov_z: tuple[int, int] | None) -> np.ndarray:
    inside = np.ones(shape, bool)
    if fov_z is not None:
        inside[:, : fov_z[0]] = inside[:, fov_z[1] + 1 :] = False
    return inside


def disc_centres(model: torch.nn.Module, cases: Sequence[Mapping[str, Any]],
                 infos: Sequence[Mapping[str, Any]] | None = None,
                 device: str | torch.device = "cpu") -> list[dict[str, tuple[float, float, float] | None]]:
    """Each level's disc centre in RAS mm, from the sagittal branch alone: what matching unlabelled axial series to
    the levels needs (``lss.inference.prepare``), without grading.

    The sagittal segmentation does not depend on the axial input, so the mask, the level naming (counted from the
    sacrum) and the disc centres are those of ``predict_cases``'s first pass and of ``measure_study``, at a part of
    the cost (one forward of one branch, no measurements).

    Args:
        model: an ``ExplainableLSSModel``.
        cases: arrays of preprocessed studies (``PreprocessedStudy.arrays()``); only the sagittal ones are read.
        infos: each study's preprocessing ``info`` (its ``sagittal_fov_z`` tells a level beyond the image's edge from
            one not found).
        device: where the model runs.

    Returns:
        Per study, level -> (R, A, S) in mm, or None where no disc was named.
    """
    from lss.model import case_to_sample, collate_samples

    if not cases:
        raise ValueError("disc_centres needs at least one study.")
    model = model.eval()
    batch = collate_samples([case_to_sample(dict(c), model.config.sagittal_slices) for c in cases])
    masks = _sagittal_masks(model, batch["sagittal"].to(device))
    return [disc_centres_of_mask(masks[b], case["sagittal_affine"], int(case["sagittal_image"].shape[0] // 2),
                                 fov_z_of(infos[b] if infos is not None else None))
            for b, case in enumerate(cases)]


def disc_centres_of_mask(mask: np.ndarray, sagittal_affine: np.ndarray, sagittal_slice: int,
                         fov_z: tuple[int, int] | None = None) -> dict[str, tuple[float, float, float] | None]:
    """Each level's disc centre in RAS mm on a mid-sagittal mask: the levels named by counting from the sacrum
    (``lss.reporting.levels.name_levels``), each disc's centre as ``lss.reporting.measure_study`` takes it.

    Args:
        mask: (Y, Z) labels of the mid-sagittal slice.
        sagittal_affine: (4, 4) voxel -> RAS of the sagittal input.
        sagittal_slice: the index of that slice in the input.
        fov_z: the Z range of the acquired image in the crop (``fov_z_of``), or None.
    """
    naming = name_levels(mask, column_spacing(sagittal_affine, (1, 2)), fov_z)
    return _centres(naming.discs, sagittal_affine, sagittal_slice)


def _sagittal_masks(model: torch.nn.Module, sagittal: torch.Tensor) -> np.ndarray:
    """(B, Y, Z) int16 mid-sagittal masks from the sagittal branch alone: the sagittal segmentation does not depend
    on the axial input."""
    with torch.no_grad():
        return model(sagittal).sagittal_logits.argmax(dim=1).cpu().numpy().astype(np.int16)


def _name_levels_of(model: torch.nn.Module, sagittal: torch.Tensor, cases: Sequence[Mapping[str, Any]],
                    infos: Sequence[Mapping[str, Any]] | None):
    """The first pass: (B, Y, Z) int16 sagittal masks and each study's level naming."""
    masks = _sagittal_masks(model, sagittal)
    namings = [name_levels(masks[b], column_spacing(case["sagittal_affine"], (1, 2)),
                           fov_z_of(infos[b] if infos is not None else None)) for b, case in enumerate(cases)]
    return masks, namings


def _centres(discs: Mapping[str, np.ndarray | None], sagittal_affine: np.ndarray,
             sagittal_slice: int) -> dict[str, tuple[float, float, float] | None]:
    spacing = column_spacing(sagittal_affine, (1, 2))
    return {level: None if disc is None else
            disc_centre_ras(principal_axes(disc, spacing)[0], sagittal_slice, sagittal_affine)
            for level, disc in discs.items()}


def fov_z_of(info: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """The Z pixels of the sagittal crop inside the acquired image (``info["sagittal_fov_z"]``), if recorded."""
    value = (info or {}).get("sagittal_fov_z")
    return None if value is None else (int(value[0]), int(value[1]))
