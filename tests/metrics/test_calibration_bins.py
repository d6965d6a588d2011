"""lss.metrics.calibration: reliability bins and the ECE by hand, and the error messages."""

from __future__ import annotations

import math

import pytest

from lss.metrics import calibration_bins


def test_calibration_bins_by_hand():
    # Bins [0, .1): conf .05 never right; [.1, .2): conf .15 never right; [.9, 1]: conf .95 right once of twice.
    result = calibration_bins([0.05, 0.15, 0.95, 1.0], [0, 0, 1, 0], n_bins=10)
    assert result["count"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert result["frequency"][9] == 0.5 and result["confidence"][9] == pytest.approx(0.975)
    assert math.isnan(result["confidence"][5])
    assert result["ece"] == pytest.approx(0.25 * 0.05 + 0.25 * 0.15 + 0.5 * 0.475)
    assert math.isnan(calibration_bins([], [])["ece"])


CALIBRATION_ERRORS = [
    (lambda: calibration_bins([0.5, 1.5], [1, 0]), r"\[0, 1\]"),
    (lambda: calibration_bins([0.5], [1, 0]), r"both be \(N,\)"),
    (lambda: calibration_bins([0.5], [1], n_bins=0), "n_bins"),
]


@pytest.mark.parametrize("call, message", CALIBRATION_ERRORS)
def test_calibration_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
