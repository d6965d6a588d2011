"""Phantoms with random sagittal fields of view: the superior edge anywhere from T11 to L2, the inferior edge in the
sacrum; reproducible per study, and the default studies as they were."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lss.anatomy import DISC_LABEL_OFFSET, VERTEBRAE, vertebra_label
from lss.config import SynthConfig
from lss.data.io import read_volume
from lss.data.synth.generate import _fingerprint, generate_study
from lss.data.synth.phantom import sample_phantom
from lss.data.synth.render import sample_contrast
from lss.data.synth.views import render_view, sagittal_grid, sample_sagittal_extent

BODIES = set(range(1, 26))


def _random_fov_mask(seed: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The mid-sagittal mask of one random field of view, coarse (1.5 mm pixels) to stay quick."""
    rng = np.random.default_rng(seed)
    phantom = sample_phantom(rng)
    extent = sample_sagittal_extent(phantom, rng, (10.0, 50.0), 260.0)
    grid = sagittal_grid(phantom, 1.5, 4.0, (260.0, 200.0), 4.0, extent_w=extent)  # one slice
    _, mask = render_view(phantom, grid, sample_contrast(rng), rng, through_slice_samples=1)
    return mask.array[:, :, 0], extent  # (anterior -> posterior, superior -> inferior)


@pytest.mark.parametrize("seed", range(6))
def test_random_fields_of_view_hold_s1_and_start_between_t11_and_l2(seed):
    mask, (low_w, high_w) = _random_fov_mask(seed)
    assert -50.0 <= low_w <= -10.0 and high_w > low_w
    bodies = {int(v) for v in np.unique(mask)} & BODIES
    assert vertebra_label("S1") in bodies and vertebra_label("L5") in bodies and vertebra_label("L3") in bodies
    top_body = max(bodies)
    assert vertebra_label("L2") <= top_body <= vertebra_label("T11"), VERTEBRAE[top_body - 1]
    # The edges cut through bone: S1 at the inferior edge, a body from L2 up to T11 (or a disc between) superiorly.
    inferior_edge = {int(v) for v in np.unique(mask[:, -3:])}
    assert vertebra_label("S1") in inferior_edge
    superior_edge = {int(v) for v in np.unique(mask[:, :3])}
    top_structures = {v for v in superior_edge if v in BODIES or DISC_LABEL_OFFSET < v <= DISC_LABEL_OFFSET + 25}
    assert top_structures and all(
        vertebra_label("L2") <= (v if v in BODIES else v - DISC_LABEL_OFFSET) <= vertebra_label("T11")
        for v in top_structures), top_structures


def test_random_extents_cover_the_whole_range_and_respect_the_maximum():
    rng = np.random.default_rng(0)
    phantom = sample_phantom(np.random.default_rng(1))
    draws = np.array([sample_sagittal_extent(phantom, rng, (10.0, 50.0), 260.0) for _ in range(400)])
    bounds = phantom.disc_bounds
    l2_mid = (bounds[3, 1] + bounds[4, 0]) / 2
    t11_top = bounds[6, 1] + phantom.vertebra_height[7]
    assert draws[:, 0].min() >= -50 and draws[:, 0].max() <= -10
    assert draws[:, 1].min() >= l2_mid and draws[:, 1].max() <= t11_top
    assert (draws[:, 1] < bounds[4, 0]).any() and (draws[:, 1] > bounds[6, 1]).any()  # L1/L2 out; T11 in
    short = np.array([sample_sagittal_extent(phantom, rng, (10.0, 50.0), 220.0) for _ in range(100)])
    assert (short[:, 1] - short[:, 0]).max() <= 220.0
    with pytest.raises(ValueError, match="can not reach L2"):
        sample_sagittal_extent(phantom, rng, (10.0, 50.0), 40.0)
    with pytest.raises(ValueError, match="inferior < superior"):
        sagittal_grid(phantom, 1.0, 4.0, (260.0, 200.0), 4.0, extent_w=(50.0, -10.0))


def test_random_fov_studies_are_reproducible_and_the_default_is_unchanged(tmp_path):
    config = SynthConfig(cases=1, sagittal_fov_random=True, report_styles=["concise"], axial_slices=1,
                         axial_fov_mm=60.0, sagittal_lateral_coverage_mm=8.0)
    first = generate_study(0, config, tmp_path / "a")
    second = generate_study(0, config, tmp_path / "b")
    masks = [read_volume(tmp_path / name / r.sagittal().mask_path).array for name, r in (("a", first), ("b", second))]
    np.testing.assert_array_equal(masks[0], masks[1])
    assert vertebra_label("S1") in np.unique(masks[0])
    truth = json.loads((tmp_path / "a" / "studies" / first.study_id / "truth.json").read_text())
    low_w, high_w = truth["phantom"]["sagittal_extent_w_mm"]
    assert -50 <= low_w <= -10 < high_w
    # Default: off, and the fingerprint (hence the cache of studies already on disk) is the one it always was.
    default = SynthConfig()
    assert default.sagittal_fov_random is False
    assert _fingerprint(default, 0) != _fingerprint(default.model_copy(update={"sagittal_fov_random": True}), 0)
    assert _fingerprint(default, 0) == _fingerprint(default.model_copy(update={"sagittal_fov_sacrum_mm": (5, 9)}), 0)
    with pytest.raises(ValueError, match="inferior edge"):
        SynthConfig(sagittal_fov_sacrum_mm=(30.0, 20.0))
