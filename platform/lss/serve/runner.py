"""Serve config files (``serve_configs/*.yaml``): validated with Ray's own schemas, then run (``lss serve``).

The files are Ray Serve config files, so ``serve deploy serve_configs/gpu.yaml`` works on a cluster unchanged;
``lss serve`` deploys the same file the same declarative way on an embedded local Ray (or ``--address``), after
checking it with ``ServeDeploySchema`` and every deployment's ``AutoscalingConfig`` so that a bad file fails before
anything starts. A hot model swap: set ``user_config: {model_path: NEW}`` on the Segmenter and deploy again.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from lss.config import LSSConfig

__all__ = ["ServeConfigError", "load_serve_config", "resolve_config", "check_app_configs", "check_model_files",
           "deploy_config", "run_serve", "free_port"]

logger = logging.getLogger(__name__)


class ServeConfigError(ValueError):
    """A Serve config file that Ray would refuse, or that names deployments the graph does not have."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (for a local Serve proxy in jobs, tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


def deploy_config(data: dict[str, Any], timeout_s: float = 300.0) -> None:
    """Deploys a validated Serve config the way ``serve run CONFIG`` / ``serve deploy CONFIG`` do (declaratively).

    Declarative deploys are what make hot swaps cheap: redeploying the same config with only a deployment's
    ``user_config`` changed calls ``reconfigure`` on the running replicas instead of replacing them.

    Args:
        data: a config that passed ``load_serve_config`` (paths in ``args`` absolute: the build runs in a worker).
        timeout_s: how long to wait for every application to be RUNNING.

    Raises:
        RuntimeError: when an application fails to deploy or is not running in time.
    """
    from ray import serve
    from ray.serve._private import api as serve_api  # what Ray's own `serve run CONFIG` uses
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(data)
    client = serve_api.serve_start(http_options=config.http_options.model_dump(),
                                   proxy_location=config.proxy_location)
    client.deploy_apps(config, _blocking=False)
    names = [app.name for app in config.applications]
    deadline = time.time() + timeout_s
    time.sleep(0.5)  # let the controller take the new config before reading its status
    while True:
        status = serve.status().applications
        states = {name: status[name].status if name in status else "NOT_STARTED" for name in names}
        if all(state == "RUNNING" for state in states.values()):
            return
        failed = {n: status[n].message for n, s in states.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")}
        if failed:
            raise RuntimeError(f"Serve deploy failed: {failed}")
        if time.time() > deadline:
            raise RuntimeError(f"Serve applications not running after {timeout_s:.0f} s: {states}")
        time.sleep(0.5)


def resolve_config(data: dict[str, Any], model_path: str | None = None,
                   overrides: list[str] | None = None) -> dict[str, Any]:
    """A copy of a Serve config with absolute paths and the caller's model / ``section.key=value`` overrides."""
    import copy

    data = copy.deepcopy(data)
    for app in data["applications"]:
        args = app.setdefault("args", {})
        if model_path is not None:
            args["model_path"] = model_path
        args["model_path"] = str(Path(args["model_path"]).resolve())
        if args.get("config"):
            args["config"] = str(Path(args["config"]).resolve())
        extra = list(args.get("overrides") or []) + list(overrides or [])
        if not any(item.startswith("serve.results_dir=") for item in extra):
            extra.append(f"serve.results_dir={Path('outputs/serve/results').resolve()}")
        args["overrides"] = extra
    return data


def check_app_configs(data: dict[str, Any]) -> None:
    """Loads each application's LSS configuration (its ``args``: ``config``, ``profile``, ``overrides``) as the
    application builder will, before Ray starts: a bad setting is a one-line error, not a deploy that fails in the
    controller.

    Raises:
        ServeConfigError: naming the application and the setting.
    """
    from lss.config import load_config

    for app in data["applications"]:
        args = app.get("args") or {}
        try:
            load_config(args.get("config"), profile=args.get("profile"),
                        overrides=args.get("overrides") or []).report.check_writer_style()
        except ValueError as error:  # ConfigError is one
            reason = " ".join(str(error).split())
            raise ServeConfigError(f"application {app.get('name')!r}: {reason}") from None


def check_model_files(data: dict[str, Any]) -> None:
    """Loads every model file a resolved Serve config names (each application's ``args.model_path`` and any
    Segmenter ``user_config.model_path``), on the CPU, before Ray starts.

    Without this a missing file shows up ~40 s later as a Segmenter that fails to deploy, its ``FileNotFoundError``
    buried in the controller's log lines.

    Raises:
        ServeConfigError: a one-line reason for the first file that is missing or is not an ``lss`` model.
    """
    from lss.model import load_model

    paths = []
    for app in data["applications"]:
        paths.append(app["args"]["model_path"])
        for deployment in app.get("deployments") or []:
            given = (deployment.get("user_config") or {}).get("model_path")
            if deployment.get("name") == "Segmenter" and given:
                paths.append(given)
    for path in dict.fromkeys(Path(p) for p in paths):
        if not path.is_file():
            raise ServeConfigError(f"model file {path} does not exist: run `make demo` first (it writes "
                                   "outputs/demo/train/demo/best_model.pt), or pass --model PATH.")
        try:
            load_model(path, map_location="cpu")
        except Exception as error:  # torch's unpickling errors, a format mismatch, a file of something else
            raise ServeConfigError(f"model file {path} cannot be loaded as an lss model: "
                                   f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                                   ) from None


def run_serve(config_file: str | Path, config: LSSConfig, model_path: str | None = None, blocking: bool = True,
              address: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Runs the applications of a Serve config file on Ray (``lss serve``).

    Args:
        config_file: a Serve config (``serve_configs/local.yaml``).
        config: the LSS settings: ``ray``, and ``serve.host`` / ``serve.port`` where the file has no ``http_options``
            (the applications read their other settings from their ``args``).
        model_path: overrides every application's ``args.model_path``.
        blocking: keep running until interrupted.
        address: a Ray cluster address (default: ``ray.address`` / ``RAY_ADDRESS``, else an embedded local Ray).
        overrides: ``section.key=value`` settings added to every application's ``args.overrides``.

    Returns:
        ``{"url": ..., "applications": [names]}``.

    Raises:
        ServeConfigError: for a bad config file or a model file that is missing or unreadable, before Ray starts.
    """
    from ray import serve

    from lss.ray_session import init_ray

    data = resolve_config(load_serve_config(config_file), model_path, overrides)
    check_app_configs(data)
    check_model_files(data)
    http = data.setdefault("http_options", {})  # the file's http_options win; serve.host / serve.port fill the gaps
    http.setdefault("host", config.serve.host)
    http.setdefault("port", config.serve.port)
    if address:
        config = config.model_copy(update={"ray": config.ray.model_copy(update={"address": address})})
    init_ray(config.ray)
    deploy_config(data)
    url = f"http://{http['host']}:{http['port']}"
    names = [app["name"] for app in data["applications"]]
    logger.info("serving %s at %s (docs: %s/docs)", names, url, url)
    print(f"serving {names} at {url}  (OpenAPI: {url}/docs; stop with Ctrl-C)", flush=True)
    if blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return {"url": url, "applications": names}
