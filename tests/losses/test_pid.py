"""lss.losses.pid: step responses of the per-channel PID controller, anti-windup, smoothing, state and errors."""

from __future__ import annotations

import pytest
import torch

from lss.losses import PIDController


def run(pid: PIDController, errors: list[float]) -> list[float]:
    """Feeds a scalar error sequence to a 1-channel controller; returns the outputs."""
    return [pid.step(torch.tensor([e])).item() for e in errors]


@pytest.mark.parametrize("error", [-1.0, -0.3, 0.0, 0.25, 1.0])
@pytest.mark.parametrize("kp", [0.05, 0.2])
def test_proportional_only_is_proportional(kp, error):
    pid = PIDController(1, kp=kp, ki=0.0, kd=0.0, base=0.5, bounds=(0.0, 1.0))
    for _ in range(3):  # memoryless: the same output every step
        assert pid.step(torch.tensor([error])).item() == pytest.approx(0.5 + kp * error)


def test_channels_are_independent():
    pid = PIDController(3, kp=0.1, ki=0.02, base=0.5, bounds=(0.0, 1.0))
    for _ in range(4):
        out = pid.step(torch.tensor([1.0, 0.0, -1.0]))
    assert out[0] > 0.5 and out[1] == 0.5 and out[2] < 0.5
    assert out[0] - 0.5 == pytest.approx(0.5 - out[2].item())


def test_constant_positive_error_saturates_at_the_upper_bound_and_stays():
    pid = PIDController(1, kp=0.05, ki=0.02, base=0.5, bounds=(0.3, 0.9))
    out = run(pid, [0.5] * 80)
    assert all(b >= a for a, b in zip(out, out[1:], strict=False))  # monotone
    assert out[0] < 0.9
    saturated = [abs(o - 0.9) < 1e-12 for o in out]
    first = saturated.index(True)
    assert 30 < first < 45 and all(saturated[first:])  # (0.9 - 0.5 - 0.05 * 0.5) / (0.02 * 0.5) = 37.5 steps


@pytest.mark.parametrize("mode, leaves_within", [("conditional", 1), ("clamp", 5)])
def test_no_windup_output_leaves_the_bound_promptly(mode, leaves_within):
    pid = PIDController(1, kp=0.1, ki=0.05, base=0.5, bounds=(0.3, 0.9), anti_windup=mode)
    assert run(pid, [1.0] * 200)[-1] == pytest.approx(0.9)
    recovery = run(pid, [-1.0] * leaves_within)
    assert recovery[-1] < 0.9 - 0.05


def test_without_anti_windup_the_output_sticks_to_the_bound():
    # The counter-case that makes the test above meaningful: plain integration winds up for ~100 steps.
    pid = PIDController(1, kp=0.1, ki=0.05, base=0.5, bounds=(0.3, 0.9), anti_windup="none")
    run(pid, [1.0] * 200)
    assert set(run(pid, [-1.0] * 30)) == {0.9}


def test_conditional_integration_stops_at_the_bound():
    pid = PIDController(1, kp=0.1, ki=0.05, base=0.5, bounds=(0.3, 0.9))
    run(pid, [1.0] * 20)
    frozen = pid.integral.item()
    run(pid, [1.0] * 180)
    assert pid.integral.item() == frozen
    # stopped where the output reached the bound: 0.5 + 0.1 * 1 + 0.05 * I = 0.9
    assert frozen == pytest.approx(6.0)
    run(pid, [-1.0] * 200)
    assert pid.integral.item() == pytest.approx(-2.0)  # 0.5 - 0.1 + 0.05 * I = 0.3


def test_clamp_limits_the_integral():
    pid = PIDController(1, kp=0.0, ki=0.05, base=0.5, bounds=(0.3, 0.9), anti_windup="clamp", integral_limit=3.0)
    run(pid, [1.0] * 50)
    assert pid.integral.item() == 3.0
    default = PIDController(1, ki=0.05, bounds=(0.3, 0.9), anti_windup="clamp")
    assert default.integral_limit == pytest.approx(0.6 / 0.05)


def test_derivative_responds_to_change_only():
    pid = PIDController(1, kp=0.0, ki=0.0, kd=0.2, base=0.5, bounds=(0.0, 1.0))
    out = run(pid, [0.0, 0.0, 0.5, 0.5, 0.5, 0.0])
    assert out == pytest.approx([0.5, 0.5, 0.6, 0.5, 0.5, 0.4])


