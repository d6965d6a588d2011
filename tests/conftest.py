"""Shared fixtures: one real local Ray session per test run, and small synthetic datasets made once per run."""

from __future__ import annotations

import os
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

