"""Calibrated severity probabilities and abstention: one temperature per input path and a confidence threshold.

The severity head is graded by two paths: a level with axial data reads its axial features (the "axial" path), a
level without reads the sagittal view alone (the "sagittal" path; whole sagittal-only studies, and levels whose
axial slice is missing). Their logits are not equally reliable, so each gets its own temperature (Guo et al. 2017,
"On Calibration of Modern Neural Networks"): ``p = softmax(logits / T)``. A temperature does not change the
argmax, so accuracy is unchanged; it only makes the probabilities mean what they say.

Abstention: a grade is stated only when its calibrated confidence (the largest of the three probabilities) reaches
``abstain_threshold``; below it the grade is withheld. The threshold is chosen on validation by
``choose_abstain_threshold``.

    calibration = fit_calibration(logits, targets, axial_present)      # on the validation split
    probs = calibration.probabilities(out.severity_logits, axial_present)
    withheld = calibration.abstains(probs)                               # (B, L) bool

Everything here imports only torch and numpy at module level (``lss.model.vlm`` imports it); the metrics come from
``lss.metrics`` when a function needs them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from lss.metrics.utils import to_numpy

__all__ = [
    "SeverityCalibration",
    "TEMPERATURE_RANGE",
    "MIN_LEVELS_TEMPERATURE",
    "MIN_LEVELS_THRESHOLD",
    "fit_temperature",
    "choose_abstain_threshold",
    "fit_calibration",
    "selective_metrics",
]

# Bounds of a fitted temperature (a search over log T inside them).
TEMPERATURE_RANGE: tuple[float, float] = (0.05, 20.0)
# Fewer graded levels than this: a temperature is not fitted (T = 1).
MIN_LEVELS_TEMPERATURE = 10
# Fewer graded levels than this: no abstention threshold is chosen (0: every grade is stated).
MIN_LEVELS_THRESHOLD = 20
NUM_SEVERITIES = 3


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class SeverityCalibration:
    """The calibration of a model's severity probabilities (stored as ``LSSModel.calibration``).

    The default is the identity: T = 1 on both paths and threshold 0 (every grade stated), which is what a model
    saved without a calibration loads with.

    Attributes:
        temperature_axial: temperature of the levels graded with axial data.
        temperature_sagittal: temperature of the levels graded from the sagittal view alone.
        abstain_threshold: calibrated confidence (max probability) below which a grade is withheld; 0 = never.
        fitted: whether the values were fitted on validation data (False: identity, see ``note``).
        n_axial, n_sagittal: graded validation levels each temperature was fitted on.
        ece_axial_before, ece_axial_after, ece_sagittal_before, ece_sagittal_after: top-label expected
            calibration error (10 bins) of each path on validation, before and after its temperature (None: not
            measured).
        coverage, selective_accuracy: on the pooled validation predictions of both paths at ``abstain_threshold``,
            the share of graded levels stated and the accuracy over those stated.
        target_accuracy, min_coverage: the rule the threshold was chosen by (``choose_abstain_threshold``).
        note: why the calibration is (partly) the identity, or empty.
    """

    temperature_axial: float = 1.0
    temperature_sagittal: float = 1.0
    abstain_threshold: float = 0.0
    fitted: bool = False
    n_axial: int = 0
    n_sagittal: int = 0
    ece_axial_before: float | None = None
    ece_axial_after: float | None = None
    ece_sagittal_before: float | None = None
    ece_sagittal_after: float | None = None
    coverage: float | None = None
    selective_accuracy: float | None = None
    target_accuracy: float | None = None
    min_coverage: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("temperature_axial", "temperature_sagittal"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value}.")
            setattr(self, name, value)
        threshold = float(self.abstain_threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"abstain_threshold must be in [0, 1], got {threshold}.")
        self.abstain_threshold = threshold
        for name in ("n_axial", "n_sagittal"):
            value = int(getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
            setattr(self, name, value)
        for name in ("ece_axial_before", "ece_axial_after", "ece_sagittal_before", "ece_sagittal_after", "coverage",
                     "selective_accuracy", "target_accuracy", "min_coverage"):
            setattr(self, name, _finite_or_none(getattr(self, name)))
        self.fitted = bool(self.fitted)
        self.note = str(self.note or "")

    # ------------------------------------------------------------------------------------------------ use
    def temperatures(self, axial_present: torch.Tensor) -> torch.Tensor:
        """(...) temperature of every level: ``temperature_axial`` where ``axial_present``, else the sagittal one."""
        present = torch.as_tensor(axial_present).bool()
        return torch.where(present, torch.tensor(self.temperature_axial, device=present.device),
                           torch.tensor(self.temperature_sagittal, device=present.device))

    def probabilities(self, logits: torch.Tensor, axial_present: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrated probabilities ``softmax(logits / T)``, T by each level's path.

        Args:
            logits: (B, L, 3) severity logits (any leading shape ``(..., 3)`` works).
            axial_present: (B, L) bool, which levels were graded with axial data (the leading shape of ``logits``);
                None: none was (the sagittal-only path everywhere).

        Returns:
            (B, L, 3) probabilities, in the dtype and on the device of ``logits``.

        Raises:
            ValueError: when ``logits`` does not end in 3 classes or ``axial_present`` does not match it.
        """
        logits = torch.as_tensor(logits)
        if logits.ndim < 1 or logits.shape[-1] != NUM_SEVERITIES:
            raise ValueError(f"logits must be (..., {NUM_SEVERITIES}), got {tuple(logits.shape)}.")
        if axial_present is None:
            axial_present = torch.zeros(logits.shape[:-1], dtype=torch.bool, device=logits.device)
        axial_present = torch.as_tensor(axial_present, device=logits.device)
        if tuple(axial_present.shape) != tuple(logits.shape[:-1]):
            raise ValueError(f"axial_present must be {tuple(logits.shape[:-1])} to match logits "
                             f"{tuple(logits.shape)}, got {tuple(axial_present.shape)}.")
        temperature = self.temperatures(axial_present).to(logits.dtype if logits.is_floating_point()
                                                          else torch.float32)
        return torch.softmax(logits.float() / temperature.float()[..., None], dim=-1).to(
            logits.dtype if logits.is_floating_point() else torch.float32)

    def abstains(self, probs: torch.Tensor) -> torch.Tensor:
        """(...) bool: where the calibrated confidence ``max(probs)`` is below ``abstain_threshold`` (withheld)."""
        probs = torch.as_tensor(probs)
        if probs.ndim < 1 or probs.shape[-1] != NUM_SEVERITIES:
            raise ValueError(f"probs must be (..., {NUM_SEVERITIES}), got {tuple(probs.shape)}.")
        return probs.max(dim=-1).values < self.abstain_threshold

    @property
    def is_identity(self) -> bool:
        """Whether it changes nothing: both temperatures 1 and no abstention."""
        return self.temperature_axial == 1.0 and self.temperature_sagittal == 1.0 and self.abstain_threshold == 0.0

    # ------------------------------------------------------------------------------------------------ storage
    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict (None where a metric was not measured)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SeverityCalibration:
        """The calibration of ``as_dict``; None or {} is the identity, unknown keys are ignored.

        Raises:
            ValueError: for a value out of range (a temperature <= 0, a threshold outside [0, 1]).
        """
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(f"a calibration must be a dict, got {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def metrics(self) -> dict[str, float]:
        """The numbers as flat floats, for training logs (NaN where not measured, ``fitted`` as 0/1)."""
        out = {}
        for key, value in self.as_dict().items():
            if key == "note":
                continue
            out[key] = float("nan") if value is None else float(value)
        return out


# ---------------------------------------------------------------------------------------------------- fitting
def _rows(logits: Any) -> torch.Tensor:
    """(N, 3) float64 logits of any (..., 3) input, checked finite."""
    z = torch.as_tensor(to_numpy(logits, np.float64))
    if z.ndim < 1 or z.shape[-1] != NUM_SEVERITIES:
        raise ValueError(f"logits must be (N, {NUM_SEVERITIES}), got {tuple(z.shape)}.")
    if not torch.isfinite(z).all():
        raise ValueError("logits hold NaN or infinite values.")
    return z.reshape(-1, NUM_SEVERITIES)


def _severities(targets: Any, n: int) -> torch.Tensor:
    """(N,) long targets, checked against the N logit rows and the range -1..2."""
    t = torch.as_tensor(to_numpy(targets, np.int64)).reshape(-1)
    if t.shape[0] != n:
        raise ValueError(f"targets must hold one severity per logit row ({n}), got {t.shape[0]}.")
    if t.numel() and (t.min() < -1 or t.max() >= NUM_SEVERITIES):
        raise ValueError(f"targets must be -1 (unknown) or 0..{NUM_SEVERITIES - 1}.")
    return t


def _flat(logits: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) float64 logits and (N,) long targets of the known levels (target >= 0)."""
    z = _rows(logits)
    t = _severities(targets, z.shape[0])
    keep = t >= 0
    return z[keep], t[keep]


def fit_temperature(logits: Any, targets: Any, min_levels: int = MIN_LEVELS_TEMPERATURE) -> float:
    """The temperature minimising the negative log likelihood of ``softmax(logits / T)`` on the known levels.

    The NLL is convex in 1/T, hence unimodal in log T: a golden-section search over log T in ``TEMPERATURE_RANGE``
    finds its minimum (deterministic, no learning rate; to 1e-6 in log T).

    Args:
        logits: (N, 3) severity logits.
        targets: (N,) severity indices; -1 (unknown) rows are left out.
        min_levels: fewer known levels than this returns 1.0 (nothing worth fitting).

    Returns:
        T in ``TEMPERATURE_RANGE`` (1.0 with too few levels).

    Raises:
        ValueError: on mismatched shapes, targets outside -1..2 or non-finite logits.
    """
    z, t = _flat(logits, targets)
    if t.numel() < max(int(min_levels), 1):
        return 1.0

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / math.exp(log_t), t))

    low, high = math.log(TEMPERATURE_RANGE[0]), math.log(TEMPERATURE_RANGE[1])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    while b - a > 1e-6:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    best = (a + b) / 2.0
    # The minimum may sit on a bound (e.g. a perfectly separable set wants T -> 0): compare with the bounds.
    candidates = {best: nll(best), low: nll(low), high: nll(high)}
    return float(math.exp(min(candidates, key=candidates.get)))


def choose_abstain_threshold(
    confidence: Any,
    correct: Any,
    target_accuracy: float = 0.9,
    min_coverage: float = 0.5,
    min_levels: int = MIN_LEVELS_THRESHOLD,
) -> float:
    """The confidence threshold below which grades are withheld, chosen on validation predictions.

    Rule: a level is stated when its confidence is >= the threshold. The candidates are 0 and the observed
    confidences; among the candidates that keep at least ``min_coverage`` of the levels stated, the smallest one
    whose selective accuracy (accuracy over the stated levels) reaches ``target_accuracy`` is returned. When none
    reaches it, the candidate with the highest selective accuracy among them (the smallest such on ties): the
    model abstains as much as ``min_coverage`` allows, and no more than helps. Fewer than ``min_levels`` levels:
    0 (no abstention; too little evidence to choose).

    Args:
        confidence: (N,) calibrated confidence of each level's grade (the max probability).
        correct: (N,) bool, whether the grade was right.
        target_accuracy: selective accuracy to reach, in (0, 1].
        min_coverage: least share of levels that must stay stated, in [0, 1].
        min_levels: least number of levels to choose from.

    Returns:
        The threshold, in [0, 1].

    Raises:
        ValueError: on mismatched shapes, confidences outside [0, 1] or arguments out of range.
    """
    conf = to_numpy(confidence, np.float64).reshape(-1)
    hit = to_numpy(correct, bool).reshape(-1)
    if conf.shape != hit.shape:
        raise ValueError(f"confidence and correct must both be (N,), got {conf.shape} and {hit.shape}.")
    if conf.size and (not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidence must be probabilities in [0, 1].")
    if not 0.0 < float(target_accuracy) <= 1.0:
        raise ValueError(f"target_accuracy must be in (0, 1], got {target_accuracy}.")
    if not 0.0 <= float(min_coverage) <= 1.0:
        raise ValueError(f"min_coverage must be in [0, 1], got {min_coverage}.")
    n = conf.size
    if n < max(int(min_levels), 1):
        return 0.0
    order = np.argsort(-conf, kind="stable")
    sorted_conf, sorted_hit = conf[order], hit[order]
    # Stating the k most confident levels (k = n..1) is the threshold sorted_conf[k - 1]; ties state together.
    cumulative = np.cumsum(sorted_hit)
    last_of_tie = np.r_[sorted_conf[1:] != sorted_conf[:-1], True]
    k = np.flatnonzero(last_of_tie) + 1  # stated counts achievable by a threshold
    thresholds = sorted_conf[k - 1]
    accuracy = cumulative[k - 1] / k
    coverage = k / n
    allowed = coverage >= float(min_coverage) - 1e-12
    # Threshold 0 states everything; it equals the candidate of the smallest confidence (k = n) in effect.
    thresholds = np.where(k == n, 0.0, thresholds)
    if not allowed.any():
        return 0.0
    thresholds, accuracy = thresholds[allowed], accuracy[allowed]
    ascending = np.argsort(thresholds, kind="stable")
    thresholds, accuracy = thresholds[ascending], accuracy[ascending]
    reached = np.flatnonzero(accuracy >= float(target_accuracy) - 1e-12)
    if reached.size:
        return float(thresholds[reached[0]])
    return float(thresholds[int(np.argmax(accuracy))])  # argmax: the first (smallest threshold) of ties


def selective_metrics(probs: Any, targets: Any, threshold: float) -> dict[str, float | int]:
    """Coverage and selective accuracy at a threshold (``lss.metrics.selective_metrics``)."""
    from lss.metrics import selective_metrics as compute

    return compute(probs, targets, threshold)


def fit_calibration(
    logits: Any,
    targets: Any,
    axial_present: Any,
    target_accuracy: float = 0.9,
    min_coverage: float = 0.5,
    min_levels_temperature: int = MIN_LEVELS_TEMPERATURE,
    min_levels_threshold: int = MIN_LEVELS_THRESHOLD,
) -> SeverityCalibration:
    """Fits both temperatures and the abstention threshold on validation predictions.

    The rows of both paths are pooled: pass the validation levels graded with axial data (``axial_present``
    True) and the same levels graded again without (False), e.g. a forward pass with the axial inputs and one
    without. Each temperature is fitted on its own rows (``fit_temperature``; T = 1 with too few), then the
    threshold on all rows' calibrated confidences (``choose_abstain_threshold``).

    Args:
        logits: (N, 3) severity logits (or (B, L, 3)).
        targets: (N,) severity indices, -1 = unknown (or (B, L)).
        axial_present: (N,) bool, the path of each row (or (B, L)).
        target_accuracy, min_coverage: the threshold rule (``choose_abstain_threshold``).
        min_levels_temperature, min_levels_threshold: least known levels to fit a temperature / a threshold.

    Returns:
        The calibration, with its validation ECE per path before/after, coverage and selective accuracy. Without
        a known severity it is the identity with ``fitted=False`` and a ``note`` saying why.

    Raises:
        ValueError: on mismatched shapes or values out of range.
    """
    from lss.metrics import severity_metrics

    z = _rows(logits)
    t_all = _severities(targets, z.shape[0])
    path = torch.as_tensor(to_numpy(axial_present, bool)).reshape(-1)
    if path.shape[0] != z.shape[0]:
        raise ValueError(f"axial_present must give the path of each of the {z.shape[0]} logit rows, "
                         f"got {path.shape[0]}.")
    z_known, t_known = z[t_all >= 0], t_all[t_all >= 0]
    path = path[t_all >= 0]
    rule = dict(target_accuracy=float(target_accuracy), min_coverage=float(min_coverage))
    if t_known.numel() == 0:
        return SeverityCalibration(note="no validation level with a known severity: identity calibration "
                                   "(T = 1 on both paths, no abstention).", **rule)

    notes = []
    temperatures, counts, ece = {}, {}, {}
    for name, rows in (("axial", path), ("sagittal", ~path)):
        counts[name] = int(rows.sum())
        if counts[name] < max(int(min_levels_temperature), 1):
            temperatures[name] = 1.0
            notes.append(f"{name} path: {counts[name]} graded validation levels (< {int(min_levels_temperature)}), "
                         "temperature not fitted (T = 1).")
        else:
            temperatures[name] = fit_temperature(z_known[rows], t_known[rows], min_levels_temperature)
        if counts[name]:
            ece[f"{name}_before"] = severity_metrics(z_known[rows].numpy(), t_known[rows].numpy(), softmax=True)["ece"]
            ece[f"{name}_after"] = severity_metrics((z_known[rows] / temperatures[name]).numpy(),
                                                    t_known[rows].numpy(), softmax=True)["ece"]
    calibration = SeverityCalibration(temperature_axial=temperatures["axial"],
                                      temperature_sagittal=temperatures["sagittal"], fitted=True,
                                      n_axial=counts["axial"], n_sagittal=counts["sagittal"],
                                      ece_axial_before=ece.get("axial_before"), ece_axial_after=ece.get("axial_after"),
                                      ece_sagittal_before=ece.get("sagittal_before"),
                                      ece_sagittal_after=ece.get("sagittal_after"), **rule)
    probs = calibration.probabilities(z_known, path)
    confidence, predicted = probs.max(dim=-1)
    n_known = int(t_known.numel())
    if n_known < max(int(min_levels_threshold), 1):
        notes.append(f"{n_known} graded validation levels (< {int(min_levels_threshold)}): no abstention "
                     "threshold chosen (every grade stated).")
        threshold = 0.0
    else:
        threshold = choose_abstain_threshold(confidence, predicted == t_known, min_levels=min_levels_threshold,
                                             **rule)
    calibration.abstain_threshold = threshold
    selective = selective_metrics(probs.numpy(), t_known.numpy(), threshold)
    calibration.coverage = _finite_or_none(selective["coverage"])
    calibration.selective_accuracy = _finite_or_none(selective["selective_accuracy"])
    calibration.note = " ".join(notes)
    return calibration
