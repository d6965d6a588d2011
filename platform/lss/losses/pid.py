"""A discrete PID controller with one independent loop per channel, its state kept in module buffers."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["PIDController"]

AntiWindup = Literal["conditional", "clamp", "none"]
ANTI_WINDUP_MODES: tuple[str, ...] = ("conditional", "clamp", "none")


class PIDController(nn.Module):
    """Per-channel discrete PID controller: ``output_c = clip(base + Kp e_c + Ki I_c + Kd D_c, bounds)``.

    One time unit per call of ``step``. With ``ema > 0`` the error is first smoothed,
    ``e_c <- ema * e_c(previous) + (1 - ema) * error_c`` (the first step takes the raw error, so there is no bias
    towards 0), and all three terms use the smoothed error: ``I_c`` is the running sum of ``e_c`` and
    ``D_c = e_c - e_c(previous step)`` (0 on the first step).

    Gains are non-negative, so a positive error raises the output. The integral cannot wind up:

    - ``"conditional"`` (conditional integration, the default): while the error pushes the output into a bound,
      the integral grows only up to the value that puts the output on that bound, never past it. So when the error
      changes sign, the output leaves the bound at once (the proportional term drops, and the integral unwinds from
      the bound, not from a long saturated history).
    - ``"clamp"``: the integral is clamped to ``[-integral_limit, integral_limit]``.
    - ``"none"``: plain integration (windup; for comparison only).

    A loop that is not ``active`` in a step (its class was not observed: no case of the batch labels it) keeps its
    state as it was; its first active step takes the raw error.

    All state (integral, previous smoothed error, output, step counts) is in buffers, so it is saved in
    ``state_dict()`` and restored by ``load_state_dict``. The state is kept in float64: the integral is a long
    sum, and an idle controller (all gains 0) then returns ``base`` exactly as the Python float.

    Args:
        num_channels: number of independent loops C (e.g. classes).
        kp: proportional gain (>= 0).
        ki: integral gain (>= 0), per step.
        kd: derivative gain (>= 0), per step.
        base: output with zero error and zero integral; must lie within ``bounds``.
        bounds: (low, high) limits of the output.
        ema: smoothing factor of the error in [0, 1); 0 uses the raw error.
        anti_windup: ``"conditional"``, ``"clamp"`` or ``"none"`` (see above).
        integral_limit: the bound of ``|I_c|`` for ``anti_windup="clamp"``. None: ``(high - low) / ki``, the integral
            at which the integral term alone spans the whole output range (no clamp when ``ki == 0``).

    Raises:
        TypeError: when ``num_channels`` is not an int.
        ValueError: for ``num_channels < 1``, a negative or non-finite gain, ``bounds`` not ordered, ``base`` outside
            ``bounds``, ``ema`` outside [0, 1), an unknown ``anti_windup`` or a non-positive ``integral_limit``.

    Example::

        pid = PIDController(3, kp=0.1, ki=0.01, base=0.5, bounds=(0.3, 0.9))
        beta = pid.step(torch.tensor([0.2, 0.0, -0.4]))  # (3,), float64
    """

    integral: torch.Tensor
    previous_error: torch.Tensor
    output: torch.Tensor
    steps: torch.Tensor

    def __init__(
        self,
        num_channels: int,
        kp: float = 0.1,
        ki: float = 0.01,
        kd: float = 0.0,
        base: float = 0.5,
        bounds: Sequence[float] = (0.0, 1.0),
        ema: float = 0.0,
        anti_windup: AntiWindup = "conditional",
        integral_limit: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_channels, bool) or not isinstance(num_channels, int):
            raise TypeError(f"num_channels must be an int, got {type(num_channels).__name__} ({num_channels!r}).")
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}.")
        for name, gain in (("kp", kp), ("ki", ki), ("kd", kd)):
            if not math.isfinite(float(gain)) or gain < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {gain!r}.")
        if len(bounds) != 2:
            raise ValueError(f"bounds must be (low, high), got {tuple(bounds)!r}.")
        low, high = float(bounds[0]), float(bounds[1])
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"bounds must be finite with low <= high, got {tuple(bounds)!r}.")
        if not low <= base <= high:
            raise ValueError(f"base must lie within bounds {(low, high)}, got {base!r}.")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema!r}.")
        if anti_windup not in ANTI_WINDUP_MODES:
            raise ValueError(f"anti_windup must be one of {ANTI_WINDUP_MODES}, got {anti_windup!r}.")
        if integral_limit is not None:
            if not integral_limit > 0:
                raise ValueError(f"integral_limit must be > 0, got {integral_limit!r}.")
            if anti_windup != "clamp":
                warnings.warn(
                    f"integral_limit is only used with anti_windup='clamp' (got {anti_windup!r}); ignored.",
                    stacklevel=2,
                )
        self.num_channels = num_channels
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.base = float(base)
        self.bounds = (low, high)
        self.ema = float(ema)
        self.anti_windup = anti_windup
        if integral_limit is None and self.ki > 0:
            integral_limit = (high - low) / self.ki
        self.integral_limit = None if integral_limit is None else float(integral_limit)

        zeros = torch.zeros(num_channels, dtype=torch.float64)
        self.register_buffer("integral", zeros.clone())
        self.register_buffer("previous_error", zeros.clone())  # smoothed error of the last step (EMA and D term)
        self.register_buffer("output", torch.full((num_channels,), self.base, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("channel_steps", torch.zeros(num_channels, dtype=torch.long))

    @torch.no_grad()
    def reset(self) -> None:
        """Forgets the history: zero integral and errors, output back to ``base``, step count 0."""
        self.integral.zero_()
        self.previous_error.zero_()
        self.output.fill_(self.base)
        self.steps.zero_()
        self.channel_steps.zero_()

    def _unclipped(self, error: torch.Tensor, integral: torch.Tensor, derivative: torch.Tensor) -> torch.Tensor:
        return self.base + self.kp * error + self.ki * integral + self.kd * derivative

    @torch.no_grad()
    def step(self, error: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Advances every loop (or only the ``active`` ones) by one step.

        Args:
            error: (C,) the error of each channel; positive raises the output.
            active: (C,) bool, the loops that observed something this step; the others keep their whole state
                (integral, smoothed error, output). None: all.

        Returns:
            (C,) the new output (a copy of the ``output`` buffer), within ``bounds``.

        Raises:
            ValueError: when ``error`` or ``active`` is not of shape (C,), or ``error`` is not finite where active.
        """
        if error.shape != (self.num_channels,):
            raise ValueError(f"error must have shape ({self.num_channels},), got {tuple(error.shape)}.")
        if active is None:
            active = torch.ones(self.num_channels, dtype=torch.bool, device=self.integral.device)
        if active.shape != (self.num_channels,):
            raise ValueError(f"active must have shape ({self.num_channels},), got {tuple(active.shape)}.")
        active = active.to(device=self.integral.device, dtype=torch.bool)
        error = error.detach().to(device=self.integral.device, dtype=self.integral.dtype)
        error = torch.where(active, error, torch.zeros_like(error))
        if not bool(torch.isfinite(error).all()):
            raise ValueError(f"error must be finite, got {error.tolist()}.")

        first = self.channel_steps == 0  # per loop: a loop's first observation takes the raw error
        if self.ema > 0:
            error = torch.where(first, error, self.ema * self.previous_error + (1.0 - self.ema) * error)
        derivative = torch.where(first, torch.zeros_like(error), error - self.previous_error)

        integral = self.integral + error
        if self.anti_windup == "clamp" and self.integral_limit is not None:
            integral = integral.clamp(-self.integral_limit, self.integral_limit)
        elif self.anti_windup == "conditional" and self.ki > 0:
            # Integrate at most up to the integral that puts the output on the bound the error pushes towards
            # (never past it, and never backwards: a large P term alone does not unwind the integral).
            low, high = self.bounds
            rest = self._unclipped(error, torch.zeros_like(error), derivative)
            up_to = torch.maximum(self.integral, (high - rest) / self.ki)
            down_to = torch.minimum(self.integral, (low - rest) / self.ki)
            integral = torch.where(error > 0, torch.minimum(integral, up_to), integral)
            integral = torch.where(error < 0, torch.maximum(integral, down_to), integral)

        output = self._unclipped(error, integral, derivative).clamp(*self.bounds)
        self.integral.copy_(torch.where(active, integral, self.integral))
        self.previous_error.copy_(torch.where(active, error, self.previous_error))
        self.output.copy_(torch.where(active, output, self.output))
        self.steps += 1
        self.channel_steps += active.long()
        return self.output.clone()

    def extra_repr(self) -> str:
        return (
            f"num_channels={self.num_channels}, kp={self.kp}, ki={self.ki}, kd={self.kd}, base={self.base}, "
            f"bounds={self.bounds}, ema={self.ema}, anti_windup={self.anti_windup!r}"
        )
