"""What the model was trained on, in a few image statistics: an input far outside that range is not read.

A segmentation network answers on any image, and a blank volume, noise or a scan of another body part can still
come out as something disc-shaped. Before the levels are graded, a handful of statistics of the preprocessed
mid-sagittal slice (inside the acquired field of view only) are compared with the range they took over the training
studies, widened by a margin. A study outside it is not assessable, with the statistic and the range in the reason
(``lss.reporting.plausibility``).

Statistics (the slice is scaled to 0..1 by the preprocessing's percentiles):

- ``mean``, ``std``: brightness and contrast;
- ``foreground``: share of pixels above 0.1 (tissue rather than air);
- ``roughness``: mean absolute difference of neighbouring pixels over ``std`` (noise is rough, anatomy smooth).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["STATISTICS", "image_statistics", "InputRange", "fit_input_range"]

STATISTICS = ("mean", "std", "foreground", "roughness")


def image_statistics(image: np.ndarray, inside: np.ndarray | None = None) -> dict[str, float]:
    """The statistics of one preprocessed mid-sagittal slice.

    Args:
        image: (Y, Z) intensities scaled to about 0..1.
        inside: (Y, Z) bool, the pixels inside the acquired field of view (default: all).

    Raises:
        ValueError: for an image that is not 2D or a mask of another shape.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2D (Y, Z), got shape {image.shape}.")
    inside = np.ones(image.shape, bool) if inside is None else np.asarray(inside, bool)
    if inside.shape != image.shape:
        raise ValueError(f"inside must have the image's shape {image.shape}, got {inside.shape}.")
    values = image[inside]
    if values.size < 4:
        return {name: 0.0 for name in STATISTICS}
    std = float(values.std())
    both = inside[1:, :] & inside[:-1, :]
    steps = np.abs(np.diff(image, axis=0))[both]
    both = inside[:, 1:] & inside[:, :-1]
    steps = np.concatenate([steps, np.abs(np.diff(image, axis=1))[both]])
    return {
        "mean": float(values.mean()),
        "std": std,
        "foreground": float((values > 0.1).mean()),
        "roughness": float(steps.mean() / std) if std > 1e-6 and steps.size else 0.0,
    }


@dataclass
class InputRange:
    """Per statistic, the (low, high) range the training studies spanned, widened by a margin.

    Attributes:
        bounds: statistic name -> (low, high); empty means nothing is checked (a model trained before this existed).
        studies: how many training studies the range was fitted on.
    """

    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    studies: int = 0

    def outside(self, statistics: dict[str, float]) -> list[str]:
        """One sentence per statistic outside its range (empty when the input is like the training data)."""
        out = []
        for name, (low, high) in self.bounds.items():
            value = statistics.get(name)
            if value is not None and not low <= value <= high:
                out.append(f"image {name} {value:.3g} is outside the range of the training images ({low:.3g} to "
                           f"{high:.3g})")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"bounds": {k: [float(v[0]), float(v[1])] for k, v in self.bounds.items()}, "studies": self.studies}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> InputRange:
        if not data:
            return cls()
        return cls(bounds={k: (float(v[0]), float(v[1])) for k, v in data.get("bounds", {}).items()},
                   studies=int(data.get("studies", 0)))


def fit_input_range(statistics: Iterable[dict[str, float]], quantiles: tuple[float, float] = (0.005, 0.995),
                    margin: float = 0.5, min_studies: int = 8) -> InputRange:
    """The range of each statistic over training studies: the ``quantiles``, widened by ``margin`` times their span
    on each side (real scans from other scanners differ from the training set; only the far-off is refused).

    Returns:
        An empty range (nothing checked) with fewer than ``min_studies`` studies.
    """
    rows = list(statistics)
    if len(rows) < min_studies:
        return InputRange(studies=len(rows))
    bounds = {}
    for name in STATISTICS:
        values = np.asarray([row[name] for row in rows], dtype=np.float64)
        low, high = np.quantile(values, quantiles)
        span = max(high - low, 1e-3)
        bounds[name] = (float(low - margin * span), float(high + margin * span))
    return InputRange(bounds=bounds, studies=len(rows))
