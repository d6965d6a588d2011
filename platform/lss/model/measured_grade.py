"""The grade of a level from the dural sac measured on the model's own axial mask, fitted after training.

The published cut-offs (``lss.anatomy.grade_from_measurements``) assume an exact measurement. The model's masks are
not exact, and not in the same way at every size: a network that saw few narrow sacs draws them wider, so a Severe
sac tends to measure above 75 mm2. A multinomial logistic model of the measured area and AP diameter, fitted on the
training studies' levels after training (each grade weighed equally), learns where this model's measurements put
the boundaries. Where an axial level is measured, its logits replace the head's; the head still grades the levels
read from the sagittal view alone, and the findings still compare the grade with the published cut-offs (a grade
they contradict is withheld).

The README's Results say what it changes on the fixed synthetic evaluation set (``lss evaluate`` reports the head
alone beside it).

    grade = fit_measured_grade(areas_mm2, aps_mm, grades, spacing_mm=(0.9, 0.9))
    logits = grade.logits(areas_mm2, aps_mm)                    # (N, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from lss.anatomy import SEVERITIES

__all__ = ["MeasuredGrade", "fit_measured_grade", "measure_sac"]


def _features(area_mm2: np.ndarray, ap_mm: np.ndarray) -> np.ndarray:
    """(N, 4): area / 100 mm2 and AP / 10 mm, and both clipped at the normal boundary (piecewise-linear: a sac far
    above the cut-offs is not "more normal" without limit)."""
    area, ap = np.asarray(area_mm2, float) / 100.0, np.asarray(ap_mm, float) / 10.0
    return np.stack([area, ap, np.minimum(area, 1.3), np.minimum(ap, 1.3)], axis=1)


def measure_sac(logits: torch.Tensor, offset: float, spacing_mm: Sequence[float]) -> tuple[float, float] | None:
    """The dural sac area (mm2) and midline AP diameter (mm) of one axial slice as every report measures them: the
    largest connected region of the canal argmax after the canal offset; None when there is no canal at all.

    Args:
        logits: (K, H, W) structure logits of the slice.
        offset: the model's canal logit offset (``lss.model.canal_offset``).
        spacing_mm: (2,) mm per pixel along H and W.
    """
    from lss.model.canal_offset import canal_margin
    from lss.reporting.measurements import dural_sac_mm

    return dural_sac_mm(canal_margin(logits.detach().float().cpu(), channel_dim=0) + offset > 0, spacing_mm)


@dataclass
class MeasuredGrade:
    """A model's grade from its own measurements (identity until fitted: the head grades every level).

    Attributes:
        coefficients: (3, 4) logistic coefficients on the standardised features, ``SEVERITIES`` order.
        intercepts: (3,).
        mean, scale: (4,) standardisation of the features.
        spacing_mm: the axial pixel size the measurements were made at (the preprocessing's axial spacing).
        fitted: whether it was fitted.
        n_levels: training levels it was fitted on; counts: per grade.
        note: how it was fitted, or why not.
    """

    coefficients: list[list[float]] = field(default_factory=list)
    intercepts: list[float] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    spacing_mm: tuple[float, float] = (1.0, 1.0)
    fitted: bool = False
    n_levels: int = 0
    counts: list[int] = field(default_factory=list)
    note: str = "not fitted: the head grades every level"

    def logits(self, area_mm2: Sequence[float] | np.ndarray, ap_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """(N, 3) grade logits of N measured levels.

        Raises:
            RuntimeError: when not fitted.
        """
        if not self.fitted:
            raise RuntimeError("MeasuredGrade is not fitted.")
        x = (_features(np.atleast_1d(area_mm2), np.atleast_1d(ap_mm)) - np.asarray(self.mean)) / np.asarray(self.scale)
        return x @ np.asarray(self.coefficients).T + np.asarray(self.intercepts)

    def apply(self, head_logits: torch.Tensor, axial_logits: torch.Tensor, present: torch.Tensor,
              offset: float) -> torch.Tensor:
        """The head's logits with each measured level's replaced by this grade's.

        Args:
            head_logits: (B, L, 3).
            axial_logits: (B, L, K, H, W) structure logits of each level's axial slice.
            present: (B, L) 1 where a level has an axial image.
            offset: the model's canal offset.

        Returns:
            (B, L, 3) logits; a level without an axial image or without any canal on it keeps the head's.
        """
        if not self.fitted:
            return head_logits
        out = head_logits.clone()
        for b, li in torch.nonzero(present > 0).tolist():
            measured = measure_sac(axial_logits[b, li], offset, self.spacing_mm)
            if measured is not None:
                out[b, li] = torch.as_tensor(self.logits([measured[0]], [measured[1]])[0], dtype=out.dtype,
                                             device=out.device)
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> MeasuredGrade:
        """The grade saved by ``as_dict``; None (a model saved before it existed) is the identity."""
        if not values:
            return cls()
        return cls(**{**values, "spacing_mm": tuple(values.get("spacing_mm", (1.0, 1.0)))})


def fit_measured_grade(area_mm2: Sequence[float], ap_mm: Sequence[float], grades: Sequence[int],
                       spacing_mm: Sequence[float], strength: float = 0.1) -> MeasuredGrade:
    """Fits the grade on measured levels with known grades (scikit-learn's multinomial logistic regression, every
    grade weighed equally: ``class_weight="balanced"``).

    Args:
        area_mm2, ap_mm: per level, the sac measured on the model's mask (``measure_sac``).
        grades: per level, the true grade index (``SEVERITIES`` order).
        spacing_mm: the axial pixel size of those measurements.
        strength: the inverse L2 regularisation ``C``.

    Returns:
        The fitted grade; the identity, with a note, unless every grade has at least 2 levels.

    Raises:
        ValueError: when the sequences differ in length or hold a non-finite value.
    """
    from sklearn.linear_model import LogisticRegression

    area, ap, y = np.asarray(area_mm2, float), np.asarray(ap_mm, float), np.asarray(grades, int)
    if not len(area) == len(ap) == len(y):
        raise ValueError(f"area_mm2, ap_mm and grades differ in length: {len(area)}, {len(ap)}, {len(y)}.")
    if not (np.all(np.isfinite(area)) and np.all(np.isfinite(ap))):
        raise ValueError("the measurements must be finite.")
    counts = np.bincount(y, minlength=len(SEVERITIES)) if y.size else np.zeros(len(SEVERITIES), int)
    if y.size == 0 or counts.min() < 2:
        return MeasuredGrade(n_levels=int(y.size), counts=counts.tolist(),
                             note=f"not fitted: every grade needs 2 measured training levels, got {counts.tolist()}")
    x = _features(area, ap)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=float(strength), class_weight="balanced", max_iter=5000)
    model.fit((x - mean) / scale, y)
    return MeasuredGrade(coefficients=model.coef_.tolist(), intercepts=model.intercept_.tolist(),
                         mean=mean.tolist(), scale=scale.tolist(),
                         spacing_mm=(float(spacing_mm[0]), float(spacing_mm[1])), fitted=True,
                         n_levels=int(y.size), counts=counts.tolist(),
                         note=f"fitted on {y.size} measured training levels ({counts.tolist()} per grade)")