def test_first_step_has_no_derivative_kick():
    pid = PIDController(1, kp=0.0, ki=0.0, kd=1.0, base=0.5, bounds=(0.0, 1.0))
    assert run(pid, [0.4]) == [0.5]


def test_ema_smooths_the_error():
    pid = PIDController(1, kp=0.1, ki=0.0, base=0.5, bounds=(0.0, 1.0), ema=0.5)
    out = run(pid, [0.0, 1.0, 1.0, 1.0, -1.0])
    smoothed = [0.0, 0.5, 0.75, 0.875, -0.0625]
    assert out == pytest.approx([0.5 + 0.1 * e for e in smoothed])
    first = PIDController(1, kp=0.1, ki=0.0, base=0.5, ema=0.9)
    assert run(first, [1.0]) == pytest.approx([0.6])  # the first error is taken as is (no bias towards 0)


def test_ema_reduces_the_spread_of_a_noisy_error():
    noise = torch.randn(200, generator=torch.Generator().manual_seed(0)).tolist()
    raw = torch.tensor(run(PIDController(1, kp=0.1, ki=0.0), noise))
    smooth = torch.tensor(run(PIDController(1, kp=0.1, ki=0.0, ema=0.9), noise))
    assert smooth.std() < 0.4 * raw.std()


def test_idle_controller_returns_base_exactly():
    pid = PIDController(2, kp=0.0, ki=0.0, kd=0.0, base=0.7, bounds=(0.3, 0.9), ema=0.5)
    for e in ([1.0, -1.0], [0.3, 0.9], [-0.2, 0.0]):
        assert pid.step(torch.tensor(e)).tolist() == [0.7, 0.7]


def test_reset_and_state_dict_round_trip():
    pid = PIDController(2, kp=0.1, ki=0.05, kd=0.05, base=0.5, bounds=(0.3, 0.9), ema=0.3)
    for e in ([1.0, -0.5], [0.5, -0.5], [0.2, 0.1]):
        pid.step(torch.tensor(e))
    copy = PIDController(2, kp=0.1, ki=0.05, kd=0.05, base=0.5, bounds=(0.3, 0.9), ema=0.3)
    copy.load_state_dict(pid.state_dict())
    assert int(copy.steps) == 3
    nxt = torch.tensor([-0.3, 0.4])
    torch.testing.assert_close(copy.step(nxt), pid.step(nxt), rtol=0, atol=0)
    pid.reset()
    assert pid.output.tolist() == [0.5, 0.5] and pid.integral.abs().sum() == 0 and int(pid.steps) == 0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_channels": 0}, ValueError, "num_channels"),
        ({"num_channels": 2.0}, TypeError, "num_channels"),
        ({"num_channels": 1, "kp": -0.1}, ValueError, "kp"),
        ({"num_channels": 1, "ki": float("nan")}, ValueError, "ki"),
        ({"num_channels": 1, "kd": -1}, ValueError, "kd"),
        ({"num_channels": 1, "bounds": (0.9, 0.3)}, ValueError, "bounds"),
        ({"num_channels": 1, "bounds": (0.1, 0.2, 0.3)}, ValueError, "bounds"),
        ({"num_channels": 1, "base": 0.95, "bounds": (0.3, 0.9)}, ValueError, "base"),
        ({"num_channels": 1, "ema": 1.0}, ValueError, "ema"),
        ({"num_channels": 1, "anti_windup": "back-calc"}, ValueError, "anti_windup"),
        ({"num_channels": 1, "anti_windup": "clamp", "integral_limit": 0.0}, ValueError, "integral_limit"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        PIDController(**kwargs)


def test_integral_limit_without_clamp_warns():
    with pytest.warns(UserWarning, match="integral_limit"):
        PIDController(1, integral_limit=2.0)


@pytest.mark.parametrize(
    "error, match",
    [(torch.zeros(3), r"shape \(2,\)"), (torch.zeros(1, 2), "shape"), (torch.tensor([0.0, float("inf")]), "finite")],
)
def test_bad_error(error, match):
    with pytest.raises(ValueError, match=match):
        PIDController(2).step(error)
