"""What the serving replicas leave on disk, and how it is removed: upload folders and evidence.

- Uploads are unpacked into a private temp folder named after the replica's process (``lss_upload_<pid>_*``) and
  removed when the request ends. A replica that is killed cannot run its ``finally``: every Preprocessor replica
  sweeps, every ``sweep_interval_s``, the upload folders whose process is gone (and any older than
  ``STALE_UPLOAD_S``), so a dead replica's uploads (whole DICOM studies) are gone within one interval.
- Evidence (the state PNGs and DICOM outputs are rendered from) is kept per request for ``results_ttl_s`` and within
  ``results_max_mb`` in all: the Reporter removes expired studies, then the least recently used ones until the
  total fits.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["UPLOAD_PREFIX", "STALE_UPLOAD_S", "new_upload_folder", "sweep_uploads", "prune_results", "Sweeper"]

logger = logging.getLogger("ray.serve")

UPLOAD_PREFIX = "lss_upload_"
STALE_UPLOAD_S = 3600.0


def new_upload_folder(temp_dir: str | Path | None = None) -> Path:
    """A new private (mode 0700) folder for one upload, named after this process so a sweeper can tell when its
    owner is gone."""
    return Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}_", dir=temp_dir))


def _owner_alive(folder: Path) -> bool:
    pid_text = folder.name[len(UPLOAD_PREFIX):].split("_", 1)[0]
    if not pid_text.isdigit():
        return True  # no pid in the name (an older layout): only its age decides
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user holds that pid
    return True


def sweep_uploads(temp_dir: str | Path | None = None, stale_s: float = STALE_UPLOAD_S) -> int:
    """Removes upload folders whose owning process is gone, and any older than ``stale_s``.

    Returns:
        How many folders were removed.
    """
    root = Path(temp_dir or tempfile.gettempdir())
    cutoff, removed = time.time() - stale_s, 0
    for folder in root.glob(f"{UPLOAD_PREFIX}*"):
        try:
            if not folder.is_dir() or folder.is_symlink():
                continue
            if folder.stat().st_mtime < cutoff or not _owner_alive(folder):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except OSError:  # removed by another sweeper meanwhile
            continue
    return removed


def _size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def prune_results(results_dir: str | Path, ttl_s: float, max_bytes: int) -> int:
    """Removes evidence folders older than ``ttl_s``, then the least recently used ones until all fit in
    ``max_bytes``.

    Returns:
        How many folders were removed.
    """
    root = Path(results_dir)
    if not root.is_dir():
        return 0
    cutoff, removed, kept = time.time() - ttl_s, 0, []
    for folder in root.iterdir():
        try:
            if not folder.is_dir():
                continue
            mtime = folder.stat().st_mtime
        except OSError:
            continue
        if mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        else:
            kept.append((mtime, folder))
    sizes = [(mtime, folder, _size(folder)) for mtime, folder in kept]
    total = sum(size for *_, size in sizes)
    for _, folder, size in sorted(sizes, key=lambda item: item[0]):
        if total <= max_bytes:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total -= size
        removed += 1
    return removed


class Sweeper:
    """Runs ``task`` every ``interval_s`` seconds on a daemon thread until ``stop``; an error is logged (by type
    only) and the next round still runs.

    Args:
        task: the work of one round.
        interval_s: seconds between rounds.
        name: the thread's name.
    """

    def __init__(self, task: Callable[[], object], interval_s: float, name: str = "lss-sweeper") -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}.")
        self.task, self.interval_s = task, float(interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        # Short waits, so that a new interval_s (a replica's reconfigure) applies at once.
        while not self._stop.wait(min(self.interval_s, 0.5)):
            if time.monotonic() - last < self.interval_s:
                continue
            last = time.monotonic()
            try:
                self.task()
            except Exception as error:  # noqa: BLE001 - a sweeper must outlive one bad round
                logger.warning("%s: a round failed (%s)", self._thread.name, type(error).__name__)

    def stop(self) -> None:
        self._stop.set()
