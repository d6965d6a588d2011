"""Real scans diagnosed as a user's would be (``lss.evaluation.real_scans``): the crop the model's first pass places,
the labels carried onto it, and the counts ``bench/real_blind.py`` and ``jobs/real.py`` report."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO_ROOT
from lss.anatomy import vertebra_label
from lss.config import LSSConfig
from lss.data.adapters.card import discover
from lss.evaluation.real_scans import crop_placement, labels_on_crop, level_safety
from lss.preprocessing.transforms import preprocess_study

CARD = REPO_ROOT / "data" / "cards" / "fastcleverseg_vb2.yaml"
STUDY = "fastcleverseg_vb2_04"
pytestmark = pytest.mark.skipif(not (REPO_ROOT.parent / "shared" / "data" / "real" / "fastcleverseg_vb2").is_dir(),
                                reason="../shared/data/real is absent")


def test_labels_carried_onto_the_same_crop_are_the_labels():
    config = LSSConfig().preprocess
    record = next(r for r in discover(CARD).records if r.study_id == STUDY)
    case = preprocess_study(record, config)
    carried = labels_on_crop(case, case)
    np.testing.assert_array_equal(carried, case.sagittal_labels[case.sagittal_labels.shape[0] // 2])
    lumbar = [vertebra_label(name) for name in ("L1", "L2", "L3", "L4", "L5")]
    assert np.isin(lumbar, carried).all()  # every lumbar body is in the crop the labels place


def test_the_scores_of_one_scan_diagnosed_without_its_mask(tiny_model_file):
    config = LSSConfig()
    offsets, coverage = crop_placement(tiny_model_file, config, CARD, [STUDY])
    assert len(offsets) == len(coverage) == 1
    assert np.isfinite(offsets[0]) and offsets[0] >= 0 and 0.0 <= coverage[0] <= 1.0
    counts = level_safety(tiny_model_file, config, CARD, [STUDY])
    assert counts["levels"] == 5 and counts["assessable"] <= 5 and counts["naming_right"] <= counts["naming_levels"]
    assert counts["graded"] + counts["withheld"] <= counts["assessable"]


def test_an_unknown_study_id_is_a_clear_error(tiny_model_file):
    with pytest.raises(ValueError, match="not in fastcleverseg_vb2.yaml: fastcleverseg_vb2_99"):
        crop_placement(tiny_model_file, LSSConfig(), CARD, [STUDY, "fastcleverseg_vb2_99"])
