"""The preprocessing stage on Ray Data: a dataset folder in any supported layout -> model-ready case shards.

    manifest (adapter) -> plan (reuse what is unchanged) -> ray.data.from_items
        -> map_batches(StudyPreprocessor, actor pool, fractional CPUs; several datasets can share one pool)
        -> OUT/cases/<study_id>.npz   (one shard per study, written by the actor)
        -> OUT/preprocessed.jsonl     (one row per case: path, sha256, fingerprint, labels, label_groups, reports)
        -> OUT/errors.jsonl           (one row per failed study: code, message, stage)

The format of these files is ``lss.data.cases``; this module is the orchestration. A study whose inputs and
settings are unchanged since the last run (same fingerprint, shard present with the same checksum; or the same
failure) is not processed again, so re-running on the same input is a no-op. On a cluster, ``OUT`` must be storage
every node can write (NFS, or a mounted bucket). Log lines name a study by ``lss.data.privacy.anonymous_id``
(folder names of clinical exports can hold patient names); ``errors.jsonl`` keeps the ids.

Reading budget: ``config.limits`` (``lss.config.InputLimits``) bounds what discovery reads of the headers and what
each study may cost to read and resample (``lss.data.io.limits``); a study over it is an error row with code
``image_too_large`` (its path stays in ``errors.jsonl``, a local file), and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from lss.config import PreprocessConfig, RayConfig
from lss.data.adapters import build_manifest
from lss.data.cases import ERRORS_NAME, INDEX_NAME, file_sha256, read_jsonl, write_case, write_jsonl
from lss.data.errors import ErrorCode, StudyError
from lss.data.manifest import StudyRecord
from lss.data.privacy import anonymous_id

__all__ = [
    "PREPROCESS_VERSION",
    "PreprocessPlan",
    "PreprocessSummary",
    "StudyPreprocessor",
    "study_fingerprint",
    "plan_preprocessing",
    "process_record",
    "run_plans",
    "run_preprocessing",
]

logger = logging.getLogger(__name__)

PREPROCESS_VERSION = 4  # bump when the transforms change, so old shards are rebuilt (3: label maps, partitions;
# 4: a labelled span longer than the crop is anchored at its caudal end; info["sagittal_fov_z"])


def _input_files(record: StudyRecord) -> list[Path]:
    paths = []
    for series in record.series:
        for path in (series.path, series.mask_path):
            resolved = record.resolve(path)
            if resolved is None:
                continue
            if resolved.is_dir():
                paths.extend(sorted(p for p in resolved.rglob("*") if p.is_file()))
            else:
                paths.append(resolved)
    return paths


def study_fingerprint(record: StudyRecord, config: PreprocessConfig) -> str:
    """Hash of what a case depends on: the record, the settings, and each input file's size and mtime."""
    digest = hashlib.sha256()
    digest.update(str(PREPROCESS_VERSION).encode())
    digest.update(record.model_dump_json().encode())
    digest.update(_shard_settings(config).encode())
    for path in _input_files(record):
        try:
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"{path}:missing".encode())
    return digest.hexdigest()[:24]


def process_record(record: StudyRecord, config: PreprocessConfig, out_dir: Path) -> dict[str, Any]:
    """Preprocesses one study and writes its shard (``lss.data.cases.write_case``); never raises for a bad study.

    Returns:
        A result row: ``status`` "ok" (with ``path``, ``sha256``, labels) or "error" (with ``code``, ``message``).
    """
    from lss.preprocessing.transforms import preprocess_study

    fingerprint = study_fingerprint(record, config)
    row: dict[str, Any] = {"study_id": record.study_id, "source": record.source, "fingerprint": fingerprint}
    started = time.perf_counter()
    try:
        case = preprocess_study(record, config)
        row.update(status="ok", **write_case(case, record.study_id, out_dir))
    except StudyError as error:
        row.update(status="error", stage="preprocess", **error.to_dict())
    except Exception as error:  # noqa: BLE001 - listed, never a crash of the run
        row.update(status="error", stage="preprocess", code=ErrorCode.PREPROCESSING_FAILED.value,
                   message=f"{type(error).__name__}: {error}", path=None)
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


