"""Seeded fuzzing of the upload readers: every mutated upload is read or refused with a coded error.

An upload (a DICOM folder, a zip of one, a NIfTI or MetaImage file) goes through ``open_study`` and
``preprocess_study``, as Serve and ``lss diagnose`` read it. Whatever its bytes, the outcome must be a study or a
``StudyError``: any other exception is a 500 in the HTTP API, a ``MemoryError`` (or a ``StudyError`` wrapping one)
is an input that can exhaust the server, and a crash of the process (a reader's native code) takes a replica down.
No error message may quote client-supplied text: file, folder and zip entry names carry ``NAME_MARKER``, DICOM text
values ``VALUE_MARKER``, and neither may appear in a message. The peak RSS of a case may grow by less than 2 GiB.

The cases (``tests/data/helpers_fuzz.py``) are built from small valid inputs by seeded mutations: byte flips,
truncations, inserted / deleted / repeated chunks, header fields set to extreme values (NIfTI dims, datatype,
bitpix, vox_offset, pixdim, scaling, qform/sform; MetaImage header lines; DICOM attributes through pydicom, deleted
elements, transfer syntaxes), zip archives with duplicate or hostile names, links, broken central directories and
mixed content. They run in a worker process (``run_in_workers``: forked children with a capped address space), so
that a native crash or a hang fails its own case only. A failing case is reproduced by hand, in one process, with

    .venv/bin/python tests/data/helpers_fuzz.py /tmp/fuzz FORMAT:SEED

which writes the case's files under ``/tmp/fuzz/FORMAT_SEED/in`` and prints the outcome and traceback.
``LSS_FUZZ_SEEDS`` sets the number of seeds per format (default 50: 200 cases, ~25 s; 300 ran clean too).
"""

from __future__ import annotations

import os

import pytest
from helpers_fuzz import (
    FORMATS,
    fuzz_config,
    leaked_fragments,
    limits_argument,
    make_case,
    run_in_workers,
    seed_inputs,
    valid_case,
)

from lss.inference.study_input import open_study
from lss.preprocessing.transforms import preprocess_study

SEEDS_PER_FORMAT = int(os.environ.get("LSS_FUZZ_SEEDS", "50"))
CASES = [pytest.param(fmt, seed, id=f"{fmt}-{seed}") for fmt in FORMATS for seed in range(SEEDS_PER_FORMAT)]
MAX_RSS_GROWTH_MB = 2048
FUZZ_TEST = "test_a_mutated_upload_is_read_or_refused_with_a_coded_error"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return seed_inputs(tmp_path_factory.mktemp("fuzz_seeds"))


@pytest.fixture(scope="module")
def fuzz_results(request, tmp_path_factory):
    """The outcome of every selected fuzz case, all run at once in one worker process (one import of the stack;
    a forked child reads the cases, and a new one goes on after a case that kills it)."""
    selected = [(item.callspec.params["fmt"], item.callspec.params["seed"]) for item in request.session.items
                if getattr(item, "originalname", None) == FUZZ_TEST and item.module is request.module]
    return run_in_workers(selected, tmp_path_factory.mktemp("fuzz_cases"))


def _report(result: dict) -> str:
    """The case, what was done to it and how it ended, for an assertion message."""
    lines = [f"{result['fmt']} seed {result['seed']}: {result['mutation']}",
             f"outcome {result['outcome']} at {result.get('stage', '?')}"]
    for key in ("code", "exception", "message", "top_frame", "lss_frame", "cause", "cause_frame"):
        if result.get(key):
            lines.append(f"{key}: {result[key]}")
    for key in ("traceback", "cause_traceback", "stderr"):
        if result.get(key):
            lines.append(f"{key}:\n{result[key]}")
    return "\n".join(lines)


def test_the_unmutated_inputs_are_read(seeds, tmp_path):
    """What the mutations start from is a usable study in every format (else the fuzz would test nothing)."""
    config = fuzz_config()
    for fmt in FORMATS:
        target = valid_case(fmt, seeds).write(tmp_path / fmt)
        record = open_study(target, workdir=tmp_path / f"{fmt}_work", **limits_argument(open_study, config))
        case = preprocess_study(record, config)
        assert case.sagittal_image.shape == tuple(config.sagittal_shape), fmt


def test_the_cases_are_the_same_every_run(seeds, tmp_path):
    """A failing (format, seed) is reproducible: the valid inputs and the mutations do not depend on the run."""
    assert seed_inputs(tmp_path) == seeds
    for fmt in FORMATS:
        for seed in (0, 1, 17):
            first, second = make_case(fmt, seed, seeds), make_case(fmt, seed, seeds)
            assert first.files == second.files and first.mutation == second.mutation
    assert make_case("nifti", 0, seeds).files != make_case("nifti", 1, seeds).files


@pytest.mark.heavy  # the first case runs them all: about 20 s of worker processes on two cores
@pytest.mark.parametrize(("fmt", "seed"), CASES)
def test_a_mutated_upload_is_read_or_refused_with_a_coded_error(fmt, seed, fuzz_results):
    result = fuzz_results[(fmt, seed)]
    report = _report(result)
    assert result["outcome"] in ("ok", "study_error"), f"neither a study nor a StudyError:\n{report}"
    if result["outcome"] == "study_error":
        assert result.get("cause") != "MemoryError", f"a StudyError hiding a MemoryError:\n{report}"
        leaked = leaked_fragments(result["message"])
        assert not leaked, f"the message quotes client-supplied text {leaked}:\n{report}"
    assert result["rss_growth_mb"] < MAX_RSS_GROWTH_MB, f"peak RSS grew by {result['rss_growth_mb']} MiB:\n{report}"

