"""Getting a Ray session: an embedded local Ray by default, or a connection to a cluster.

Everything a local run needs (auth mode, no usage statistics, object store size, temp dir, CPU count) is set
here and nowhere else.
"""

from __future__ import annotations

import logging
import os

from lss.config import RayConfig

__all__ = ["init_ray", "shutdown_ray"]

logger = logging.getLogger(__name__)


def init_ray(config: RayConfig | None = None, address: str | None = None):
    """Starts (or reuses) a Ray session.

    Args:
        config: Ray settings; defaults to ``RayConfig()``.
        address: overrides ``config.address`` (None: the cluster in ``RAY_ADDRESS`` if set, as under
            ``ray job submit``, else an embedded local Ray; "auto" or "ray://...": a cluster).

    Returns:
        The Ray context of ``ray.init``, or of the session already running in this process.
    """
    import ray

    config = config or RayConfig()
    address = address if address is not None else config.address
    if address is None and os.environ.get("RAY_ADDRESS"):
        # Inside `ray job submit` (or with RAY_ADDRESS exported): join that cluster instead of starting one.
        address = os.environ["RAY_ADDRESS"]
    if ray.is_initialized():
        return ray.get_runtime_context()
    if not config.usage_stats:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Loggers of Ray Data and Train write to the driver; keep their progress, drop the deprecation chatter.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address is None or address == "local":
        if config.auth_mode is not None:
            os.environ.setdefault("RAY_AUTH_MODE", config.auth_mode)
        kwargs = dict(
            num_cpus=config.num_cpus,
            object_store_memory=config.object_store_mb * 1024 * 1024,
            include_dashboard=config.include_dashboard,
            dashboard_host="127.0.0.1",
            ignore_reinit_error=True,
        )
        if config.temp_dir:
            kwargs["_temp_dir"] = os.path.abspath(config.temp_dir)
        logger.info("starting an embedded local Ray (%s CPUs)", config.num_cpus or "all")
        return ray.init(**kwargs)
    logger.info("connecting to the Ray cluster at %s", address)
    return ray.init(address=address, ignore_reinit_error=True)


def shutdown_ray() -> None:
    """Stops this process's Ray session, if any."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
