"""lss.anatomy: label values, level names, severities and the cut-off rule (table-driven)."""

from __future__ import annotations

import numpy as np
import pytest

from lss import anatomy
from lss.anatomy import (
    CUTOFFS,
    LEVELS,
    Severity,
    Structure,
    format_area_mm2,
    format_diameter_mm,
    grade_from_measurements,
)


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


def test_structure_channels():
    assert [s.value for s in Structure] == ["background", "vertebral_body", "posterior_elements", "disc",
                                            "spinal_canal"]
    assert [s.index for s in Structure] == list(range(5))


B, VB, PE, D, C = (Structure.BACKGROUND, Structure.VERTEBRAL_BODY, Structure.POSTERIOR_ELEMENTS, Structure.DISC,
                   Structure.CANAL)


@pytest.mark.parametrize(
    "label, expected",
    [
        (0, B), (1, VB), (7, VB), (8, VB), (25, VB), (26, B), (50, B),
        (101, VB), (125, VB),  # SPIDER's partially visible vertebrae
        (100, C),
        (200, B), (201, D), (207, D), (225, D), (226, B),
        (300, B), (301, PE), (308, PE), (325, PE), (326, B),
        (400, B), (401, VB), (402, PE), (403, D), (404, C), (405, B),
    ],
)
def test_structure_of_native_label(label, expected):
    assert anatomy.structure_of_label(label) is expected
    assert anatomy.to_structure_mask(np.array([label])).tolist() == [expected.index]


def test_structure_mask_keeps_shape_and_rejects_fractions():
    labels = np.array([[0, 2, 302], [202, 100, 403]], dtype=np.int16)
    assert anatomy.to_structure_mask(labels).tolist() == [[0, VB.index, PE.index], [D.index, C.index, D.index]]
    assert anatomy.to_structure_mask(labels.astype(np.float32)).dtype == np.uint8
    with pytest.raises(ValueError, match="integer"):
        anatomy.to_structure_mask(np.array([0.5]))


@pytest.mark.parametrize("name, label", [("S1", 301), ("L5", 302), ("L1", 306), ("T12", 307), ("T11", 308)])
def test_posterior_labels(name, label):
    assert anatomy.posterior_label(name) == label == anatomy.POSTERIOR_LABEL_OFFSET + anatomy.vertebra_label(name)
    assert anatomy.structure_of_label(label) is PE


def test_posterior_label_rejects_unknown_vertebra():
    with pytest.raises(ValueError, match="unknown vertebra"):
        anatomy.posterior_label("L6")


@pytest.mark.parametrize(
    "structure, label",
    [(VB, 401), ("posterior_elements", 402), ("disc", 403), ("canal", 404), ("SPINAL_CANAL", 404)],
)
def test_unidentified_labels(structure, label):
    assert anatomy.unidentified_label(structure) == label
    assert anatomy.structure_of_label(label) is Structure.parse(structure)


def test_unidentified_label_rejects_background_and_unknown_names():
    with pytest.raises(ValueError, match="background has label 0"):
        anatomy.unidentified_label(B)
    with pytest.raises(ValueError, match="unknown structure"):
        anatomy.unidentified_label("vertebra")


@pytest.mark.parametrize(
    "value, expected",
    [(VB, VB), ("vertebral_body", VB), ("VERTEBRAL_BODY", VB), ("vertebral body", VB), ("body", VB),
     ("posterior", PE), ("posterior-elements", PE), ("disc", D), ("canal", C), ("spinal_canal", C), (" Disc ", D),
     ("background", B)],
)
def test_structure_parse(value, expected):
    assert Structure.parse(value) is expected


@pytest.mark.parametrize("bad", ["vertebra", "", "bone", "ivd"])
def test_structure_parse_rejects(bad):
    with pytest.raises(ValueError, match="unknown structure"):
        Structure.parse(bad)


@pytest.mark.parametrize(
    "groups, partition, grouped",
    [
        # Fully labelled (the phantoms): every structure alone.
        (None, [0, 1, 2, 3, 4], [[B], [VB], [PE], [D], [C]]),
        # SPIDER: one label covers body and posterior elements.
        ([["vertebral_body", "posterior_elements"], ["disc"], ["spinal_canal"]], [0, 1, 1, 3, 4],
         [[B], [VB, PE], [D], [C]]),
        # Bodies only: the rest is unknown, merged with the background.
        ([["vertebral_body"]], [0, 1, 0, 0, 0], [[B, PE, D, C], [VB]]),
        # Group members in any order and spelling; the group maps to its lowest channel.
        ([["posterior", "body"], ["canal"]], [0, 1, 1, 0, 4], [[B, D], [VB, PE], [C]]),
    ],
)
def test_label_partition_and_groups(groups, partition, grouped):
    result = anatomy.label_partition(groups)
    assert result.dtype == np.int64 and result.tolist() == partition
    assert anatomy.partition_groups(result) == grouped


@pytest.mark.parametrize(
    "groups, match",
    [
        ([[]], "at least one structure"),
        ([["background"]], "background is never a label group"),
        ([["vertebral_body"], ["body", "disc"]], r"\['vertebral_body'\] are in two label groups"),
        ([["vertebra"]], "unknown structure"),
    ],
)
def test_label_partition_rejects(groups, match):
    with pytest.raises(ValueError, match=match):
        anatomy.label_partition(groups)


@pytest.mark.parametrize(("area", "text"), [(72.4, "70 mm2"), (72.5, "75 mm2"), (198.4, "200 mm2"), (0.0, "0 mm2")])
def test_reported_area_is_rounded_to_5_mm2(area, text):
    assert format_area_mm2(area) == text


@pytest.mark.parametrize(("ap", "text"), [(13.24, "13.0 mm"), (13.25, "13.5 mm"), (9.74, "9.5 mm"), (9.76, "10.0 mm")])
def test_reported_diameter_is_rounded_to_half_a_millimetre(ap, text):
    assert format_diameter_mm(ap) == text


def test_a_measurement_that_is_not_a_number_is_not_reported():
    with pytest.raises(ValueError, match="finite"):
        format_area_mm2(float("nan"))
