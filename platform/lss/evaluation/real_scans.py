"""Real scans diagnosed as a user's would be (no mask): where the sagittal crop lands and how the levels are named.

Scored against a labelled real set read through its dataset card (``data/cards``): fastcleverseg_vb2 labels the
vertebral bodies T11-L5, so the disc between two labelled bodies is the truth of that level (L1/L2-L4/L5; the
sacrum is not labelled, so L5/S1 is not scored). ``jobs/real.py`` reports these per model; ``bench/real_blind.py``
scores one saved model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lss.anatomy import LEVELS, Severity, vertebra_label

__all__ = ["crop_placement", "labels_on_crop", "level_safety"]


def _records(card: Path, study_ids: list[str]) -> dict[str, Any]:
    """The card's study records by id.

    Raises:
        ValueError: naming the requested ids the card does not list (the first few).
    """
    from lss.data.adapters.card import discover

    records = {r.study_id: r for r in discover(card).records}
    unknown = [sid for sid in study_ids if sid not in records]
    if unknown:
        raise ValueError(f"{len(unknown)} study id(s) are not in {Path(card).name}: {', '.join(unknown[:3])}.")
    return records


def crop_placement(model_path: Path, config, card: Path, study_ids: list[str]) -> tuple[list[float], list[float]]:
    """Where the model's first pass puts the sagittal crop of scans preprocessed as a user's would be (no masks).

    Returns:
        per scan, the distance (mm, sagittal plane) between the middle of that crop and the middle of the crop the
        labels place (centred on the labelled bodies; the model's pass centres between L5/S1 and L1/L2, so some
        offset is by design), and the share of the labelled L1-L5 body voxels that lie inside the crop of the
        model's first pass (what grading needs: 1.0 = every lumbar body is in view).
    """
    from lss.inference.diagnose import without_labels
    from lss.inference.locate import SpineLocator
    from lss.model import load_model
    from lss.preprocessing.transforms import preprocess_study

    locator = SpineLocator(load_model(model_path).eval(), config.preprocess.sagittal_shape[1:],
                           config.preprocess.sagittal_spacing_mm[1:])
    records = _records(card, study_ids)
    distances, coverage = [], []
    for sid in study_ids:
        labelled = preprocess_study(records[sid], config.preprocess)
        blind = preprocess_study(without_labels(records[sid]), config.preprocess, locator)
        # The middle of each crop in patient space (mm): where the labels put it, and where the model placed it.
        centres = [np.asarray(c.sagittal_affine)[:3, :3] @ ((np.array(c.sagittal_image.shape) - 1) / 2.0)
                   + np.asarray(c.sagittal_affine)[:3, 3] for c in (labelled, blind)]
        distances.append(float(np.linalg.norm((centres[0] - centres[1])[1:])))  # in the sagittal plane
        lumbar = [vertebra_label(name) for name in ("L1", "L2", "L3", "L4", "L5")]
        voxels = np.argwhere(np.isin(labelled.sagittal_labels, lumbar)).T.astype(float)
        world = labelled.sagittal_affine[:3, :3] @ voxels + labelled.sagittal_affine[:3, 3:4]
        inverse = np.linalg.inv(blind.sagittal_affine)
        inside_vox = inverse[:3, :3] @ world + inverse[:3, 3:4]
        size = np.array(blind.sagittal_image.shape)[:, None]
        coverage.append(float(np.all((inside_vox > -0.5) & (inside_vox < size - 0.5), axis=0).mean()))
    return distances, coverage


def labels_on_crop(labelled, blind) -> np.ndarray:
    """(Y, Z) native labels of ``labelled``'s crop, resampled (nearest) onto the mid-sagittal slice of ``blind``'s
    crop through patient space; 0 where the labelled crop does not reach."""
    x, ny, nz = blind.sagittal_image.shape[0] // 2, *blind.sagittal_image.shape[1:]
    yy, zz = np.meshgrid(np.arange(ny), np.arange(nz), indexing="ij")
    voxels = np.stack([np.full(yy.size, x), yy.ravel(), zz.ravel(), np.ones(yy.size)])
    inside = np.linalg.inv(labelled.sagittal_affine) @ (blind.sagittal_affine @ voxels)
    index = np.round(inside[:3]).astype(int)
    shape = np.array(labelled.sagittal_labels.shape)[:, None]
    valid = np.all((index >= 0) & (index < shape), axis=0)
    out = np.zeros(yy.size, dtype=labelled.sagittal_labels.dtype)
    out[valid] = labelled.sagittal_labels[tuple(index[:, valid])]
    return out.reshape(ny, nz)


def level_safety(model_path: Path, config, card: Path, study_ids: list[str]) -> dict[str, Any]:
    """Level naming and what the diagnosis states, on held-out real scans of healthy subjects.

    Naming: the scan is preprocessed as a user's would be (crop placed by the model's first pass, no mask) and its
    labels are carried onto that crop; the disc the model's naming puts at each level must overlap the disc derived
    between that level's two labelled bodies (``lss.model.level_targets``;
    L1/L2-L4/L5, since the sacrum is not labelled). Safety: the same scan is diagnosed as a user's would be, without
    its mask; every level of these healthy subjects stated Moderate or Severe without a review flag is a false
    alarm, and the share of assessable levels is the coverage.
    """
    from lss.inference.diagnose import Diagnoser, without_labels
    from lss.inference.locate import SpineLocator
    from lss.inference.predict import column_spacing, predict_cases
    from lss.model import load_model
    from lss.model.level_targets import level_disc_targets
    from lss.preprocessing.transforms import preprocess_study

    model = load_model(model_path).eval()
    locator = SpineLocator(model, config.preprocess.sagittal_shape[1:], config.preprocess.sagittal_spacing_mm[1:])
    records = _records(card, study_ids)
    named = right = 0
    for sid in study_ids:
        # The crop a user's scan gets (placed by the model's first pass, no mask), with the labels carried onto it.
        blind = preprocess_study(without_labels(records[sid]), config.preprocess, locator)
        labelled = preprocess_study(records[sid], config.preprocess)
        labels = labels_on_crop(labelled, blind)
        prediction = predict_cases(model, [blind.arrays()], [sid], [blind.info])[0]
        truth = level_disc_targets(labels, column_spacing(blind.sagittal_affine, (1, 2)), LEVELS,
                                   derive_from_bodies=True)
        for li in range(len(LEVELS)):
            if truth[li].any():
                named += 1
                disc = prediction.level_discs[li]
                right += int(bool(disc.any()) and bool((disc & truth[li]).sum() * 2 > disc.sum()))
    diagnoser = Diagnoser(model_path, config)
    counts = {"levels": 0, "assessable": 0, "graded": 0, "withheld": 0, "moderate_severe_unflagged": 0,
              "moderate_severe_flagged": 0}
    for sid in study_ids:
        findings = diagnoser.diagnose_record(without_labels(records[sid])).findings
        for finding in findings.levels:
            counts["levels"] += 1
            counts["assessable"] += int(finding.assessable)
            counts["graded"] += int(finding.stated_severity is not None)
            counts["withheld"] += int(finding.withheld)
            if finding.stated_severity in (Severity.MODERATE, Severity.SEVERE):
                counts["moderate_severe_flagged" if finding.review else "moderate_severe_unflagged"] += 1
    return {"naming_levels": named, "naming_right": right, **counts}
