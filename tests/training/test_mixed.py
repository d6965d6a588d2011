"""Mixed training on phantoms and real labelled scans: real cases' targets, the mixture sampler, one real Ray run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from lss.anatomy import Structure, label_partition
from lss.config import LSSConfig, MixSource, PreprocessConfig
from lss.data.adapters.card import discover
from lss.data.cases import load_case, read_jsonl
from lss.model import case_to_sample
from lss.preprocessing.pipeline import run_preprocessing
from lss.training import MixtureSampler, run_training

CARDS = REPO_ROOT / "data" / "cards"
SHARED = REPO_ROOT.parent / "shared" / "data" / "real"
needs_shared = pytest.mark.skipif(not (SHARED / "fastcleverseg_vb2").is_dir(), reason="../shared/data/real is absent")


def test_the_mixture_sampler_draws_each_part_by_its_weight():
    sampler = MixtureSampler([30, 3], [1.0, 3.0], num_samples=4000, seed=0)
    drawn = np.array(list(sampler))
    assert abs((drawn >= 30).mean() - 0.75) < 0.03  # 3 of 4 draws from the small, heavily weighted part
    assert list(sampler) == drawn.tolist()  # one epoch is reproducible
    sampler.set_epoch(1)
    assert list(sampler) != drawn.tolist()
    other_rank = MixtureSampler([30, 3], [1.0, 3.0], num_samples=4000, seed=0, rank=1)
    assert list(other_rank) != drawn.tolist()
    with pytest.raises(ValueError, match="positive weight"):
        MixtureSampler([3, 0], [1.0, 1.0], 4)
    with pytest.raises(ValueError, match="same"):
        MixtureSampler([3], [1.0, 1.0], 4)


@pytest.fixture(scope="module")
def real_cases(tmp_path_factory):
    """Three vb2 scans and three Vesal slices, preprocessed from the shared real data through their cards."""
    out = {}
    for name, keep in (("fastcleverseg_vb2", 3), ("vesal_sagittal_2d", 4)):
        folder = tmp_path_factory.mktemp(name)
        records = discover(CARDS / f"{name}.yaml").records[:keep]
        from lss.data.manifest import write_manifest

        write_manifest(records, folder / "in" / "manifest.jsonl")
        run_preprocessing(folder / "in" / "manifest.jsonl", folder / "pre", PreprocessConfig(), engine="serial")
        out[name] = folder / "pre"
    return out


def _span_checked(case: dict, sample: dict) -> torch.Tensor:
    """The columns (superior-inferior) outside the labelled span are unknown, and only those."""
    target = sample["sagittal_target"]
    z = np.flatnonzero((case["sagittal_labels"] != 0).any(axis=(0, 1)))
    assert (target[:, : z[0]] == -1).all() and (target[:, z[-1] + 1:] == -1).all()
    assert not (target[:, z[0]: z[-1] + 1] == -1).any()
    return (target == -1).all(dim=0)


@needs_shared
def test_real_partial_targets(real_cases):
    def first(name):
        rows = [r for r in read_jsonl(real_cases[name] / "preprocessed.jsonl") if r["status"] == "ok"]
        case = load_case(real_cases[name] / rows[0]["path"])
        return case, case_to_sample(case)

    # fastcleverseg_vb2: vertebral bodies only (T11-L5); the rest is merged with the background.
    case, sample = first("fastcleverseg_vb2")
    assert sample["sagittal_partition"].tolist() == label_partition([["vertebral_body"]]).tolist()
    values = set(sample["sagittal_target"].unique().tolist())
    assert values <= {-1, 0, Structure.VERTEBRAL_BODY.index} and Structure.VERTEBRAL_BODY.index in values
    _span_checked(case, sample)
    # Vesal: discs and bodies of the lumbar spine only; T12 and the sacrum lie outside the span: unknown there.
    case, sample = first("vesal_sagittal_2d")
    partition = sample["sagittal_partition"].tolist()
    assert partition[Structure.DISC.index] == Structure.DISC.index and partition[Structure.CANAL.index] == 0
    unknown = _span_checked(case, sample)
    assert unknown.any() and not unknown.all()


@needs_shared
def test_mixed_training_on_phantoms_and_real_scans(ray_session, real_cases, preprocessed_nifti, tmp_path):
    phantoms = preprocessed_nifti
    vb2_ids = [r["study_id"] for r in read_jsonl(real_cases["fastcleverseg_vb2"] / "preprocessed.jsonl")]
    config = LSSConfig.model_validate({
        "model": {"base_channels": 8, "attention_dim": 32, "text_encoder": "random-small"},
        "train": {"epochs": 1, "batch_size": 2, "steps_per_epoch": 3, "val_fraction": 0.5, "test_fraction": 0.0,
                  "max_failures": 0, "storage_path": str(tmp_path / "runs"), "use_axial": False,
                  "mix": [MixSource(path=str(real_cases["fastcleverseg_vb2"]), weight=2.0, holdout=vb2_ids[:1],
                                    val_fraction=0.0, name="fastcleverseg_vb2").model_dump(),
                          MixSource(path=str(real_cases["vesal_sagittal_2d"]), weight=1.0,
                                    name="vesal_sagittal_2d").model_dump()]},
    })
    result = run_training(config, phantoms, name="mixed")
    split = json.loads((result.run_dir / "split.json").read_text())
    assert split["mix"]["fastcleverseg_vb2"]["test"] == vb2_ids[:1]
    assert vb2_ids[0] not in split["mix"]["fastcleverseg_vb2"]["train"]
    assert set(split["mix"]["vesal_sagittal_2d"]["train"]).isdisjoint(split["mix"]["vesal_sagittal_2d"]["val"])
    last = result.history[-1]
    assert 1 <= last["steps"] <= 3 and np.isfinite(last["train_seg_sagittal"])
    assert result.best_model is not None and Path(result.best_model).is_file()
