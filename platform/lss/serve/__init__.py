"""Ray Serve: the composed, autoscaled graph (preprocess -> segmentation -> grading -> report) behind an HTTP API.

``build_app(model_path, config)`` gives the application; ``serve_configs/*.yaml`` deploy it with ``serve deploy`` or
``lss serve``.
"""

from lss.serve.app import DEPLOYMENT_NAMES, TOKEN_ENV, LSSApi, api, app_builder, build_app
from lss.serve.deployments import Grader, Preprocessor, Reporter, Segmenter, model_version
from lss.serve.runner import deploy_config, free_port, load_serve_config, resolve_config, run_serve

__all__ = ["DEPLOYMENT_NAMES", "TOKEN_ENV", "LSSApi", "api", "app_builder", "build_app", "Grader", "Preprocessor",
           "Reporter", "Segmenter", "model_version", "deploy_config", "free_port", "load_serve_config",
           "resolve_config",
           "run_serve"]
