"""The benchmark's baselines still measure what they claim to.

`benchmarks/run.py` times `python -m avatar` against two apps; a baseline that
stopped composing avatar's config, or that wrote files, would make its ratios
meaningless without anyone noticing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import CLI_TIMEOUT_S, REPO_ROOT
from fakes import fake_nvml_env

pytestmark = pytest.mark.slow

BENCHMARKS = REPO_ROOT / "benchmarks"


def run_app(app: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / app)],
        cwd=cwd,
        env=fake_nvml_env(None, **env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize("profile", ["cpu", "low_vram", "rtx4090"])
def test_config_app_composes_avatars_config_with_the_given_profile(
    tmp_path: Path, profile: str
) -> None:
    proc = run_app("config_app.py", tmp_path, AVATAR_PROFILE=profile)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == profile
    # No detection ran: the CPU-mode warning is detection's.
    assert "CPU mode" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_config_app_needs_the_profile_status_would_pick(tmp_path: Path) -> None:
    proc = run_app("config_app.py", tmp_path)
    assert proc.returncode == 1
    assert "Set AVATAR_PROFILE=NAME" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hello_app_prints_and_writes_nothing(tmp_path: Path) -> None:
    proc = run_app("hello_app.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello world"
    assert list(tmp_path.iterdir()) == []


def test_measured_children_keep_bytecode_out_of_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed avatar runs from .pyc files: the benchmark's children must too."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    import run as benchmark

    env = benchmark.child_env()
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert Path(env["PYTHONPYCACHEPREFIX"]) == benchmark.PYCACHE_DIR
    assert not benchmark.PYCACHE_DIR.is_relative_to(REPO_ROOT)
    assert str(REPO_ROOT) in env["PYTHONPATH"].split(os.pathsep)
