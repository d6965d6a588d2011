"""The project's shape: the source root never shadows the standard library, the console script and pins exist."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import REPO_ROOT


def test_import_platform_from_repo_root_is_the_standard_module():
    # `python -c` puts the current directory first on sys.path: the case where a package `platform/` would win.
    code = "import platform, sys; print(platform.__file__); print(platform.python_version())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    module_file, version = out.stdout.split()
    assert Path(module_file).parent == Path(sysconfig.get_paths()["stdlib"])
    assert version == ".".join(map(str, sys.version_info[:3]))
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()


def test_lss_package_lives_under_platform():
    import lss

    assert Path(lss.__file__).resolve().parent == REPO_ROOT / "platform" / "lss"


def test_console_script_runs():
    script = Path(sys.executable).parent / "lss"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    for command in ("synth", "preprocess", "config"):
        assert command in out.stdout


def test_torch_is_pinned_to_the_cpu_wheel_version():
    constraints = (REPO_ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in constraints
    import torch

    assert torch.__version__.startswith("2.13.0")


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
