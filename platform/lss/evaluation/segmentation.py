"""Segmentation scores of a model on labelled cases, counting only what each case labels.

The same ``SegmentationMeter`` as validation and ``lss evaluate``; a real set that labels vertebral bodies only is
scored on its bodies (Dice and HD95 in mm), never on the discs or canal it leaves unlabelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lss.anatomy import Structure

__all__ = ["score_segmentation", "bootstrap_interval"]


def bootstrap_interval(values, repeats: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the finite ``values`` (NaN, NaN when there are fewer than 2)."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(repeats, len(values)), replace=True).mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))


def score_segmentation(model, data_dir: str | Path, study_ids: list[str], batch_size: int = 4,
                       device: str | torch.device = "cpu") -> dict[str, Any]:
    """Dice and HD95 per labelled structure of a model on preprocessed labelled cases (mid-sagittal slice).

    Args:
        model: an ``LSSModel`` or a model file.
        data_dir: a ``lss preprocess`` output folder.
        study_ids: the studies to score (all must be labelled cases of ``data_dir``).

    Returns:
        ``{"summary": SegmentationMeter.compute(), "per_case": [{"study_id", "dice_<s>", "hd95_<s>"}, ...]}`` with
        NaN where a case does not label a structure.

    Raises:
        ValueError: for a study that is not a labelled case of ``data_dir``.
    """
    from lss.data.cases import INDEX_NAME, load_case, read_jsonl
    from lss.inference.predict import column_spacing
    from lss.metrics import SegmentationMeter
    from lss.model import case_to_sample, collate_samples, load_model

    if isinstance(model, (str, Path)):
        model = load_model(model, map_location=device)
    model = model.eval()
    rows = {row["study_id"]: row for row in read_jsonl(Path(data_dir) / INDEX_NAME)}
    missing = [s for s in study_ids if s not in rows or not rows[s].get("has_sagittal_labels")]
    if missing:
        raise ValueError(f"{len(missing)} studies are not labelled cases of {data_dir}: {missing[:5]}.")
    meter = SegmentationMeter(num_classes=len(Structure))
    for start in range(0, len(study_ids), batch_size):
        chunk = study_ids[start:start + batch_size]
        cases = [load_case(Path(data_dir) / rows[s]["path"]) for s in chunk]
        batch = collate_samples([case_to_sample(c, model.config.sagittal_slices) for c in cases])
        with torch.no_grad():
            out = model(batch["sagittal"].to(device), None, None)
        spacing = [column_spacing(c["sagittal_affine"], (1, 2)) for c in cases]
        meter.update(out.sagittal_logits.cpu(), batch["sagittal_target"], spacing, batch["sagittal_partition"])
    per_case_arrays = meter.per_case()
    per_case = [{"study_id": s, **{k: float(v[i]) for k, v in per_case_arrays.items()}}
                for i, s in enumerate(study_ids)]
    return {"summary": meter.compute(), "per_case": per_case}
