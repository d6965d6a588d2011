"""The sweep's report: one row per trial, ``results.md`` / ``results.json``, and two figures.

    gains.png                    the best validation score of each trial against each PID gain (log x; trials with
                                 the gain off are drawn at the left, marked "0")
    best_trial_alpha_beta.png    alpha and beta of every structure per epoch in the best trial

Figures are drawn with matplotlib's object API on the Agg canvas, as in ``lss.evaluation.plots``. Nothing here
needs Ray: the rows are built from plain per-epoch dicts.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lss.anatomy import Structure
from lss.colours import BACKGROUND_COLOUR, STRUCTURE_COLOURS
from lss.jsonable import to_jsonable

__all__ = ["RESULTS_MD", "RESULTS_JSON", "PLOTS", "trial_row", "write_report", "plot_gains", "plot_traces",
           "format_trials", "format_best"]

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
PLOTS = {"gains": "gains.png", "traces": "best_trial_alpha_beta.png"}
_GAINS = ("kp", "ki", "kd")
_STRUCTURES = tuple(s.value for s in Structure)


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def trial_row(trial_id: str, settings: dict[str, Any] | None, history: Sequence[dict[str, Any]], metric: str, mode: str,
              error: str | None = None) -> dict[str, Any]:
    """One trial's row: its settings, its best score, the epochs it ran and its final beta per structure.

    Args:
        trial_id: Tune's trial id.
        settings: ``lss.tuning.trial_settings`` of the trial (None when unknown: its values are None).
        history: the trial's reports in epoch order (keys ``epoch``, ``metric``, ``alpha_<view>_<structure>``,
            ``beta_<view>_<structure>``...).
        metric, mode: the tuned metric and whether higher ("max") or lower ("min") is better.
        error: the trial's error, if it failed.

    Returns:
        ``trial_id``, ``status`` ("ok" or "error"), the settings, ``best_metric`` (None when never finite),
        ``best_epoch``, ``epochs``, ``final_beta`` and ``final_alpha`` (sagittal loss: structure -> value),
        ``history`` (per epoch: ``epoch``, the metric, every alpha and beta) and ``error``.

    Raises:
        ValueError: for a mode other than "min" or "max".
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
    scores = [(_finite(row.get(metric)), int(row["epoch"])) for row in history if "epoch" in row]
    scores = [(s, e) for s, e in scores if s is not None]
    best_metric, best_epoch = (max if mode == "max" else min)(scores) if scores else (None, None)
    last = history[-1] if history else {}
    settings = settings or dict.fromkeys((*_GAINS, "beta", "alpha", "focal_gamma", "learning_rate", "beta_bounds"))
    compact = [{"epoch": int(row["epoch"]), metric: _finite(row.get(metric)),
                **{k: _finite(v) for k, v in row.items() if k.startswith(("alpha_", "beta_"))}}
               for row in history if "epoch" in row]
    return {
        "trial_id": trial_id,
        "status": "error" if error else "ok",
        **{key: settings[key] for key in (*_GAINS, "beta", "alpha", "focal_gamma", "learning_rate")},
        "beta_bounds": list(settings["beta_bounds"] or (None, None)),
        "best_metric": best_metric,
        "best_epoch": best_epoch,
        "epochs": len(compact),
        "final_beta": {s: _finite(last[f"beta_sagittal_{s}"]) for s in _STRUCTURES if f"beta_sagittal_{s}" in last},
        "final_alpha": {s: _finite(last[f"alpha_sagittal_{s}"]) for s in _STRUCTURES
                        if f"alpha_sagittal_{s}" in last},
        "history": compact,
        "error": error,
    }


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, ncols, squeeze=False)[0]


