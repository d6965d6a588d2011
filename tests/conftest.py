"""Shared fixtures: one real local Ray session per test run, and small synthetic datasets made once per run.

Markers (registered in pyproject.toml; `make test-fast` leaves out slow, ray, browser, java and heavy):

- ``ray``: added here to every test that uses the ``ray_session`` fixture, directly or through another fixture; by
  hand to a test that starts Ray some other way (a job run in a subprocess).
- ``java``: by hand, on tests that score reports with pycocoevalcap (PTB tokenizer, METEOR), directly or through a
  fixture.
- ``heavy``: added here to every test that uses one of ``HEAVY_FIXTURES`` (fixtures that take seconds to build:
  synthetic studies, a model, a trained report writer, ...); by hand to other tests that take more than about 2 s
  each on the 2-core development machine.

A test that starts Ray or Java in this process without its marker fails with a message naming the marker to add,
so that `make test-fast` stays free of both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SCAN = REPO_ROOT / "data" / "real" / "sct_t2_lumbar" / "t2_lumbar.nii.gz"

# Small but complete studies: clinical geometry, coarser pixels, no partial-volume sub-sampling.
FAST_SYNTH = dict(
    sagittal_inplane_mm=(0.9, 0.9),
    axial_inplane_mm=(0.9, 0.9),
    through_slice_samples=1,
)


# Fixtures that take seconds to build, by name: the session fixtures below, and module fixtures of these tests.
HEAVY_FIXTURES = {
    "synth_nifti", "synth_dicom", "tiny_model_file", "preprocessed_nifti",
    "draw_500",  # tests/data/test_synth.py: 500 phantom studies
    "trained",  # tests/reporting/test_generator.py and test_fit.py: a trained report writer
    "real_cases",  # tests/training/test_mixed.py: real scans preprocessed
    "studies",  # tests/inference/test_batch.py: study folders and zips to diagnose
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "ray_session" in fixtures:
            item.add_marker(pytest.mark.ray)
        if fixtures & HEAVY_FIXTURES:
            item.add_marker(pytest.mark.heavy)


# The marker guard: what the running test (its setup and call) started in this process.
_guard = {"java": False, "ray_was_up": False}


def _audit(event: str, args: tuple) -> None:
    if event != "subprocess.Popen":
        return
    try:  # never let the guard break a subprocess call
        executable, argv = args[0], args[1]
        if executable is None:
            argv = os.fsdecode(argv).split() if isinstance(argv, (str, bytes, os.PathLike)) else list(argv)
            executable = argv[0] if argv else ""
        if Path(os.fsdecode(executable)).name == "java":
            _guard["java"] = True
    except Exception:  # noqa: BLE001 - an argument shape we do not know: not Java as far as we can tell
        pass


sys.addaudithook(_audit)


def _ray_is_up() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up
def pytest_runtest_setup(item):
    _guard.update(java=False, ray_was_up=_ray_is_up())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield  # a test that failed keeps its own error
    started = {"java"} if _guard["java"] else set()
    if not _guard["ray_was_up"] and _ray_is_up():
        started.add("ray")
    missing = sorted(name for name in started if item.get_closest_marker(name) is None)
    if missing:
        pytest.fail(f"this test starts {' and '.join(missing)} but has no marker for it: add "
                    + ", ".join(f"@pytest.mark.{name}" for name in missing) + " (see tests/conftest.py)", pytrace=False)
    return result


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """A real embedded local Ray, started once for the whole run (2 CPUs, small object store)."""
    from lss.config import RayConfig
    from lss.ray_session import init_ray, shutdown_ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    init_ray(RayConfig(num_cpus=2, object_store_mb=400))
    yield
    shutdown_ray()


def _synth(tmp_path_factory, name: str, **overrides):
    from lss.config import SynthConfig
    from lss.data.synth.generate import generate_dataset

    out = tmp_path_factory.mktemp(name)
    config = SynthConfig(**{**FAST_SYNTH, **overrides})
    records = generate_dataset(config, out)
    return out, records


@pytest.fixture(scope="session")
def synth_dicom(tmp_path_factory):
    """Two synthetic studies written as DICOM series (masks as NIfTI)."""
    return _synth(tmp_path_factory, "synth_dicom", cases=2, seed=100, format="dicom")


@pytest.fixture(scope="session")
def synth_nifti(tmp_path_factory):
    """Two synthetic studies written as NIfTI, with every severity forced present by a uniform prior."""
    return _synth(tmp_path_factory, "synth_nifti", cases=2, seed=200, format="nifti", class_balance="uniform")


@pytest.fixture(scope="session")
def preprocessed_nifti(synth_nifti, tmp_path_factory):
    """``synth_nifti`` preprocessed once (serial engine, default config): model-ready shards for every test that
    trains, evaluates or tunes on them. Read-only: a test that changes shards makes its own copy."""
    from lss.config import PreprocessConfig
    from lss.preprocessing.pipeline import run_preprocessing

    root, records = synth_nifti
    out = tmp_path_factory.mktemp("preprocessed_nifti")
    assert run_preprocessing(root, out, PreprocessConfig(), engine="serial").ok == len(records)
    return out


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A small untrained model saved as an inference file (seeded): real code paths, meaningless grades."""
    import torch

    from lss.config import ModelConfig
    from lss.model import build_model, save_model
    from lss.model.text import TextEncoder

    torch.manual_seed(0)
    config = ModelConfig(base_channels=8, attention_dim=32, text_encoder="random-small")
    model = build_model(config, text_encoder=TextEncoder("random-small"))
    return save_model(model, tmp_path_factory.mktemp("tiny_model") / "model.pt")


def copy_dicom_study(records, target: Path, identifiers: dict[str, str]) -> Path:
    """The first synthetic study's DICOM files (images only: no masks, labels or reports) copied to ``target``,
    with the patient identifiers ``identifiers`` (keyword -> value) written into every header."""
    import pydicom

    source = records[0].resolve(records[0].sagittal().path).parent
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.name.endswith((".nii.gz", ".txt", ".json")):
            continue
        copied = target / path.relative_to(source)
        copied.parent.mkdir(parents=True, exist_ok=True)
        ds = pydicom.dcmread(path)
        for keyword, value in identifiers.items():
            setattr(ds, keyword, value)
        ds.save_as(copied)
    return target

