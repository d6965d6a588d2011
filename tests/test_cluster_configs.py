"""What can be checked offline about the cluster files: cluster.yaml against Ray's own cluster-launcher schema, the
KubeRay manifests' Serve application through Ray's Serve schema, and that no port is opened to the world."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

from conftest import REPO_ROOT
from lss.serve import load_serve_config

CLUSTER = REPO_ROOT / "cluster.yaml"
KUBERAY = REPO_ROOT / "serve_configs" / "kuberay.yaml"


def test_cluster_yaml_passes_rays_launcher_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load(CLUSTER.read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert {"head", "gpu_worker", "cpu_worker"} <= set(types)
    assert types["gpu_worker"]["max_workers"] >= 1 and types["cpu_worker"]["max_workers"] >= 1
    # The dashboard stays on the head's loopback; nothing opens it (or Serve) to the internet.
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])
    assert "0.0.0.0/0" not in CLUSTER.read_text()
    assert any("constraints.txt" in c for c in config["setup_commands"])


def test_kuberay_manifests_carry_a_valid_serve_config(tmp_path):
    documents = list(yaml.safe_load_all(KUBERAY.read_text()))
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"RayService", "RayJob"}
    serve_config = yaml.safe_load(kinds["RayService"]["spec"]["serveConfigV2"])
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(serve_config))
    data = load_serve_config(path)  # Ray's ServeDeploySchema + AutoscalingConfig, our deployment names
    assert data["applications"][0]["import_path"] == "lss.serve.app:app_builder"
    head = kinds["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert "jobs/tune.py" in kinds["RayJob"]["spec"]["entrypoint"]