def plot_gains(trials: Sequence[dict[str, Any]], path: str | Path, metric: str, best_id: str | None = None) -> Path:
    """The best score of each trial against kp, ki and kd (one panel each, log x).

    A gain of 0 (the term off) has no place on a log axis: those trials are drawn as crosses at a "0" position a
    half decade left of the smallest gain searched, beyond a dashed line. The best trial is ringed.
    """
    figure, axes = _figure(12, 3.8, ncols=len(_GAINS))
    trials = [t for t in trials if t["best_metric"] is not None and t["kp"] is not None]
    positive = [t[g] for t in trials for g in _GAINS if t[g] > 0]
    zero_x = 10 ** (math.floor(math.log10(min(positive))) - 0.5) if positive else 10**-3.5
    for ax, gain in zip(axes, _GAINS, strict=True):
        for trial in trials:
            score = trial["best_metric"]
            on = trial[gain] > 0
            x = trial[gain] if on else zero_x
            ax.scatter([x], [score], marker="o" if on else "x", color="tab:blue" if on else "tab:red", zorder=3)
            if trial["trial_id"] == best_id:
                ax.scatter([x], [score], s=180, facecolors="none", edgecolors="black", zorder=4)
        ax.set_xscale("log")
        ax.axvline(zero_x * 10 ** 0.25, color="grey", linestyle="--", linewidth=0.8)
        ticks = [zero_x, *[10.0 ** k for k in range(math.ceil(math.log10(zero_x)), 1)]]
        ax.set_xticks(ticks, ["0", *[f"{t:g}" for t in ticks[1:]]])
        ax.set_xlim(zero_x / 2, 2.0)
        ax.set_xlabel(f"{gain} (x = off)")
        ax.set_ylabel(f"best {metric}")
        ax.grid(alpha=0.3)
    figure.suptitle(f"{metric} against the PID gains ({len(trials)} trials; ringed: best)")
    return _save(figure, path)


