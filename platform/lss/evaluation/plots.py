"""The evaluation figures: confusion matrix, Dice per structure, reliability of the severity probabilities.

Figures are drawn with matplotlib's object API on the Agg canvas (``Figure`` + ``FigureCanvasAgg``): no pyplot, no
global backend switch, nothing shown; every function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lss.anatomy import SEVERITIES

__all__ = ["plot_confusion_matrix", "plot_dice", "plot_reliability"]

SEVERITY_LABELS: tuple[str, ...] = tuple(s.value for s in SEVERITIES)


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, axes


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def plot_confusion_matrix(confusion: Sequence[Sequence[int]], path: str | Path, title: str = "Severity") -> Path:
    """Counts and row-normalised rates (rows = truth) side by side.

    Args:
        confusion: (3, 3) counts, rows = true severity, columns = predicted (``SEVERITIES`` order).
        path: the PNG to write.
        title: prefix of the panel titles.

    Raises:
        ValueError: when ``confusion`` is not 3x3 or holds negative counts.
    """
    counts = np.asarray(confusion, dtype=np.float64)
    k = len(SEVERITIES)
    if counts.shape != (k, k) or np.any(counts < 0):
        raise ValueError(f"confusion must be ({k}, {k}) non-negative counts, got shape {counts.shape}.")
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)
    figure, axes = _figure(11, 4.4, ncols=2)
    panels = ((axes[0], counts, f"{title}: counts", "{:.0f}", counts.max() or 1.0),
              (axes[1], rates, f"{title}: row-normalised (recall on diagonal)", "{:.2f}", 1.0))
    for ax, values, name, fmt, vmax in panels:
        image = ax.imshow(np.nan_to_num(values), cmap="Blues", vmin=0, vmax=vmax)
        for (i, j), value in np.ndenumerate(values):
            text = "n/a" if math.isnan(value) else fmt.format(value)
            dark = not math.isnan(value) and value > 0.6 * vmax
            ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black", fontsize=11)
        ax.set_xticks(range(k), SEVERITY_LABELS)
        ax.set_yticks(range(k), [f"{label}\n(n={int(n)})"
                                 for label, n in zip(SEVERITY_LABELS, totals[:, 0], strict=True)])
        ax.set_xlabel("predicted")
        ax.set_ylabel("truth")
        ax.set_title(name, fontsize=10)
        figure.colorbar(image, ax=ax, shrink=0.8)
    return _save(figure, path)


def plot_dice(dice: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "Dice per structure") -> Path:
    """Grouped bars: one group per structure, one bar per view ("sagittal", "axial"), the value written on top.

    Args:
        dice: view -> ``{structure: dice}``; a NaN value (nothing to measure) is drawn as "n/a".
        path: the PNG to write.
        title: the figure title.

    Raises:
        ValueError: when ``dice`` is empty.
    """
    if not dice:
        raise ValueError("dice must name at least one view.")
    views = list(dice)
    structures = list(dict.fromkeys(name for view in views for name in dice[view]))
    figure, axes = _figure(max(6.0, 1.6 * len(structures) + 2), 4.2)
    ax = axes[0]
    width = 0.8 / len(views)
    x = np.arange(len(structures))
    for n, view in enumerate(views):
        values = [dice[view].get(name, float("nan")) for name in structures]
        offset = x - 0.4 + width * (n + 0.5)
        bars = ax.bar(offset, np.nan_to_num(values), width, label=view)
        for bar, value in zip(bars, values, strict=True):
            label = "n/a" if value is None or math.isnan(value) else f"{value:.2f}"
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, label, ha="center", va="bottom",
                    fontsize=8)
    ax.set_xticks(x, [name.replace("_", " ") for name in structures])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("Dice")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return _save(figure, path)


def plot_reliability(
    top_label: Mapping[str, object],
    per_class: Mapping[str, Mapping[str, object]],
    path: str | Path,
) -> Path:
    """Reliability diagrams of the severity probabilities, with the expected calibration error (ECE) printed.

    Left: top-label reliability (confidence of the predicted class against how often it is right), as bars over
    the bins with the sample count of each bin. Right: one-vs-rest reliability of each class (P(class) against how
    often the truth is that class).

    Args:
        top_label: ``lss.metrics.calibration_bins`` of the top-label confidence.
        per_class: class name -> ``calibration_bins`` of P(class) against "truth is that class".
        path: the PNG to write.
    """
    figure, axes = _figure(11, 4.6, ncols=2)
    left, right = axes
    lower = np.asarray(top_label["bin_lower"], dtype=np.float64)
    upper = np.asarray(top_label["bin_upper"], dtype=np.float64)
    frequency = np.asarray(top_label["frequency"], dtype=np.float64)
    counts = np.asarray(top_label["count"])
    centres = (lower + upper) / 2
    left.bar(centres, np.nan_to_num(frequency), upper - lower, edgecolor="black", alpha=0.7, label="observed accuracy")
    left.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for centre, value, count in zip(centres, frequency, counts, strict=True):
        if count:
            left.text(centre, np.nan_to_num(value) + 0.02, str(int(count)), ha="center", fontsize=7)
    left.set_title(f"Top-label reliability, ECE = {_fmt(top_label['ece'])}", fontsize=10)
    left.set_xlabel("confidence (max probability)")
    left.set_ylabel("accuracy")
    left.set_xlim(0, 1)
    left.set_ylim(0, 1.08)
    left.legend(loc="upper left", fontsize=8)

    right.plot([0, 1], [0, 1], "--", color="grey")
    for name, bins in per_class.items():
        conf = np.asarray(bins["confidence"], dtype=np.float64)
        freq = np.asarray(bins["frequency"], dtype=np.float64)
        filled = np.isfinite(conf)
        right.plot(conf[filled], freq[filled], "o-", label=f"{name} (ECE {_fmt(bins['ece'])})")
    right.set_title("One-vs-rest reliability per class", fontsize=10)
    right.set_xlabel("predicted probability of the class")
    right.set_ylabel("observed frequency of the class")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1.05)
    right.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


def _fmt(value: object) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.3f}"