class StudyPreprocessor:
    """Ray Data actor: one study per call, written to the output folder its row names (one actor pool can serve
    several datasets); the MONAI transforms are imported once per actor."""

    def __init__(self, config: dict[str, Any]) -> None:
        import lss.preprocessing.transforms  # noqa: F401 - warm the imports in the actor, not per study

        self.config = PreprocessConfig.model_validate(config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = []
        for text, root, out_dir in zip(batch["record"], batch["root"], batch["out_dir"], strict=True):
            record = StudyRecord.model_validate_json(str(text))
            record.root = str(root) if root else None
            rows.append(process_record(record, self.config, Path(str(out_dir))))
        # Rows are returned as JSON text: result columns differ between ok and error rows.
        return {"plan": batch["plan"], "result": [json.dumps(r) for r in rows]}


@dataclass
class PreprocessSummary:
    """What a run did: counts, the output files and the failures."""

    out_dir: Path
    total: int
    processed: int
    reused: int
    ok: int
    failed: int
    seconds: float
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def index_path(self) -> Path:
        return self.out_dir / INDEX_NAME

    @property
    def errors_path(self) -> Path:
        return self.out_dir / ERRORS_NAME

    def __str__(self) -> str:
        return (
            f"preprocess: {self.ok} ok, {self.failed} failed of {self.total} studies "
            f"({self.processed} processed, {self.reused} unchanged) in {self.seconds:.1f}s\n"
            f"  cases:  {self.index_path}\n  errors: {self.errors_path}"
        )


def _previous(out_dir: Path) -> dict[str, dict[str, Any]]:
    rows = {}
    for row in read_jsonl(out_dir / INDEX_NAME) + read_jsonl(out_dir / ERRORS_NAME):
        if row.get("stage", "preprocess") == "preprocess":
            rows[row["study_id"]] = row
    return rows


def _unchanged(row: dict[str, Any] | None, fingerprint: str, out_dir: Path) -> bool:
    if row is None or row.get("fingerprint") != fingerprint:
        return False
    if row.get("status") == "error":
        return True  # the same input fails the same way
    path = out_dir / row["path"]
    return path.is_file() and file_sha256(path) == row.get("sha256")


@dataclass
class PreprocessPlan:
    """One dataset's share of a preprocessing run (``plan_preprocessing``): what discovery found, the results that
    are reused, and the studies to process."""

    out_dir: Path
    config: PreprocessConfig
    records: list[StudyRecord]
    discover_errors: list[dict[str, Any]]
    kept: list[dict[str, Any]]
    todo: list[StudyRecord]
    started: float


def plan_preprocessing(
    in_dir: str | Path, out_dir: str | Path, config: PreprocessConfig | None = None, kind: str = "auto"
) -> PreprocessPlan:
    """Discovers a dataset folder and decides which studies need processing (unchanged ones are reused).

    Args:
        in_dir: a dataset in any supported layout (see ``lss.data.adapters``).
        out_dir: where the shards, ``preprocessed.jsonl`` and ``errors.jsonl`` go (created).
        config: preprocessing settings.
        kind: the dataset layout, or "auto".

    Raises:
        StudyError: NOT_FOUND when ``in_dir`` does not exist.
    """
    config = config or PreprocessConfig()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    discovered = build_manifest(Path(in_dir), kind=kind, limits=config.limits)
    discover_errors = [{**dict(e), "status": "error", "stage": "discover"} for e in discovered.errors]
    previous = _previous(out_dir)
    todo, kept = [], []
    for record in discovered.records:
        fingerprint = study_fingerprint(record, config)
        if _unchanged(previous.get(record.study_id), fingerprint, out_dir):
            kept.append(previous[record.study_id])
        else:
            todo.append(record)
    logger.info("preprocess: %d studies found, %d unchanged, %d to process, %d failed discovery",
                len(discovered.records), len(kept), len(todo), len(discover_errors))
    return PreprocessPlan(out_dir, config, list(discovered.records), discover_errors, kept, todo, started)


def run_plans(
    plans: list[PreprocessPlan],
    config: PreprocessConfig | None = None,
    ray_config: RayConfig | None = None,
    engine: str = "ray",
) -> list[PreprocessSummary]:
    """Processes the studies of several plans in one run (one Ray Data actor pool for all of them), then writes each
    plan's ``preprocessed.jsonl`` and ``errors.jsonl``.

    Args:
        plans: from ``plan_preprocessing``, all made with the same preprocessing settings.
        config: those settings (None: the plans' own); only ``workers`` and ``cpus_per_worker`` may differ from
            the plans', since the rest decides what a shard holds and its fingerprint.
        ray_config: how to get a Ray session (an embedded local Ray by default).
        engine: "ray" (Ray Data actor pool) or "serial" (a plain loop in this process, with a progress bar on a
            terminal; for comparison).

    Returns:
        One summary per plan, in order (each one's ``seconds`` run from its planning to the end of the shared run);
        failed studies are listed in ``errors.jsonl``, never raised.

    Raises:
        ValueError: for an unknown engine, or plans made with settings other than ``config``.
    """
    _check_engine(engine)
    if not plans:
        return []
    config = config or plans[0].config
    for plan in plans:
        if _shard_settings(plan.config) != _shard_settings(config):
            raise ValueError(f"the plan for {plan.out_dir} was made with other preprocessing settings than this run's; "
                             "plan every dataset with the same config.")
    todo = [(index, record) for index, plan in enumerate(plans) for record in plan.todo]
    results: list[tuple[int, dict[str, Any]]] = []
    if todo and engine == "serial":
        with logging_redirect_tqdm():  # log lines above the bar, not through it
            for n, (index, record) in enumerate(tqdm(todo, desc="preprocess", unit="study", disable=None), start=1):
                results.append((index, process_record(record, config, plans[index].out_dir)))
                _log_progress(n, len(todo), results[-1][1])
    elif todo:
        results = _run_ray(todo, plans, config, ray_config)
    return [_finish(plan, [row for index, row in results if index == i]) for i, plan in enumerate(plans)]


def run_preprocessing(
    in_dir: str | Path,
    out_dir: str | Path,
    config: PreprocessConfig | None = None,
    ray_config: RayConfig | None = None,
    kind: str = "auto",
    engine: str = "ray",
) -> PreprocessSummary:
    """Preprocesses every study of a dataset folder (``plan_preprocessing`` then ``run_plans``).

    Args:
        in_dir: a dataset in any supported layout (see ``lss.data.adapters``).
        out_dir: where the shards, ``preprocessed.jsonl`` and ``errors.jsonl`` go.
        config: preprocessing settings (workers and CPUs per worker for the Ray actor pool).
        ray_config: how to get a Ray session (an embedded local Ray by default).
        kind: the dataset layout, or "auto".
        engine: "ray" (Ray Data actor pool) or "serial" (a plain loop in this process, with a progress bar on a
            terminal; for comparison).

    Returns:
        The run's summary; failed studies are listed in ``errors.jsonl``, never raised.

    Raises:
        StudyError: NOT_FOUND when ``in_dir`` does not exist.
    """
    _check_engine(engine)  # before planning creates out_dir
    return run_plans([plan_preprocessing(in_dir, out_dir, config, kind)], config, ray_config, engine)[0]


def _check_engine(engine: str) -> None:
    if engine not in ("ray", "serial"):
        raise ValueError(f"engine must be 'ray' or 'serial', got {engine!r}.")


def _shard_settings(config: PreprocessConfig) -> str:
    """The settings a shard depends on (what ``study_fingerprint`` hashes; not the actor pool's size)."""
    return config.model_dump_json(exclude={"workers", "cpus_per_worker"})


def _finish(plan: PreprocessPlan, results: list[dict[str, Any]]) -> PreprocessSummary:
    """Writes a plan's index and error list from its reused and new results."""
    by_id = {row["study_id"]: row for row in plan.kept + results}
    records = {r.study_id: r for r in plan.records}
    ok_rows, error_rows = [], list(plan.discover_errors)
    for study_id in sorted(by_id):
        row = by_id[study_id]
        if row["status"] == "ok":
            row["record"] = records[study_id].model_dump(mode="json")
            ok_rows.append(row)
        else:
            error_rows.append(row)
    write_jsonl(ok_rows, plan.out_dir / INDEX_NAME)
    write_jsonl(error_rows, plan.out_dir / ERRORS_NAME)
    for row in error_rows:
        name, message = _anonymised(row)
        logger.warning("preprocess: %s skipped [%s] %s (details in %s)", name, row.get("code"), message,
                       ERRORS_NAME)
    return PreprocessSummary(
        out_dir=plan.out_dir,
        total=len(plan.records) + len(plan.discover_errors),
        processed=len(results),
        reused=len(plan.kept),
        ok=len(ok_rows),
        failed=len(error_rows),
        seconds=time.perf_counter() - plan.started,
        errors=error_rows,
    )


def _anonymised(row: dict[str, Any]) -> tuple[str, str]:
    """A result row's study for a log line (``anonymous_id`` of its id, else of its path; "-" for neither) and its
    message with the id, the path and the path's last part replaced by that name (the messages are meant to hold no
    identifier, but a folder name may slip into one)."""
    study_id, path = str(row.get("study_id") or ""), str(row.get("path") or "")
    name = anonymous_id(study_id or path) if study_id or path else "-"
    message = str(row.get("message") or "")
    for raw in sorted({study_id, path, Path(path).name}, key=len, reverse=True):
        if len(raw) >= 3:  # a one- or two-character id names no one, and replacing it would garble the message
            message = message.replace(raw, name)
    return name, message


def _log_progress(done: int, total: int, row: dict[str, Any]) -> None:
    status = "ok" if row["status"] == "ok" else f"FAILED [{row.get('code')}]"
    logger.info("preprocess: %d/%d %s %s (%.1fs)", done, total, anonymous_id(row["study_id"]), status,
                row.get("seconds", 0.0))


def _run_ray(todo: list[tuple[int, StudyRecord]], plans: list[PreprocessPlan], config: PreprocessConfig,
             ray_config: RayConfig | None) -> list[tuple[int, dict[str, Any]]]:
    import ray.data

    from lss.ray_session import init_ray

    init_ray(ray_config)
    items = [{"record": r.model_dump_json(), "root": r.root or "", "plan": index,
              "out_dir": str(plans[index].out_dir.resolve())} for index, r in todo]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        StudyPreprocessor,
        fn_constructor_kwargs={"config": config.model_dump(mode="json")},
        batch_size=1,
        num_cpus=config.cpus_per_worker,
        # A fixed pool of fractional-CPU actors: whole-CPU actors would leave Ray Data's own tasks no CPU on 2 cores.
        compute=ray.data.ActorPoolStrategy(size=min(config.workers, len(items))),
    )
    results = []
    for n, row in enumerate(dataset.iter_rows(), start=1):
        result = json.loads(row["result"])
        results.append((int(row["plan"]), result))
        _log_progress(n, len(todo), result)
    return results