def plot_traces(history: Sequence[dict[str, Any]], path: str | Path, title: str = "best trial",
                views: Sequence[str] = ("sagittal", "axial")) -> Path:
    """alpha (dashed) and beta (solid) of every structure per epoch, one panel per view that was trained."""
    from matplotlib.ticker import MaxNLocator

    views = [v for v in views if any(k.startswith(f"beta_{v}_") for row in history for k in row)]
    figure, axes = _figure(6 * max(len(views), 1), 4, ncols=max(len(views), 1))
    colours = {s.value: STRUCTURE_COLOURS.get(s.index, BACKGROUND_COLOUR) for s in Structure}
    epochs = [row["epoch"] for row in history]
    for ax, view in zip(axes, views or ["sagittal"], strict=True):
        for structure in _STRUCTURES:
            for weight, style in (("beta", "-"), ("alpha", "--")):
                key = f"{weight}_{view}_{structure}"
                values = [row.get(key) for row in history]
                if any(v is not None for v in values):
                    ax.plot(epochs, [math.nan if v is None else v for v in values], style, marker=".",
                            color=colours[structure], label=f"{weight} {structure}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("weight")
        ax.set_ylim(0, 1)
        ax.set_title(f"{title}: {view} loss", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7, ncols=2)
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _f(value: Any, digits: int = 3) -> str:
    """A number for the tables: fixed point, or 3 significant digits below 0.01 (small gains); None is "n/a"."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    value = float(value)
    return f"{value:.{digits}g}" if 0 < abs(value) < 1e-2 else f"{value:.{digits}f}"


def _rows(trials: Sequence[dict[str, Any]], metric: str) -> tuple[list[str], list[list[str]]]:
    structures = [s for s in _STRUCTURES if any(s in t["final_beta"] for t in trials)]
    header = ["trial", "kp", "ki", "kd", "beta", "bounds", "focal_gamma", "lr", f"best {metric}", "epochs",
              "status", *[f"final beta {s}" for s in structures]]
    rows = [[t["trial_id"], _f(t["kp"]), _f(t["ki"]), _f(t["kd"]), _f(t["beta"]),
             f"[{_f(t['beta_bounds'][0])}, {_f(t['beta_bounds'][1])}]", _f(t["focal_gamma"]),
             "n/a" if t["learning_rate"] is None else f"{t['learning_rate']:.2e}", _f(t["best_metric"], 4),
             str(t["epochs"]), t["status"], *[_f(t["final_beta"].get(s)) for s in structures]] for t in trials]
    return header, rows


def format_trials(trials: Sequence[dict[str, Any]], metric: str) -> str:
    """The trials as an aligned text table (one line per trial)."""
    header, rows = _rows(trials, metric)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in [header, *rows]]
    return "\n".join(lines)


def format_best(best_config: dict[str, Any], metric: str, value: float) -> str:
    """The best trial's settings, with the ``--set`` overrides that reproduce it in ``lss train``."""
    low, high = best_config["beta_bounds"]
    return "\n".join([
        f"tune: best trial {best_config.get('trial_id', '?')}: {metric} = {value:.4f}",
        (f"  kp={best_config['kp']:.4g} ki={best_config['ki']:.4g} kd={best_config['kd']:.4g} "
         f"beta={best_config['beta']:.3f} bounds=[{low:.3f}, {high:.3f}] "
         f"focal_gamma={best_config['focal_gamma']:.3f} lr={best_config['learning_rate']:.2e}"),
        "  train with: " + " ".join(f"--set '{o}'" for o in best_config.get("overrides", [])),
    ])


def _markdown(trials: Sequence[dict[str, Any]], best_id: str, metric: str, mode: str) -> str:
    header, rows = _rows(trials, metric)
    table = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    table += ["| " + " | ".join(f"**{c}**" if r[0] == best_id and i == 0 else c for i, c in enumerate(r)) + " |"
              for r in rows]
    errors = [f"- {t['trial_id']}: {t['error']}" for t in trials if t["error"]]
    parts = [
        "# Tuning\n",
        (f"{len(trials)} trials, best first; metric `{metric}` ({mode}), best over each trial's epochs; best trial "
         f"**{best_id}**. A gain of 0 means the term was off. Bounds are (low, high) of each beta; "
         "alpha = 1 - beta.\n"),
        "\n".join(table) + "\n",
        f"![gains]({PLOTS['gains']})\n",
        f"![alpha and beta of the best trial]({PLOTS['traces']})\n",
    ]
    if errors:
        parts.append("## Errors\n\n" + "\n".join(errors) + "\n")
    return "\n".join(parts)


def write_report(trials: Sequence[dict[str, Any]], best_id: str, metric: str, mode: str, out_dir: str | Path,
                 views: Sequence[str] = ("sagittal", "axial")) -> tuple[Path | str, dict[str, Path | str]]:
    """Writes ``results.md``, ``results.json`` and the figures into ``out_dir`` (a folder, or a URI such as
    s3://bucket/sweeps/name: written locally, then copied with pyarrow). ``views``: the views trained (whose
    alpha/beta traces are drawn).

    Returns:
        The path of ``results.md`` and figure name -> path.
    """
    remote = "://" in str(out_dir)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) if remote else Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        best = next(t for t in trials if t["trial_id"] == best_id)
        plots = {"gains": plot_gains(trials, folder / PLOTS["gains"], metric, best_id),
                 "traces": plot_traces(best["history"], folder / PLOTS["traces"], f"trial {best_id}", views)}
        (folder / RESULTS_MD).write_text(_markdown(trials, best_id, metric, mode))
        results = {"metric": metric, "mode": mode, "best_trial": best_id, "trials": list(trials)}
        (folder / RESULTS_JSON).write_text(json.dumps(to_jsonable(results), indent=1, allow_nan=False) + "\n")
        if not remote:
            return folder / RESULTS_MD, plots
        import pyarrow.fs

        pyarrow.fs.copy_files(str(folder), str(out_dir))
        base = str(out_dir).rstrip("/")
        return f"{base}/{RESULTS_MD}", {key: f"{base}/{PLOTS[key]}" for key in plots}
