"""Ray Train end to end on a real local Ray: split, checkpoints, a killed worker resumed with its PID state."""

from __future__ import annotations

import json

import pytest
import torch

from lss.config import LSSConfig
from lss.model import load_model
from lss.training import load_split, run_training, split_studies


def test_split_is_deterministic_and_disjoint():
    ids = [f"s{i:03d}" for i in range(40)]
    split = split_studies(ids, 0.15, 0.15, seed=1)
    assert split == split_studies(list(reversed(ids)), 0.15, 0.15, seed=1)
    assert sorted(split["train"] + split["val"] + split["test"]) == ids
    assert (len(split["test"]), len(split["val"])) == (6, 6)
    assert split != split_studies(ids, 0.15, 0.15, seed=2)
    # Adding studies keeps the earlier ones where they were (hash-ranked).
    bigger = split_studies(ids + ["s999"], 0.0, 0.0)
    assert "s999" in bigger["train"]
    with pytest.raises(ValueError, match="< 1"):
        split_studies(ids, 0.5, 0.5)
    with pytest.raises(ValueError, match="no training study"):
        split_studies(["a", "b"], 0.5, 0.4)


@pytest.fixture(scope="module")
def preprocessed(preprocessed_nifti):
    return preprocessed_nifti


def test_killed_worker_resumes_from_checkpoint_with_pid_state(ray_session, preprocessed, tmp_path):
    config = LSSConfig.model_validate({
        "model": {"base_channels": 8, "attention_dim": 32, "text_encoder": "random-small"},
        "train": {"epochs": 3, "batch_size": 1, "steps_per_epoch": 2, "val_fraction": 0.5, "test_fraction": 0.0,
                  "max_failures": 1, "fail_at_epoch": 2, "cpus_per_worker": 1.0, "storage_path": str(tmp_path),
                  "augment": True},
        "loss": {"name": "pid_tversky", "kp": 0.2, "ki": 0.05, "ema": 0.0},
    })
    result = run_training(config, preprocessed, name="fault")
    history = [row for row in result.history if "epoch" in row]
    epochs = [int(row["epoch"]) for row in history]
    assert epochs[-1] == 3 and set(epochs) == {1, 2, 3}
    last = history[-1]
    assert last["start_epoch"] == 3  # the restarted worker began after the last checkpoint, not from scratch
    by_epoch = {int(row["epoch"]): row for row in history}
    # The PID controller continued: its update count kept growing across the kill (one update per step; a reset
    # controller would count only epoch 3's steps), and beta moved off its base.
    steps = sum(by_epoch[e]["steps"] for e in (1, 2, 3))
    assert by_epoch[3]["pid_updates_sagittal"] == by_epoch[2]["pid_updates_sagittal"] + by_epoch[3]["steps"] == steps
    betas = [v for k, v in last.items() if k.startswith("beta_sagittal_")]
    assert betas and any(abs(b - 0.5) > 1e-6 for b in betas)
    assert result.best_model is not None and result.best_model.is_file()
    model = load_model(result.best_model)
    assert isinstance(model, torch.nn.Module)
    # The canal offset was fitted on the validation split and saved with the model.
    assert model.canal_offset.fitted and model.canal_offset.n_levels > 0
    split = json.loads((result.run_dir / "split.json").read_text())
    assert split == load_split(preprocessed, 0.5, 0.0, 0)
    assert any((result.run_dir / "tensorboard").iterdir())


def test_two_workers_train_validate_and_stop_at_a_plateau_together(ray_session, preprocessed, tmp_path):
    """DDP on 2 workers: every rank validates its shard (MONAI's metrics all-gather), and both stop at the same
    validation plateau; nothing waits forever. No gain can reach min_delta = 1 (Dice is at most 1): the run stops
    `patience` epochs after its first."""
    config = LSSConfig.model_validate({
        "model": {"base_channels": 8, "attention_dim": 32, "text_encoder": "random-small"},
        "train": {"epochs": 6, "batch_size": 1, "steps_per_epoch": 1, "val_fraction": 0.5, "test_fraction": 0.0,
                  "num_workers": 2, "cpus_per_worker": 0.5, "max_failures": 0, "storage_path": str(tmp_path),
                  "augment": False, "use_axial": False,
                  "early_stopping_patience": 2, "early_stopping_min_delta": 1.0},
    })
    result = run_training(config, preprocessed, name="ddp")
    history = [row for row in result.history if "epoch" in row]
    assert [int(row["epoch"]) for row in history] == [1, 2, 3]
    assert [bool(row["early_stopped"]) for row in history] == [False, False, True]
    assert all(int(row["best_epoch"]) == 1 for row in history)
    assert 0.0 <= result.metrics["val_dice_macro"] <= 1.0
    assert result.best_model is not None and result.best_model.is_file()
