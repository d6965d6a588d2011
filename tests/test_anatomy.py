"""lss.anatomy: label values, level names, severities and the cut-off rule (table-driven)."""

from __future__ import annotations

import numpy as np
import pytest

from lss import anatomy
from lss.anatomy import CUTOFFS, LEVELS, Severity, Structure, grade_from_measurements


@pytest.mark.parametrize(
    "level, label",
    [("L5/S1", 201), ("L4/L5", 202), ("L3/L4", 203), ("L2/L3", 204), ("L1/L2", 205), ("T12/L1", 206), ("T11/T12", 207)],
)
def test_disc_labels_follow_spider(level, label):
    assert anatomy.disc_label_for_level(level) == label
    assert anatomy.level_for_disc_label(label) == level


@pytest.mark.parametrize("name, label", [("S1", 1), ("L5", 2), ("L1", 6), ("T12", 7), ("T11", 8)])
def test_vertebra_labels(name, label):
    assert anatomy.vertebra_label(name) == label


@pytest.mark.parametrize("text", ["L4/L5", "l4_l5", "L4-L5", "l4l5", " L4 / L5 "])
def test_parse_level_spellings(text):
    assert anatomy.parse_level(text) == "L4/L5"


@pytest.mark.parametrize("bad", ["L6/L7", "L4/L6", "", "disc"])
def test_parse_level_rejects(bad):
    with pytest.raises(ValueError, match="unknown level"):
        anatomy.parse_level(bad)


def test_levels_are_the_five_rsna_levels_cranial_to_caudal():
    assert LEVELS == ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
    assert [anatomy.rsna_column(lv) for lv in LEVELS][0] == "spinal_canal_stenosis_l1_l2"
    assert set(anatomy.RSNA_CLASS_BALANCE) == set(LEVELS)
    for probs in anatomy.RSNA_CLASS_BALANCE.values():
        assert abs(sum(probs) - 1.0) < 0.005


@pytest.mark.parametrize(
    "area, ap, expected",
    [
        (180.0, 15.0, Severity.NORMAL_MILD),
        (CUTOFFS.stenosis_area_mm2, 12.0, Severity.NORMAL_MILD),  # 100 mm2 is not below 100
        (CUTOFFS.stenosis_area_mm2 - 0.01, 12.0, Severity.MODERATE),
        (150.0, CUTOFFS.absolute_ap_mm - 0.01, Severity.MODERATE),  # AP alone: at least moderate
        (CUTOFFS.severe_area_mm2, 8.0, Severity.MODERATE),
        (CUTOFFS.severe_area_mm2 - 0.01, 12.0, Severity.SEVERE),
        (0.0, 0.0, Severity.SEVERE),
    ],
)
def test_grade_from_measurements(area, ap, expected):
    assert grade_from_measurements(area, ap) is expected


@pytest.mark.parametrize("area, ap", [(-1.0, 10.0), (100.0, float("nan")), (float("inf"), 10.0)])
def test_grade_rejects_bad_measurements(area, ap):
    with pytest.raises(ValueError, match="finite non-negative"):
        grade_from_measurements(area, ap)


@pytest.mark.parametrize(
    "value, expected",
    [("Normal/Mild", Severity.NORMAL_MILD), ("normal_mild", Severity.NORMAL_MILD), ("Moderate", Severity.MODERATE),
     (2, Severity.SEVERE), ("mild", Severity.NORMAL_MILD), (Severity.SEVERE, Severity.SEVERE)],
)
def test_severity_parse(value, expected):
    assert Severity.parse(value) is expected
    assert Severity.from_index(expected.index) is expected


def test_severity_parse_rejects():
    with pytest.raises(ValueError, match="unknown severity"):
        Severity.parse("terrible")
    with pytest.raises(ValueError, match="severity index"):
        Severity.from_index(3)


def test_structure_mask_maps_spider_labels():
    labels = np.array([0, 1, 7, 8, 25, 101, 100, 201, 207, 225, 50, 300])
    expected = [Structure.BACKGROUND, Structure.VERTEBRA, Structure.VERTEBRA, Structure.VERTEBRA, Structure.VERTEBRA,
                Structure.VERTEBRA, Structure.CANAL, Structure.DISC, Structure.DISC, Structure.DISC,
                Structure.BACKGROUND, Structure.BACKGROUND]
    assert anatomy.to_structure_mask(labels).tolist() == [s.index for s in expected]
    assert [anatomy.structure_of_label(v) for v in labels] == expected
    with pytest.raises(ValueError, match="integer"):
        anatomy.to_structure_mask(np.array([0.5]))
