"""lss.colours: one colour per foreground structure and per grade, the 0-255 conversion and its errors, and the
pictures that draw with them."""

from __future__ import annotations

import pytest

from lss.anatomy import Severity, Structure
from lss.colours import BACKGROUND_COLOUR, SEVERITY_COLOURS, STRUCTURE_COLOURS, UNSTATED_COLOUR, rgb255


def test_every_structure_and_grade_has_its_own_colour():
    foreground = [s.index for s in Structure if s is not Structure.BACKGROUND]
    assert sorted(STRUCTURE_COLOURS) == foreground
    assert len({*STRUCTURE_COLOURS.values(), BACKGROUND_COLOUR}) == len(foreground) + 1
    assert set(SEVERITY_COLOURS) == {s.value for s in Severity}
    assert len({*SEVERITY_COLOURS.values(), UNSTATED_COLOUR}) == len(Severity) + 1


# (colour in [0, 1], expected 0-255)
RGB255 = [
    ((0.0, 0.0, 0.0), (0, 0, 0)),
    ((1.0, 1.0, 1.0), (255, 255, 255)),
    ((0.95, 0.85, 0.25), (242, 217, 64)),  # rounded to nearest, not truncated
]


@pytest.mark.parametrize("colour, expected", RGB255)
def test_rgb255(colour, expected):
    assert rgb255(colour) == expected


@pytest.mark.parametrize("colour", [(0.5, 0.5), (0.5, 0.5, 1.5), (-0.1, 0.0, 0.0)])
def test_rgb255_refuses_what_is_no_colour(colour):
    with pytest.raises(ValueError, match="three channels in"):
        rgb255(colour)


def test_the_dicom_segments_and_the_tuning_plots_use_the_table(tmp_path):
    from lss.export.seg import _COLOURS
    from lss.tuning.report import plot_traces

    assert {s: rgb255(STRUCTURE_COLOURS[s.index]) for s in _COLOURS} == _COLOURS
    history = [{"epoch": e, **{f"beta_sagittal_{s.value}": 0.5 + e / 10 for s in Structure}} for e in range(3)]
    assert plot_traces(history, tmp_path / "traces.png").stat().st_size > 0
