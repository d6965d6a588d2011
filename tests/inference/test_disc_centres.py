"""The sagittal pass that matches unlabelled axial series (``lss.inference.predict.disc_centres``): it runs the
sagittal branch alone and names the discs as ``predict_cases`` and ``measure_study`` do, so its disc centres are
theirs. Checked in two parts: the sagittal logits do not depend on the axial input (a real model), and a known mask
gives ``measure_study``'s centres."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "reporting"))
from helpers_prediction import known_prediction  # noqa: E402

from lss.anatomy import LEVELS  # noqa: E402
from lss.data.cases import load_case, read_jsonl  # noqa: E402
from lss.inference.predict import disc_centres, disc_centres_of_mask, predict_cases  # noqa: E402
from lss.model import case_to_sample, collate_samples, load_model  # noqa: E402
from lss.reporting.measurements import measure_study  # noqa: E402


def test_a_known_mask_gives_the_centres_measure_study_gives():
    prediction = known_prediction()
    centres = disc_centres_of_mask(prediction.sagittal_mask, prediction.sagittal_affine, prediction.sagittal_slice)
    measured = {m.level: m.disc_centre_ras for m in measure_study(prediction)}
    assert centres == measured
    assert all(centres[level] is not None for level in LEVELS)  # every disc of the known spine is found


def test_the_sagittal_branch_alone_gives_the_same_logits_and_centres(tiny_model_file, preprocessed_nifti):
    model = load_model(tiny_model_file).eval()
    rows = read_jsonl(preprocessed_nifti / "preprocessed.jsonl")
    cases = [load_case(preprocessed_nifti / r["path"]) for r in rows]
    batch = collate_samples([case_to_sample(dict(c), model.config.sagittal_slices) for c in cases])
    assert batch["axial_present"].any()  # the axial input is there, and must not matter
    with torch.no_grad():
        alone = model(batch["sagittal"]).sagittal_logits
        full = model(batch["sagittal"], batch["axial"], batch["axial_present"]).sagittal_logits
    torch.testing.assert_close(alone, full, rtol=0, atol=0)
    infos = [r.get("info", {}) for r in rows]
    predictions = predict_cases(model, cases, [r["study_id"] for r in rows], infos)
    for found, prediction in zip(disc_centres(model, cases, infos), predictions, strict=True):
        assert found == {m.level: m.disc_centre_ras for m in measure_study(prediction)}


def test_no_study_is_an_error(tiny_model_file):
    with pytest.raises(ValueError, match="at least one study"):
        disc_centres(load_model(tiny_model_file), [])
