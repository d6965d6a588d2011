"""From a preprocessed case (``lss.preprocessing``) to the model's 2.5D inputs and training targets.

Sagittal: the mid-sagittal slice of the (X, Y, Z) RAS crop plus ``sagittal_slices // 2`` neighbours on each side as
channels -> ``(S, Y, Z)`` = (slices, posterior->anterior, inferior->superior). Axial: the case's ``(L, S, H, W)``
stacks as they are (S slices as channels, per level). Targets are the structures (``lss.anatomy.Structure``) on the
centre slice of each input, the severity per level and, for the attention, where each level's disc is.
"""

from __future__ import annotations

import numpy as np
import torch

from lss.anatomy import LEVELS, Structure, to_structure_mask
from lss.model.level_targets import level_disc_targets

__all__ = ["case_to_sample", "collate_samples", "sagittal_target", "SAMPLE_KEYS"]

SAMPLE_KEYS = ("sagittal", "axial", "axial_present", "severity", "area_mm2", "ap_mm",
               "sagittal_target", "sagittal_partition", "axial_target", "level_target")


def sagittal_target(case: dict[str, np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray]:
    """The structure target of one sagittal slice of a labelled case, and the case's partition.

    Structures the case does not label are merged as its partition says (``lss.anatomy.label_partition``); with
    ``labelled_span_only``, the slice is unknown (-1) above and below the superior-inferior span of the case's
    labelled voxels (a body mask that stops at T11 and L5 says nothing about T10 or the sacrum).

    Returns:
        (Y, Z) int64 target (-1 unknown) and (C,) int64 partition (the identity for a fully labelled case).
    """
    labels = case["sagittal_labels"]
    partition = np.asarray(case.get("label_partition", np.arange(len(Structure)))).astype(np.int64)
    target = partition[to_structure_mask(labels[index]).astype(np.int64)]
    if bool(np.asarray(case.get("labelled_span_only", False))):
        labelled_z = np.flatnonzero((labels != 0).any(axis=(0, 1)))
        if labelled_z.size:
            target[:, : labelled_z[0]] = -1
            target[:, labelled_z[-1] + 1 :] = -1
        else:
            target[:] = -1
    return target, partition


def _centre_window(size: int, count: int) -> np.ndarray:
    centre = size // 2
    return np.clip(np.arange(centre - count // 2, centre + count // 2 + 1), 0, size - 1)


def _plane_spacing(case: dict[str, np.ndarray]) -> tuple[float, float]:
    """(Y, Z) pixel spacing in mm of the sagittal crop (the norms of its affine's columns; 1 mm when unknown)."""
    if "sagittal_affine" not in case:
        return 1.0, 1.0
    affine = np.asarray(case["sagittal_affine"], dtype=np.float64)
    return float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 2]))


def _bodies_alone(partition: np.ndarray) -> bool:
    """Whether labels 1..25 are vertebral bodies alone (not whole vertebrae, as SPIDER labels them)."""
    return int(partition[Structure.POSTERIOR_ELEMENTS.index]) != int(partition[Structure.VERTEBRAL_BODY.index])


def case_to_sample(case: dict[str, np.ndarray], sagittal_slices: int = 3) -> dict[str, torch.Tensor]:
    """One case's tensors.

    Args:
        case: arrays of ``lss.data.cases.load_case``.
        sagittal_slices: 2.5D context of the sagittal input (odd).

    Returns:
        sagittal (S, Y, Z) float; axial (L, S_ax, H, W) float; axial_present (L,) bool; severity (L,) long (-1
        unknown); area_mm2, ap_mm (L,) float (NaN unknown); and where the case has labels: sagittal_target (Y, Z)
        long, axial_target (L, H, W) long (-1 where a level has no axial data), level_target (L, Y, Z) bool (the
        disc of each level on the mid-sagittal slice: its disc label, or where the case labels vertebral bodies
        alone and not the disc, the disc derived between the level's two labelled bodies,
        ``lss.model.level_targets``). Missing labels are all -1 / False.
    """
    if sagittal_slices % 2 == 0:
        raise ValueError(f"sagittal_slices must be odd, got {sagittal_slices}.")
    image = case["sagittal_image"].astype(np.float32)
    window = _centre_window(image.shape[0], sagittal_slices)
    centre = image.shape[0] // 2
    sample = {
        "sagittal": torch.from_numpy(image[window]),
        "axial": torch.from_numpy(case["axial_image"].astype(np.float32)),
        "axial_present": torch.from_numpy(case["axial_present"].astype(bool)),
        "severity": torch.from_numpy(case["severity"].astype(np.int64)),
        "area_mm2": torch.from_numpy(case["area_mm2"].astype(np.float32)),
        "ap_mm": torch.from_numpy(case["ap_mm"].astype(np.float32)),
    }
    spatial = image.shape[1:]
    n_levels, n_slices, h, w = case["axial_image"].shape
    if "sagittal_labels" in case:
        labels = case["sagittal_labels"][centre]
        target, partition = sagittal_target(case, centre)
        sample["sagittal_target"] = torch.from_numpy(target)
        sample["sagittal_partition"] = torch.from_numpy(partition)
        sample["level_target"] = torch.from_numpy(level_disc_targets(
            labels, _plane_spacing(case), LEVELS, derive_from_bodies=_bodies_alone(partition)))
    else:
        sample["sagittal_target"] = torch.full(spatial, -1, dtype=torch.int64)
        sample["sagittal_partition"] = torch.arange(len(Structure), dtype=torch.int64)
        sample["level_target"] = torch.zeros((len(LEVELS), *spatial), dtype=torch.bool)
    if "axial_labels" in case:
        axial = to_structure_mask(case["axial_labels"][:, n_slices // 2]).astype(np.int64)
        axial[~case["axial_present"].astype(bool)] = -1
        sample["axial_target"] = torch.from_numpy(axial)
    else:
        sample["axial_target"] = torch.full((n_levels, h, w), -1, dtype=torch.int64)
    return sample


def collate_samples(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stacks samples into a batch (every key gains a leading B)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples.")
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
