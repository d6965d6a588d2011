"""Benchmark: the Serve application over HTTP against the same pipeline in-process; batching; load; a replica kill.

    python bench/serve.py                      # a standard synthetic DICOM study, a default-size untrained model
    python bench/serve.py --model outputs/exp/runs/exp12/best_model.pt --load-seconds 60
    python bench/serve.py --device cuda --load-seconds 30     # on a GPU (bench/gpu.sh): Segmenter replicas on the GPU

One run prints (and writes to outputs/bench/serve_{cpu,cuda}.json):

1. in-process: upload bytes -> unpack -> preprocess (+ sagittal pass) -> model -> findings -> grounded report,
   sequentially (the cost Serve cannot remove);
2. Serve at concurrency 1, 4 and 16: p50 / p95 / p99 latency and throughput; Serve's overhead as the ratio of
   the p50s at concurrency 1, and where it goes (each stage's p50 in-process and in Serve, and the in-process chain
   again while the Serve application idles beside it: what Ray's own background work costs on this machine), and
   the ratio measured in interleaved pairs (one study in-process, then the same through Serve), which the machine's
   drift between phases cannot move;
3. batching on (max_batch_size 4) vs off (1) at concurrency 4, switched by a user_config redeploy;
4. a load of 16 concurrent clients for --load-seconds: the 5xx count and the replica counts over time (up with the
   load, back down after it);
5. a fault: 2 Segmenter replicas under load, one replica's process killed; failed requests (the client retries once)
   and the seconds until 2 replicas run again.

Timings on a shared 2-core machine are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def _study_zip(out: Path) -> bytes:
    """One standard synthetic study (sagittal + 5 axial stacks, DICOM), images only, zipped.

    The generator's default 300 mm sagittal field of view reaches the sacrum; with the 260 mm of earlier defaults
    this phantom ended inside S1, level naming (rightly) refused to count from a sacrum it could not tell from a cut
    L5, every level was "not assessable" and the chain stopped short of the axial stages."""
    from lss.config import SynthConfig
    from lss.data.synth.generate import generate_dataset

    generate_dataset(SynthConfig(cases=1, seed=777, format="dicom"), out)  # reused while its settings are the same
    study = next((out / "studies").iterdir())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(study.rglob("*")):
            if path.is_file() and not path.name.endswith((".nii.gz", ".txt", ".json")):
                zf.write(path, path.relative_to(study.parent))
    return buffer.getvalue()


def _model(path: str | None, out: Path, text_encoder: str) -> Path:
    if path:
        return Path(path).resolve()
    from lss.config import LSSConfig
    from lss.model import build_model, save_model

    target = out / f"default_untrained_{text_encoder}.pt"
    if not target.is_file():
        torch.manual_seed(0)
        config = LSSConfig.model_validate({"model": {"text_encoder": text_encoder}})
        save_model(build_model(config.model, config.preprocess.axial_slices, config.preprocess.axial_spacing_mm),
                   target)
    return target.resolve()


class _InProcessChain:
    """The same chain as the Serve graph (``Diagnoser``: prepare -> segment -> grade -> report), in this process.

    Each call diagnoses one upload and returns its seconds and each stage's: ``open`` (write, unzip, list),
    ``prepare`` (with its locator pass and, where axial series need levels, a sagittal pass of the model: ``of which
    model passes``), ``segmentation``, ``grade+report``.
    """

    def __init__(self, model_path: Path, device: str) -> None:
        from lss.inference import Diagnoser

        self.diagnoser = Diagnoser(model_path, device=device)
        # The locator and sagittal passes, timed as the Serve Preprocessor times its calls to the Segmenter for them.
        self.spent: list[float] = []
        preparer = self.diagnoser.preparer
        preparer.locate, preparer.find_discs = self._timed(preparer.locate), self._timed(preparer.find_discs)
        self.last = None

    def _timed(self, function):
        def call(*args):
            started = time.perf_counter()
            try:
                return function(*args)
            finally:
                self.spent.append(time.perf_counter() - started)
        return call

    def __call__(self, payload: bytes) -> tuple[float, dict]:
        from lss.inference import open_study
        from lss.inference.prepare import without_labels
        from lss.reporting import build_findings

        diagnoser = self.diagnoser
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            archive = Path(folder) / "upload.zip"
            archive.write_bytes(payload)
            # diagnose_path's steps, timed one by one
            record = without_labels(open_study(archive, Path(folder) / "work",
                                               limits=diagnoser.config.preprocess.limits))
            self.spent.clear()
            opened = time.perf_counter()
            prepared = diagnoser.prepare(record)
            ready = time.perf_counter()
            prediction = diagnoser.predict(prepared)
            predicted = time.perf_counter()
            findings = build_findings(prediction)
            diagnoser.reporter.write(findings, prediction)
        ended = time.perf_counter()
        self.last = (prepared, findings)
        return ended - started, {"open": opened - started, "prepare": ready - opened,
                                 "of which model passes": sum(self.spent), "segmentation": predicted - ready,
                                 "grade+report": ended - predicted}

    def run(self, payload: bytes, n: int) -> tuple[list[float], list[dict]]:
        """``n`` studies in a row after one that warms the caches: their seconds and stage seconds."""
        self(payload)
        prepared, findings = self.last
        # which path the chain took: a level not named skips the axial matching and grading
        print(f"in-process answer: levels {dict(Counter(level.status for level in findings.levels))}; axial series "
              f"matched to {len(prepared.axial_matched)} levels", flush=True)
        rows = [self(payload) for _ in range(n)]
        return [seconds for seconds, _ in rows], [stages for _, stages in rows]


def _p50s(rows: list[dict]) -> dict[str, float]:
    return {key: round(statistics.median(row[key] for row in rows), 3) for key in rows[0]}


def _post(url: str, payload: bytes, retry: bool = False) -> tuple[int, float]:
    started = time.perf_counter()
    for _ in range(2 if retry else 1):
        try:
            status = requests.post(f"{url}/v1/diagnose", files={"files": ("study.zip", payload)},
                                   timeout=300).status_code
        except requests.RequestException:
            status = 599
        if status < 500:
            break
    return status, time.perf_counter() - started


def _timed_post(url: str, payload: bytes) -> tuple[float, dict]:
    """One diagnosis: the client's seconds and the server's ``timings_s``."""
    started = time.perf_counter()
    response = requests.post(f"{url}/v1/diagnose", files={"files": ("study.zip", payload)}, timeout=300)
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["timings_s"]


def _burst(url: str, payload: bytes, concurrency: int, n: int) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: _post(url, payload), range(n)))
    wall = time.perf_counter() - started
    latencies = np.array([t for s, t in results if s == 200])
    return {"concurrency": concurrency, "requests": n, "ok": int(len(latencies)),
            "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
            "p99_s": float(np.percentile(latencies, 99)), "throughput_per_s": len(latencies) / wall}


def _replicas() -> dict[str, int]:
    from ray import serve

    app = serve.status().applications.get("lss")
    if app is None:
        return {}
    return {name: sum(n for state, n in d.replica_states.items() if str(state).endswith("RUNNING"))
            for name, d in app.deployments.items()}


def _config(port: int, model: Path, results: Path, segmenter: dict | None = None, gpu: bool = False) -> dict:
    """serve_configs/local.yaml on ``port``; with ``gpu`` each Segmenter replica takes half of a GPU (as gpu.yaml)."""
    from lss.serve import resolve_config

    data = yaml.safe_load((REPO / "serve_configs" / "local.yaml").read_text())
    data["http_options"]["port"] = port
    app = data["applications"][0]
    app["args"]["model_path"] = str(model)
    # Every benchmark client connects from 127.0.0.1: the per-address upload cap (serve.max_uploads_per_client, 4
    # by default, 429 above it) would measure the guard, not the graph; bench/hostile.py measures the guard.
    app["args"]["overrides"] = list(app["args"].get("overrides") or []) + [f"serve.results_dir={results}",
                                                                           "serve.max_uploads_per_client=16"]
    seg = next(d for d in app["deployments"] if d["name"] == "Segmenter")
    seg.update(segmenter or {})
    if gpu:
        seg["ray_actor_options"] = {**seg.get("ray_actor_options", {}), "num_gpus": 0.5}
    return resolve_config(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model file (default: an untrained default-size model)")
    parser.add_argument("--requests", type=int, default=24,
                        help="requests per concurrency level (p50s over fewer move ~10%% between runs on 2 cores)")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the in-process model and the Segmenter run")
    parser.add_argument("--text-encoder", default="minilm", help="for the default untrained model: 'minilm' or "
                                                                 "'random-small'")
    parser.add_argument("--out", default="outputs/bench/serve")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from ray import serve

    from lss.config import RayConfig
    from lss.ray_session import init_ray, shutdown_ray
    from lss.serve import deploy_config, free_port

    payload = _study_zip(out / "study")
    model = _model(args.model, out, args.text_encoder)
    where = torch.cuda.get_device_name(0) if gpu else "CPU"
    report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {where}", "device": args.device,
                    "upload_bytes": len(payload)}
    print(f"device: {args.device} ({where}); model: {model.name}", flush=True)

    # [1] The pipeline in-process, sequentially.
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    chain = _InProcessChain(model, args.device)
    local, local_stages = chain.run(payload, args.requests)
    report["in_process"] = {"p50_s": statistics.median(local), "n": len(local), "stages_p50_s": _p50s(local_stages)}
    print(f"in-process pipeline: p50 {report['in_process']['p50_s']:.3f} s over {len(local)} studies; stages p50 "
          f"{report['in_process']['stages_p50_s']}", flush=True)

    # [2] Serve at concurrency 1, 4, 16.
    init_ray(RayConfig(object_store_mb=600))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    results_dir = (out / "results").resolve()
    deploy_config(_config(port, model, results_dir, gpu=gpu))
    for _ in range(2):
        _post(url, payload)  # warm-up: imports, first forward
    report["serve"] = []
    for concurrency in (1, 4, 16):
        row = _burst(url, payload, concurrency, max(args.requests, concurrency * 2))
        report["serve"].append(row)
        print(f"serve c={concurrency:2d}: p50 {row['p50_s']:.3f} s  p95 {row['p95_s']:.3f}  p99 {row['p99_s']:.3f}  "
              f"{row['throughput_per_s']:.2f} studies/s  ({row['ok']}/{row['requests']} ok)", flush=True)
        if concurrency == 1:
            # Where Serve's extra time goes: the server's own stage timings (``unpack`` is the in-process ``open``;
            # the Preprocessor's ``preprocess`` includes its calls to the Segmenter for the locator and the sagittal
            # pass), the rest of the ingress' time (the hops between stages), the HTTP proxy (with the multipart
            # parsing of the upload).
            rows = []
            for _ in range(args.requests):
                client_s, timings = _timed_post(url, payload)
                stages = sum(timings.get(k, 0.0) for k in ("unpack", "preprocess", "segmentation", "grading", "report"))
                rows.append({"client": client_s, "http+proxy": client_s - timings["total"], "upload": timings["upload"],
                             "unpack": timings["unpack"], "preprocess": timings["preprocess"],
                             "of which Segmenter calls": timings["preprocess_segmenter_calls"],
                             "segmentation": timings["segmentation"],
                             "grading+report": timings.get("grading", 0.0) + timings.get("report", 0.0),
                             "hops": timings["total"] - timings["upload"] - stages})
            report["serve_stages_p50_s"] = _p50s(rows)
            print(f"serve c= 1, stages p50: {report['serve_stages_p50_s']}", flush=True)
    report["serve_overhead_ratio_c1"] = report["serve"][0]["p50_s"] / report["in_process"]["p50_s"]
    print(f"Serve p50 / in-process p50 at concurrency 1: {report['serve_overhead_ratio_c1']:.3f}", flush=True)
    # The same in-process chain again, with the idle Serve application beside it: on 2 cores Ray's and Serve's own
    # background work (controller loop, health checks, metrics) slows every stage; this separates that cost from the
    # graph's (HTTP, hops, round trips).
    beside, _ = chain.run(payload, args.requests)
    report["in_process_beside_idle_serve_p50_s"] = statistics.median(beside)
    print(f"in-process pipeline with the Serve application idle beside it: p50 {statistics.median(beside):.3f} s; "
          f"Serve p50 / that: {report['serve'][0]['p50_s'] / statistics.median(beside):.3f}", flush=True)
    # Paired and interleaved: one study in-process, then the same study through Serve, --requests times. The
    # machine's speed drifts by 10-25% between the phases above (a shared VM); a pair sees the same machine.
    pairs = []
    for _ in range(args.requests):
        local_s, _ = chain(payload)
        serve_s, _ = _timed_post(url, payload)
        pairs.append((local_s, serve_s))
    ratios = [serve_s / local_s for local_s, serve_s in pairs]
    report["interleaved"] = {"n": len(pairs), "in_process_p50_s": statistics.median(p[0] for p in pairs),
                             "serve_p50_s": statistics.median(p[1] for p in pairs),
                             "ratio_p50": statistics.median(ratios),
                             "ratio_quartiles": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]}
    row = report["interleaved"]
    print(f"interleaved pairs (in-process, then Serve, {len(pairs)} times): in-process p50 "
          f"{row['in_process_p50_s']:.3f} s, Serve p50 {row['serve_p50_s']:.3f} s; Serve / in-process per pair: "
          f"median {row['ratio_p50']:.3f} (quartiles {row['ratio_quartiles'][0]:.3f}-{row['ratio_quartiles'][1]:.3f})",
          flush=True)

    # [3] Batching on vs off at concurrency 4 (a user_config redeploy: no restart).
    report["batching"] = {}
    for size in (1, 4):
        deploy_config(_config(port, model, results_dir, {"user_config": {"model_path": str(model),
                                                                         "max_batch_size": size}}, gpu=gpu))
        row = _burst(url, payload, 4, max(args.requests, 8))
        report["batching"][f"max_batch_size_{size}"] = row
        print(f"batching max_batch_size={size}: p50 {row['p50_s']:.3f} s, {row['throughput_per_s']:.2f} studies/s",
              flush=True)

    # [4] Sustained load: 16 clients for --load-seconds; replica counts sampled every 2 s, then the cool-down.
    statuses: list[int] = []
    samples: list[tuple[float, dict]] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            statuses.append(_post(url, payload)[0])

    threads = [threading.Thread(target=client) for _ in range(16)]
    started = time.time()
    for t in threads:
        t.start()
    while time.time() - started < args.load_seconds:
        samples.append((time.time() - started, _replicas()))
        time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join()
    cool = time.time()
    while time.time() - cool < 90:
        samples.append((time.time() - started, _replicas()))
        if all(samples[-1][1].get(name, 1) <= 1 for name in ("Segmenter", "Preprocessor", "Reporter")):
            break
        time.sleep(3.0)
    peak = {name: max(s.get(name, 0) for _, s in samples) for name in ("Preprocessor", "Segmenter", "Reporter")}
    report["load"] = {"seconds": args.load_seconds, "requests": len(statuses),
                      "status_5xx": sum(s >= 500 for s in statuses), "status_counts": {
                          str(s): statuses.count(s) for s in sorted(set(statuses))},
                      "peak_replicas": peak, "final_replicas": samples[-1][1],
                      "seconds_to_scale_down": samples[-1][0] - (cool - started)}
    print(f"load: {len(statuses)} requests in {args.load_seconds:.0f} s, statuses {report['load']['status_counts']}, "
          f"5xx {report['load']['status_5xx']}; "
          f"peak replicas {peak}; back to {samples[-1][1]} {report['load']['seconds_to_scale_down']:.0f} s after "
          "the load stopped", flush=True)

    # [5] Fault: 2 Segmenter replicas under load from 4 clients; kill one replica's process.
    import ray

    deploy_config(_config(port, model, results_dir, {"autoscaling_config": None, "num_replicas": 2,
                                                     "user_config": {"model_path": str(model)}}, gpu=gpu))
    fault_statuses: list[int] = []
    stop = threading.Event()

    def retrying_client():
        while not stop.is_set():
            fault_statuses.append(_post(url, payload, retry=True)[0])

    threads = [threading.Thread(target=retrying_client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(8.0)
    victim = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                  if "Segmenter" in a["name"] and a["name"].startswith("SERVE_REPLICA"))
    killed_at = time.time()
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    recovered = None
    while time.time() - killed_at < 120:
        time.sleep(1.0)
        if _replicas().get("Segmenter", 0) >= 2 and time.time() - killed_at > 2:
            recovered = time.time() - killed_at
            break
    time.sleep(5.0)
    stop.set()
    for t in threads:
        t.join()
    report["fault"] = {"requests": len(fault_statuses), "failed_after_one_retry": sum(s >= 500 for s in fault_statuses),
                       "seconds_to_two_replicas": recovered}
    print(f"fault: {len(fault_statuses)} requests, {report['fault']['failed_after_one_retry']} failed after one retry; "
          f"2 Segmenter replicas again after {recovered if recovered is None else round(recovered, 1)} s", flush=True)

    serve.shutdown()
    shutdown_ray()
    shutil.rmtree(results_dir, ignore_errors=True)
    written = Path("outputs/bench") / f"serve_{'cuda' if gpu else 'cpu'}.json"
    written.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {written}")


if __name__ == "__main__":
    main()
