"""Measurements on masks of known geometry: the right numbers in mm / mm2 at any spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers_prediction import CANAL_Y, DISC_Z, SAGITTAL_SPACING, disc, known_prediction

from lss.anatomy import LEVELS
from lss.reporting import (
    ap_diameter_mm,
    disc_height_mm,
    largest_component,
    measure_study,
    principal_axes,
    ray_run_mm,
    region_area_mm2,
)


@pytest.mark.parametrize("spacing", [(0.3, 0.3), (0.5, 0.8), (0.9, 0.9), (1.2, 0.6)])
@pytest.mark.parametrize("radius", [4.0, 8.0])
def test_a_disc_of_known_radius_has_the_right_area_and_diameter(spacing, radius):
    shape = (int(40 / spacing[0]), int(40 / spacing[1]))
    mask = disc(shape, (shape[0] / 2, shape[1] / 2), radius, spacing)
    true_area = math.pi * radius**2
    # Pixelisation error of a circle: about one pixel's width along its perimeter.
    tolerance = 2 * math.pi * radius * max(spacing) * 0.5 + 1e-9
    assert abs(region_area_mm2(mask, spacing) - true_area) < tolerance
    assert abs(region_area_mm2(mask, spacing) - true_area) / true_area < 0.12
    assert abs(ap_diameter_mm(mask, spacing, axis=1) - 2 * radius) <= spacing[1] + 1e-9
    assert abs(ap_diameter_mm(mask, spacing, axis=0) - 2 * radius) <= spacing[0] + 1e-9


def test_area_scales_with_pixel_size_exactly():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:7] = True  # 12 pixels
    assert region_area_mm2(mask, (0.5, 2.0)) == pytest.approx(12.0)
    assert ap_diameter_mm(mask, (0.5, 2.0), axis=1) == pytest.approx(8.0)
    assert ap_diameter_mm(mask, (0.5, 2.0), axis=0) == pytest.approx(1.5)
    assert ap_diameter_mm(np.zeros((4, 4)), (1, 1)) == 0.0


def test_largest_component_keeps_the_biggest_region():
    mask = np.zeros((20, 20), bool)
    mask[1:3, 1:3] = True
    mask[10:16, 10:16] = True
    kept = largest_component(mask)
    assert kept.sum() == 36 and not kept[1, 1]
    assert not largest_component(np.zeros((5, 5))).any()


@pytest.mark.parametrize("angle", [0.0, 15.0, 35.0])
def test_disc_height_of_a_tilted_rectangle(angle):
    spacing = (0.4, 0.4)
    shape = (200, 200)
    ii, jj = np.meshgrid(np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1], indexing="ij")
    theta = math.radians(angle)
    u = (ii - 40) * math.cos(theta) + (jj - 40) * math.sin(theta)  # along the long axis
    v = -(ii - 40) * math.sin(theta) + (jj - 40) * math.cos(theta)
    mask = (np.abs(u) <= 20) & (np.abs(v) <= 5)  # 40 mm x 10 mm
    assert disc_height_mm(mask, spacing) == pytest.approx(10.0, abs=0.6)
    _, direction, length = principal_axes(mask, spacing)
    assert abs(abs(direction @ [math.cos(theta), math.sin(theta)]) - 1) < 1e-3
    assert length == pytest.approx(40.0, abs=1.0)


def test_ray_run_measures_the_first_band_crossed():
    mask = np.zeros((100, 200), bool)
    mask[40:60, :] = True  # a band 20 px thick along axis 0
    length, line = ray_run_mm(mask, (80, 50), (-1.0, 0.0), (0.5, 0.5))
    assert length == pytest.approx(10.0, abs=0.6)
    assert line[0][0] == pytest.approx(59.5, abs=1) and line[1][0] == pytest.approx(40, abs=1)
    # At 60 degrees from the band's normal the crossing is twice as long.
    length, _ = ray_run_mm(mask, (80, 50), (-math.cos(math.radians(60)), math.sin(math.radians(60))), (0.5, 0.5),
                           max_mm=60)
    assert length == pytest.approx(20.0, abs=1.0)
    assert ray_run_mm(mask, (80, 50), (1.0, 0.0), (0.5, 0.5)) == (0.0, None)
    with pytest.raises(ValueError, match="zero"):
        ray_run_mm(mask, (80, 50), (0.0, 0.0), (0.5, 0.5))


def test_measure_study_reads_the_known_geometry():
    radii = (9.0, 8.0, 6.0, 4.5, 8.5)
    measured = measure_study(known_prediction(sac_radius_mm=radii))
    assert [m.level for m in measured] == list(LEVELS)
    for m, radius, z in zip(measured, radii, DISC_Z, strict=True):
        assert m.area_mm2 == pytest.approx(math.pi * radius**2, rel=0.1)
        assert m.ap_mm == pytest.approx(2 * radius, abs=0.95)
        assert m.axial_slice == {"series": f"ax{LEVELS.index(m.level)}", "slice": 2}
        assert m.disc_height_mm == pytest.approx(10.0, abs=0.4)
        expected_ap = (CANAL_Y[1] - CANAL_Y[0]) * SAGITTAL_SPACING[0]
        assert m.sagittal_ap_mm == pytest.approx(expected_ap, abs=0.3)
        assert m.disc_centre_px[1] == pytest.approx(z - 0.5, abs=0.6)
        # RAS of the disc centre: the affine maps (slice, y, z) voxels to mm.
        assert m.disc_centre_ras == pytest.approx((6 * 3.0, m.disc_centre_px[0] * 0.5, m.disc_centre_px[1] * 1.25),
                                                  abs=0.05)


def test_a_level_without_axial_data_has_no_area():
    measured = measure_study(known_prediction(axial_present=[True, True, False, True, True]))
    assert measured[2].area_mm2 is None and measured[2].ap_mm is None and measured[2].axial_slice is None
    assert measured[2].sagittal_ap_mm is not None


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="2D"):
        region_area_mm2(np.zeros((2, 2, 2)), (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        region_area_mm2(np.zeros((2, 2)), (1, -1))
    with pytest.raises(ValueError, match="non-empty"):
        principal_axes(np.zeros((3, 3)), (1, 1))


def test_ap_diameter_is_taken_in_the_midline_of_a_crescent():
    # A compressed sac: a crescent 3 pixels deep in the middle, 7 deep at its lateral recesses (rows = left-right).
    mask = np.zeros((9, 12), dtype=bool)
    depth = [7, 7, 5, 4, 3, 4, 5, 7, 7]
    for row, d in enumerate(depth):
        mask[row, 2:2 + d] = True
    assert ap_diameter_mm(mask, (1.0, 0.5), axis=1) == pytest.approx(1.5)  # the midline (row 4): 3 pixels x 0.5 mm
    # a midline between two pixel lines: the mean of both
    assert ap_diameter_mm(mask[:8], (1.0, 0.5), axis=1) == pytest.approx((4 + 3) / 2 * 0.5)


def test_the_dural_sac_is_the_largest_canal_region_measured_once():
    from lss.reporting.measurements import dural_sac_mm

    canal = np.zeros((20, 20), dtype=bool)
    canal[5:15, 4:12] = True  # 10 x 8 pixels: the sac
    canal[0:2, 0:2] = True  # a stray 2 x 2 island: not the sac
    area, ap = dural_sac_mm(canal, (0.5, 0.5))
    assert area == pytest.approx(80 * 0.25) and ap == pytest.approx(8 * 0.5)
    assert dural_sac_mm(np.zeros((4, 4), dtype=bool), (1.0, 1.0)) is None
