"""Serve config files (``serve_configs/*.yaml``): validated with Ray's own schemas, then run (``lss serve``).

The files are Ray Serve config files, so ``serve deploy serve_configs/gpu.yaml`` works on a cluster unchanged;
``lss serve`` runs the same file on an embedded local Ray (or ``--address``), after checking it with
``ServeDeploySchema`` and every deployment's ``AutoscalingConfig`` so that a bad file fails before anything starts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import yaml

from lss.config import LSSConfig

__all__ = ["ServeConfigError", "load_serve_config", "run_serve"]

logger = logging.getLogger(__name__)


class ServeConfigError(ValueError):
    """A Serve config file that Ray would refuse, or that names deployments the graph does not have."""


def load_serve_config(path: str | Path) -> dict[str, Any]:
    """Reads and validates a Serve config file.

    Returns:
        The file's mapping (``http_options``, ``applications`` with ``args`` and ``deployments``).

    Raises:
        ServeConfigError: not YAML, not a valid ``ServeDeploySchema``, an invalid ``autoscaling_config``, a
            deployment the graph does not have, or an application without ``args.model_path``.
    """
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    from lss.serve.app import DEPLOYMENT_NAMES

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ServeConfigError(f"{path}: cannot be read as YAML: {error}") from error
    try:
        ServeDeploySchema.model_validate(data)
    except Exception as error:  # pydantic's ValidationError, with Ray's messages
        raise ServeConfigError(f"{path}: not a valid Ray Serve config: {error}") from error
    for app in data["applications"]:
        if "model_path" not in (app.get("args") or {}):
            raise ServeConfigError(f"{path}: application {app.get('name')!r} needs args.model_path.")
        for deployment in app.get("deployments") or []:
            name = deployment.get("name")
            if name not in DEPLOYMENT_NAMES:
                raise ServeConfigError(f"{path}: unknown deployment {name!r}; the graph has {list(DEPLOYMENT_NAMES)}.")
            if deployment.get("autoscaling_config") is not None:
                try:
                    AutoscalingConfig(**deployment["autoscaling_config"])
                except Exception as error:
                    raise ServeConfigError(f"{path}: deployment {name}: invalid autoscaling_config: {error}") from error
    return data


def run_serve(config_file: str | Path, config: LSSConfig, model_path: str | None = None, blocking: bool = True,
              address: str | None = None) -> dict[str, Any]:
    """Starts Serve with the HTTP options of ``config_file`` and runs its applications.

    Args:
        config_file: a Serve config (``serve_configs/local.yaml``).
        config: the LSS settings (``preprocess``, ``report``, ``serve``, ``ray``); ``serve.host``/``serve.port``
            are used where the file has no ``http_options``.
        model_path: overrides every application's ``args.model_path``.
        blocking: keep running until interrupted.
        address: a Ray cluster address (default: ``ray.address`` / ``RAY_ADDRESS``, else an embedded local Ray).

    Returns:
        ``{"url": ..., "applications": [names]}``.
    """
    from ray import serve

    from lss.config import load_config
    from lss.ray_session import init_ray
    from lss.serve.app import build_app

    data = load_serve_config(config_file)
    if address:
        config = config.model_copy(update={"ray": config.ray.model_copy(update={"address": address})})
    init_ray(config.ray)
    http = {"host": config.serve.host, "port": config.serve.port, **(data.get("http_options") or {})}
    serve.start(http_options=http, proxy_location=data.get("proxy_location", "HeadOnly"))
    names = []
    for app in data["applications"]:
        args = dict(app.get("args") or {})
        app_config = config
        if args.get("config") or args.get("profile") or args.get("overrides"):
            app_config = load_config(args.get("config"), profile=args.get("profile"),
                                     overrides=args.get("overrides") or [])
        options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app.get("deployments") or []}
        application = build_app(model_path or args["model_path"], app_config, options)
        serve.run(application, name=app["name"], route_prefix=app.get("route_prefix", "/"))
        names.append(app["name"])
    url = f"http://{http['host']}:{http['port']}"
    logger.info("serving %s at %s (docs: %s/docs)", names, url, url)
    print(f"serving {names} at {url}  (OpenAPI: {url}/docs; stop with Ctrl-C)", flush=True)
    if blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return {"url": url, "applications": names}
