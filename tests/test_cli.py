"""The CLI end to end, as a user runs it: `python -m avatar` in a subprocess, in a temp dir.

NVML is the fake from tests/fake_pynvml (no driver unless a test gives GPUs), so the
results do not depend on the machine's own GPUs.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import (
    REPO_ROOT,
    run_avatar,
    status_profile,
    status_section,
    status_settings,
    tree_snapshot,
)
from fakes import FakeGPU, fake_nvml_env
from omegaconf import DictConfig, OmegaConf

import avatar
from avatar.config.files import builtin_conf_dir
from avatar.config.overrides import AUTO
from avatar.config.profiles import profile_files

pytestmark = pytest.mark.slow

RTX_3080 = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)
RTX_2060_BUSY = FakeGPU("NVIDIA GeForce RTX 2060", total_mib=6144, used_mib=5800)
PROFILE_FILES = {n: p for n, p in profile_files([builtin_conf_dir()]).items() if n != AUTO}


def profile_file(name: str) -> DictConfig:
    loaded = OmegaConf.load(PROFILE_FILES[name])
    assert isinstance(loaded, DictConfig)
    return loaded


def test_status_shows_version_hardware_profile_settings_and_vram_check_in_cpu_mode(
    tmp_path: Path,
) -> None:
    result = run_avatar(cwd=tmp_path)

    assert result.returncode == 0, result.output
    out = result.stdout
    assert out.startswith(f"avatar {avatar.__version__}")
    hardware = status_section(out, "Hardware")
    assert any(line.startswith("CPU mode: no NVIDIA driver found") for line in hardware)
    assert any(line.startswith("System RAM:") for line in hardware)
    assert status_profile(out)[0] == "cpu"
    assert status_profile(out)[1].startswith("auto: no usable GPU")
    assert status_settings(out)["device"] == "cpu"
    assert status_section(out, "VRAM check")  # says something, even with nothing to check


def test_status_lists_every_gpu_with_name_used_total_bar_and_free(tmp_path: Path) -> None:
    result = run_avatar(cwd=tmp_path, gpus=[RTX_3080, RTX_2060_BUSY])

    assert result.returncode == 0, result.output
    hardware = status_section(result.stdout, "Hardware")
    for index, gpu in enumerate([RTX_3080, RTX_2060_BUSY]):
        line = next(line for line in hardware if line.startswith(f"GPU {index} "))
        assert gpu.name in line
        assert re.search(r"\[[#.]+\]", line), line
        assert f"{gpu.used_mib:.0f} / {gpu.total_mib:.0f} MiB used" in line
        assert f"{gpu.free_mib:.0f} MiB free" in line
    # The one with the most free memory is used.
    assert "<- in use" in next(line for line in hardware if line.startswith("GPU 0 "))


def test_status_says_why_auto_chose_the_profile(tmp_path: Path) -> None:
    result = run_avatar(cwd=tmp_path, gpus=[RTX_3080])

    assert result.returncode == 0, result.output
    threshold = profile_file("rtx3080").vram_min_mib
    assert status_profile(result.stdout) == (
        "rtx3080",
        f"auto: 10240 MiB on GPU 0 (NVIDIA GeForce RTX 3080) >= {threshold} -> rtx3080",
    )
    assert status_settings(result.stdout)["device"] == "cuda:0"


def test_vram_check_says_ok_when_the_profile_fits_and_not_enough_when_it_does_not(
    tmp_path: Path,
) -> None:
    roomy = run_avatar(cwd=tmp_path, gpus=[RTX_3080])
    full = run_avatar(
        "profile=rtx3080", cwd=tmp_path, gpus=[FakeGPU("NVIDIA GeForce RTX 3080", 10240, 9800)]
    )

    assert roomy.returncode == 0 and full.returncode == 0, roomy.output + full.output
    assert " ".join(status_section(roomy.stdout, "VRAM check")).startswith("OK")
    assert " ".join(status_section(full.stdout, "VRAM check")).startswith("NOT ENOUGH")


def test_gpu_index_chooses_the_gpu_that_is_used(tmp_path: Path) -> None:
    result = run_avatar("gpu_index=1", cwd=tmp_path, gpus=[RTX_3080, RTX_2060_BUSY])

    assert result.returncode == 0, result.output
    hardware = status_section(result.stdout, "Hardware")
    assert "<- in use" in next(line for line in hardware if line.startswith("GPU 1 "))
    assert status_settings(result.stdout)["device"] == "cuda:1"


def test_profile_and_steps_on_the_command_line(tmp_path: Path) -> None:
    result = run_avatar("profile=low_vram", "steps=30", cwd=tmp_path, gpus=[RTX_3080])

    assert result.returncode == 0, result.output
    settings = status_settings(result.stdout)
    low_vram = profile_file("low_vram")
    assert status_profile(result.stdout) == ("low_vram", "set on the command line")
    assert settings["steps"] == "30"
    assert (settings["batch_size"], settings["quality"]) == (
        str(low_vram.batch_size),
        low_vram.quality,
    )


def test_avatar_profile_forces_the_auto_choice_and_status_says_so(tmp_path: Path) -> None:
    result = run_avatar(cwd=tmp_path, env={"AVATAR_PROFILE": "rtx3080"})

    assert result.returncode == 0, result.output
    assert status_profile(result.stdout) == ("rtx3080", "set by AVATAR_PROFILE=rtx3080")


def test_verbose_prints_the_resolved_config(tmp_path: Path) -> None:
    result = run_avatar("verbose=true", "profile=rtx3080", cwd=tmp_path)

    assert result.returncode == 0, result.output
    _status, sep, resolved_text = result.stdout.partition("Resolved config\n")
    assert sep, result.stdout
    resolved = yaml.safe_load(resolved_text)
    assert "${" not in resolved_text
    assert resolved["profile"]["name"] == "rtx3080"
    assert resolved["steps"] == profile_file("rtx3080").steps
    assert resolved["verbose"] is True


def test_plain_status_prints_no_resolved_config(tmp_path: Path) -> None:
    result = run_avatar(cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert "Resolved config" not in result.stdout


def test_help_shows_the_profile_group_the_profile_table_and_examples(tmp_path: Path) -> None:
    result = run_avatar("--help", cwd=tmp_path)

    assert result.returncode == 0, result.output
    out = result.stdout
    group_line = next(line for line in out.splitlines() if line.startswith("profile: "))
    assert set(group_line.removeprefix("profile: ").split(", ")) == {*PROFILE_FILES, AUTO}
    table = out[out.index("Profiles") :]
    for name in PROFILE_FILES:
        row = next(line for line in table.splitlines() if line.split()[:1] == [name])
        threshold = profile_file(name).vram_min_mib
        assert (f">= {threshold} MiB" if threshold is not None else "no GPU") in row
    for example in (
        "python -m avatar profile=low_vram steps=30",
        "python -m avatar verbose=true",
        "python -m avatar -m profile=rtx3080,low_vram steps=25,40",
        "AVATAR_PROFILE=rtx3080 python -m avatar",
        "--config-dir DIR --config-name mine",
    ):
        assert example in out


def test_version_flag_prints_the_version(tmp_path: Path) -> None:
    result = run_avatar("--version", cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert result.stdout.strip() == f"avatar {avatar.__version__}"


def test_plain_status_run_leaves_no_file_in_the_working_directory(tmp_path: Path) -> None:
    result = run_avatar(cwd=tmp_path, gpus=[RTX_3080])

    assert result.returncode == 0, result.output
    assert tree_snapshot(tmp_path) == {}


def test_cfg_job_prints_the_composed_config_and_writes_nothing(tmp_path: Path) -> None:
    result = run_avatar("--cfg", "job", "profile=low_vram", "steps=30", cwd=tmp_path)

    assert result.returncode == 0, result.output
    composed = yaml.safe_load(result.stdout)
    assert composed["profile"]["name"] == "low_vram"
    assert composed["steps"] == 30
    assert composed["batch_size"] == "${profile.batch_size}"  # --cfg shows it unresolved
    assert tree_snapshot(tmp_path) == {}


def test_multirun_leaves_one_job_dir_per_combination_with_its_composed_config(
    tmp_path: Path,
) -> None:
    profiles, steps = ["rtx3080", "low_vram"], [25, 40]

    result = run_avatar(
        "-m", f"profile={','.join(profiles)}", f"steps={','.join(map(str, steps))}", cwd=tmp_path
    )

    assert result.returncode == 0, result.output
    job_configs = sorted(tmp_path.glob("multirun/**/.hydra/config.yaml"))
    assert len(job_configs) == 4, result.output
    composed = set()
    for path in job_configs:
        cfg = OmegaConf.load(path)
        assert isinstance(cfg, DictConfig)
        composed.add((cfg.profile.name, cfg.steps))
        assert cfg.profile.batch_size == profile_file(cfg.profile.name).batch_size
    assert composed == set(itertools.product(profiles, steps))
    assert {p.name for p in tmp_path.iterdir()} == {"multirun"}  # nothing else in the cwd


def test_python_m_avatar_from_any_directory_runs_the_source_tree(tmp_path: Path) -> None:
    """No install needed: PYTHONPATH=<repo> and `python -m avatar` from elsewhere."""
    probe = subprocess.run(
        [sys.executable, "-c", "import avatar.config.files as p; print(p.builtin_conf_dir())"],
        cwd=tmp_path,
        env=fake_nvml_env(None),
        capture_output=True,
        text=True,
        check=True,
    )
    result = run_avatar("profile=rtx3080", cwd=tmp_path)

    assert Path(probe.stdout.strip()) == REPO_ROOT / "conf"
    assert result.returncode == 0, result.output
    assert status_profile(result.stdout)[0] == "rtx3080"


def console_script() -> str | None:
    """The `avatar` script of the environment running the tests.

    Looked for beside this Python, not on PATH: README runs `.venv/bin/python -m pytest`
    without activating the venv, and PATH could hold another environment's avatar.
    """
    return shutil.which("avatar", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(console_script() is None, reason="the avatar console script is not installed")
def test_avatar_console_script_shows_status_and_help(tmp_path: Path) -> None:
    script = console_script()
    assert script is not None
    # The fake NVML (no driver) comes first on PYTHONPATH, and with it this source tree.
    env = fake_nvml_env(None)
    env["PATH"] = os.environ.get("PATH", "")

    status = subprocess.run([script], cwd=tmp_path, env=env, capture_output=True, text=True)
    helped = subprocess.run(
        [script, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )

    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith("avatar ")
    assert "Profiles" in helped.stdout
    assert tree_snapshot(tmp_path) == {}
