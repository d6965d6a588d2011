"""Benchmark: how a Ray Train worker should read the preprocessed cases — a Ray Dataset shard
(``ray.train.get_dataset_shard(...).iter_torch_batches``) or the cached ``CaseDataset`` behind
``ray.train.torch.prepare_data_loader`` (what ``lss train`` uses).

    python bench/data_loading.py              # the benchmark studies of bench/train.py (made once), 3 epochs

Both run inside one TorchTrainer worker over the same training studies and batch size, with no model: the number
is samples/s delivered to the loop, per epoch (epoch 1 includes reading the .npz shards; later epochs show what
caching buys). Compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _loop(config: dict) -> None:
    import ray.train
    import torch

    from lss.model import case_to_sample, collate_samples
    from lss.training import CaseDataset

    rates = []
    if config["mode"] == "dataset_shard":
        shard = ray.train.get_dataset_shard("train")

        def to_batch(rows: dict) -> dict:
            samples = [case_to_sample({k[len("case_"):]: rows[k][i] for k in rows if k.startswith("case_")})
                       for i in range(len(rows["path"]))]
            return collate_samples(samples)

        for _ in range(config["epochs"]):
            started, n = time.perf_counter(), 0
            for batch in shard.iter_torch_batches(batch_size=config["batch"], collate_fn=to_batch):
                n += batch["sagittal"].shape[0]
            rates.append(n / (time.perf_counter() - started))
    else:
        dataset = CaseDataset(config["data"], config["ids"])
        loader = torch.utils.data.DataLoader(dataset, batch_size=config["batch"], shuffle=True,
                                             collate_fn=collate_samples)
        loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
        for _ in range(config["epochs"]):
            started, n = time.perf_counter(), 0
            for batch in loader:
                n += batch["sagittal"].shape[0]
            rates.append(n / (time.perf_counter() - started))
    # Ray Train V2 keeps metrics only with checkpoints: the worker writes its numbers where the driver reads them.
    Path(config["result"]).write_text(json.dumps(rates))
    ray.train.report({"samples_per_s": rates})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="outputs/bench/data/pre", help="a preprocessed folder (bench/train.py's)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from lss.config import RayConfig
    from lss.data.cases import load_case, read_jsonl
    from lss.ray_session import init_ray, shutdown_ray

    data = Path(args.data).resolve()
    if not (data / "preprocessed.jsonl").is_file():
        raise SystemExit(f"{data} has no preprocessed.jsonl: run `python bench/train.py` once to make the studies.")
    rows = [r for r in read_jsonl(data / "preprocessed.jsonl") if r.get("status", "ok") == "ok"]
    ids = [r["study_id"] for r in rows]
    init_ray(RayConfig(num_cpus=2, object_store_mb=800))
    results = {}
    try:
        for mode in ("cached_dataset", "dataset_shard"):
            datasets = None
            if mode == "dataset_shard":
                def read(row: dict) -> dict:
                    case = load_case(row["path"])
                    return {"path": row["path"], **{f"case_{k}": v for k, v in case.items()}}

                datasets = {"train": ray.data.from_items([{"path": str(data / r["path"])} for r in rows]).map(read)}
            trainer = TorchTrainer(
                _loop,
                train_loop_config={"mode": mode, "data": str(data), "ids": ids, "epochs": args.epochs,
                                   "batch": args.batch, "result": str(Path(f"outputs/bench/{mode}.json").resolve())},
                scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                run_config=RunConfig(name=f"bench_data_{mode}", storage_path=str(Path("outputs/bench/ray").resolve())),
                datasets=datasets,
            )
            started = time.perf_counter()
            trainer.fit()
            per_epoch = json.loads(Path(f"outputs/bench/{mode}.json").read_text())
            results[mode] = {"samples_per_s_per_epoch": per_epoch, "wall_s": time.perf_counter() - started}
            rates = ", ".join(f"{r:.1f}" for r in per_epoch)
            print(f"{mode:15s}: samples/s per epoch [{rates}]  (run wall {results[mode]['wall_s']:.0f} s)", flush=True)
    finally:
        shutdown_ray()
    cached, shard = (np.array(results[m]["samples_per_s_per_epoch"]) for m in ("cached_dataset", "dataset_shard"))
    results["ratio_shard_over_cached_epoch1"] = float(shard[0] / cached[0])
    results["ratio_shard_over_cached_later"] = float(shard[1:].mean() / cached[1:].mean()) if len(shard) > 1 else None
    print(f"dataset shard / cached dataset: epoch 1 {results['ratio_shard_over_cached_epoch1']:.2f}x, later epochs "
          f"{results['ratio_shard_over_cached_later']:.2f}x ({len(ids)} studies, batch {args.batch})")
    Path("outputs/bench/data_loading.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
