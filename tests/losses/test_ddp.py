"""lss.losses.pid_tversky under DDP: two Ray Train workers (gloo) on halves of each batch end with the same weights,
equal to one process on the whole batches, because the counts behind the error are all-reduced (SUM)."""

from __future__ import annotations

import json
import sys

import torch

from lss.losses import AdaptivePIDTverskyLoss

STEPS = 4
KWARGS = {"to_onehot_y": True, "softmax": True, "num_classes": 3, "kp": 0.3, "ki": 0.1, "kd": 0.05, "ema": 0.5}


def batches() -> tuple[torch.Tensor, torch.Tensor]:
    """STEPS batches of 4 studies: logits (STEPS, 4, 3, 8, 8) and labels (STEPS, 4, 1, 8, 8). The two halves differ:
    the first studies are predicted well, the others miss most of class 2, so each worker alone would disagree."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (STEPS, 4, 1, 8, 8), generator=g)
    logits = torch.nn.functional.one_hot(labels[:, :, 0], 3).permute(0, 1, 4, 2, 3).float() * 2.0
    logits = logits + torch.randn(logits.shape, generator=g)
    logits[:, 2:, 2] -= 3.0
    return logits, labels


def train_loop(config: dict) -> None:
    # Runs on each Ray Train worker, in its own process; Ray Train has set up the gloo process group.
    import json
    from pathlib import Path

    import ray.train
    import torch.distributed as dist

    from lss.losses import AdaptivePIDTverskyLoss

    rank = ray.train.get_context().get_world_rank()
    logits, labels = config["logits"], config["labels"]
    half = logits.shape[1] // 2
    mine = slice(rank * half, (rank + 1) * half)
    per_step = AdaptivePIDTverskyLoss(**config["kwargs"], update="step")
    per_epoch = AdaptivePIDTverskyLoss(**config["kwargs"], update="epoch")
    for step in range(logits.shape[0]):
        for loss in (per_step, per_epoch):
            x = logits[step, mine].clone().requires_grad_(True)
            loss(x, labels[step, mine]).backward()
    per_epoch.end_epoch()
    result = {
        "rank": rank,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "step": [t.tolist() for t in per_step.alpha_beta()],
        "epoch": [t.tolist() for t in per_epoch.alpha_beta()],
    }
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(result))
    ray.train.report({"rank": rank, "beta_step": result["step"][1]})


def single_process(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, list[list[float]]]:
    per_step = AdaptivePIDTverskyLoss(**KWARGS, update="step")
    per_epoch = AdaptivePIDTverskyLoss(**KWARGS, update="epoch")
    for step in range(logits.shape[0]):
        for loss in (per_step, per_epoch):
            loss(logits[step], labels[step])
    per_epoch.end_epoch()
    return {"step": [t.tolist() for t in per_step.alpha_beta()], "epoch": [t.tolist() for t in per_epoch.alpha_beta()]}


def test_workers_agree_with_each_other_and_with_one_process(ray_session, tmp_path):
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # Workers cannot import this test module (pytest put its folder on the path): ship train_loop by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    logits, labels = batches()
    out = tmp_path / "ranks"
    out.mkdir()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"logits": logits, "labels": labels, "kwargs": KWARGS, "out": str(out)},
        # Ray Train V2's controller takes no CPU: two half-CPU workers fit the 2-CPU test cluster.
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path / "ray"), name="pid_tversky_ddp"),
    )
    trainer.fit()

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["backend"] == "gloo"
    expected = single_process(logits, labels)
    for mode in ("step", "epoch"):
        # the two workers hold bit-identical weights: they stepped the same controller on the same reduced counts
        assert ranks[0][mode] == ranks[1][mode]
        # and the weights of one process on the union batch, up to the summation order of float32 counts
        torch.testing.assert_close(torch.tensor(ranks[0][mode]), torch.tensor(expected[mode]), rtol=0, atol=1e-6)
    assert expected["step"][1][2] > 0.6  # class 2 is under-segmented: its beta moved (the test is not idle)

    # Without the all-reduce, a worker would follow its own half: the halves really disagree.
    alone = single_process(logits[:, :2], labels[:, :2])
    assert abs(alone["step"][1][2] - expected["step"][1][2]) > 0.05
