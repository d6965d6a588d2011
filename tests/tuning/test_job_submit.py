"""jobs/tune.py submitted with `ray job submit` to a separate local cluster started with `ray start --head`, with
token authentication on (a token of its own, so ~/.ray is neither read nor written).

Slow (the cluster start, a synthetic set, three smoke trials): `make test-slow`. The cluster has its own ports and
temp dir, so it never meets the session's embedded Ray. It is stopped by ending the process group of its
`ray start --block`, not with `ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from lss.serve.runner import free_port

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PORTS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
         "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, check=False)


@pytest.fixture(scope="module")
def cluster():
    """A `ray start --head` cluster (2 CPUs, dashboard on 127.0.0.1, token auth); yields (address, env)."""
    temp = Path(tempfile.mkdtemp(prefix="lssrj", dir="/tmp"))  # short: Ray's socket paths must fit in 107 chars
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    # The same two settings for the cluster and for the client: token mode on, and where the token is.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    ports = {name: free_port() for name in PORTS}
    with open(temp / "ray_start.log", "w") as log:
        process = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--temp-dir={temp / 'ray'}", *(f"--{k}={v}" for k, v in ports.items())],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + 120
        while _run([str(BIN / "ray"), "job", "list", "--address", address], env, 30).returncode != 0:
            assert process.poll() is None, (temp / "ray_start.log").read_text()
            assert time.monotonic() < deadline, "the cluster's dashboard did not come up"
            time.sleep(2)
        yield address, env
    finally:
        # `ray start --block` stops its processes on SIGTERM (its autoscaler monitor can linger: then SIGKILL).
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_needs_the_token(cluster):
    address, env = cluster
    out = _run([str(BIN / "ray"), "job", "list", "--address", address], {**env, "RAY_AUTH_MODE": "disabled"}, 60)
    assert out.returncode != 0 and "Missing authentication token" in out.stdout + out.stderr


def test_ray_job_submit_runs_the_smoke_sweep(cluster, tmp_path):
    address, env = cluster
    storage = tmp_path / "tune"
    submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO_ROOT), "--",
              "python", "jobs/tune.py", "--smoke", "--name", "smoke", "--set", f"tune.storage_path={storage}"]
    for _ in range(10):  # the job agent comes up a little after the dashboard
        out = _run(submit, env, 1200)
        if "No available agent" not in out.stdout + out.stderr:
            break
        time.sleep(3)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-6000:]
    assert "connecting to the Ray cluster at" in text  # the job joined the cluster (RAY_ADDRESS)
    assert "tune: best trial" in text and "train with: --set 'loss.kp=" in text
    header = next(line for line in text.splitlines() if re.match(r"^trial\s+kp\s+ki\s+kd\s+beta\s+bounds", line))
    rows = [line for line in text.splitlines() if re.match(r"^[0-9a-f]{8}\s+\d\.\d+\s+\d\.\d+\s+\d\.\d+\s", line)]
    assert "best val_dice_macro" in header and len(rows) == 3, text[-6000:]
    results = json.loads((storage / "smoke" / "results.json").read_text())
    assert {t["trial_id"] for t in results["trials"]} == {row.split()[0] for row in rows}
    assert len({(t["kp"], t["ki"], t["kd"]) for t in results["trials"]}) == 3
    assert (storage / "smoke" / "results.md").is_file() and (storage / "smoke_data" / "preprocessed").is_dir()
