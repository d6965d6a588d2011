"""``lss diagnose`` on scans with no lumbar spine (a head, a knee, a blank volume, noise), an axial-only study, a
coronal-only study and a single sagittal slice, written as real NIfTI files: a coded refusal (exit 1, the
``StudyError`` code printed), or every level "not assessable" with its reasons; never a grade. The model is small and
untrained (``tiny_model_file``): its grades are arbitrary, so only the gate may stop them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers_no_grade import assert_every_level_not_assessable, error_code_in
from helpers_volumes import BAD_STUDIES, write_study
from lss.cli import main
from lss.data.io import read_volume


@pytest.mark.parametrize("case", list(BAD_STUDIES))
def test_each_scan_is_read_as_the_intended_view(case, tmp_path):
    """The inputs are what they claim: the readers infer the intended plane from the stored geometry alone."""
    path = write_study(case, tmp_path)
    volume = read_volume(path)
    built = BAD_STUDIES[case].build()
    assert volume.meta["view"] == built.meta["intended_view"]
    np.testing.assert_allclose(volume.affine, built.affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, built.array)
    if case == "blank":
        assert not volume.array.any()
    if case == "single_slice":
        assert sorted(volume.shape)[0] == 1


@pytest.mark.parametrize("case", list(BAD_STUDIES))
def test_lss_diagnose_never_grades_a_scan_without_a_lumbar_spine(case, tmp_path, tiny_model_file, capsys):
    study = write_study(case, tmp_path / "in")
    out = tmp_path / "out"
    code = main(["diagnose", str(study), "--checkpoint", str(tiny_model_file), "--out", str(out)])
    printed = capsys.readouterr()
    allowed = BAD_STUDIES[case].codes
    if code != 0:
        assert code == 1, f"exit {code}: {printed.err}"
        error = error_code_in(printed.err)
        assert error is not None, f"a refusal without a StudyError code: {printed.err!r}"
        assert not allowed or error in allowed, f"{case}: refused with {error!r}, expected one of {sorted(allowed)}"
        assert not (out / "report.json").exists() and not (out / "report.txt").exists()
        return
    document = json.loads((out / "report.json").read_text())
    text = (out / "report.txt").read_text()
    assert_every_level_not_assessable(document, text)
    assert "not assessable" in printed.out.lower()  # what the CLI prints is the same report

