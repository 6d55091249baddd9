"""Real sweeps through Hydra's launchers, as a user runs them (subprocesses, fake NVML).

Kept to a few small sweeps (each costs seconds): submitit_local with the issue's
2x2 sweep, joblib with a failing sweep point on a node that sees another GPU
than the submitting host, the basic launcher with a failing point, and the
SLURM template up to the moment it would submit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import CliResult, run_avatar
from fakes import FakeGPU, FakeNvmlModule
from hydra import compose, initialize_config_dir

from avatar import load_config
from avatar.cli.report import STATUS_FILE, SUMMARY_JSON_FILE, SUMMARY_TEXT_FILE
from avatar.cli.status_view import build_status
from avatar.cli.sweep import check_launcher
from avatar.config.compose import register_config
from avatar.config.files import PRIMARY_CONFIG, builtin_conf_dir
from avatar.config.profiles import AutoProfile
from avatar.errors import AvatarUserError
from avatar.hardware.detect import detect_gpu

# A 10 GiB card with 7000 MiB in use: what fits in the rest depends on the profile.
RTX_3080_BUSY = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=7000)


def fits_in_process(profile: str, fake_nvml: Callable[..., FakeNvmlModule]) -> bool | None:
    """What status itself says about `profile` on RTX_3080_BUSY: the expected verdict."""
    fake_nvml([RTX_3080_BUSY])
    cfg = load_config([f"profile={profile}"])
    return build_status(cfg, detection=detect_gpu(), reason="").check.fits


def sweep_dir(cwd: Path) -> Path:
    """The one sweep dir a multirun made under cwd (multirun/<date>/<time>)."""
    (found,) = [p.parent for p in (cwd / "multirun").glob("*/*/multirun.yaml")]
    return found


def jobs(sweep: Path) -> dict[tuple[str, ...], dict[str, Any]]:
    """Each job's status.json by its overrides; every job dir also holds Hydra's .hydra/."""
    found = {}
    for status in sorted(sweep.glob(f"*/{STATUS_FILE}")):
        assert (status.parent / ".hydra" / "config.yaml").is_file()
        doc = json.loads(status.read_text("utf-8"))
        assert Path(doc["job"]["dir"]) == status.parent.resolve()
        found[tuple(doc["job"]["overrides"])] = doc
    return found


def summary_rows(sweep: Path) -> dict[int, str]:
    """summary.txt's table rows by job number."""
    text = (sweep / SUMMARY_TEXT_FILE).read_text("utf-8")
    return {
        int(line.split()[0]): line
        for line in text.splitlines()
        if line.split() and line.split()[0].isdigit()
    }


def assert_summary_names_every_job(sweep: Path, result: CliResult) -> None:
    saved = json.loads((sweep / SUMMARY_JSON_FILE).read_text("utf-8"))
    rows = summary_rows(sweep)
    assert sorted(rows) == sorted(j["num"] for j in saved["jobs"])
    for job in saved["jobs"]:
        row = rows[job["num"]]
        assert " ".join(job["overrides"]) in row
        assert os.path.relpath(job["dir"], sweep.parent.parent.parent) in row
    assert (sweep / SUMMARY_TEXT_FILE).read_text("utf-8").strip() in result.stdout


@pytest.mark.slow
def test_submitit_local_sweep_leaves_a_status_per_job_and_a_summary_of_all(
    tmp_path: Path, fake_nvml: Callable[..., FakeNvmlModule]
) -> None:
    expected_fits = {p: fits_in_process(p, fake_nvml) for p in ("rtx3080", "low_vram")}
    result = run_avatar(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.gpus_per_node=1",  # submitit_local hides every GPU otherwise
        "profile=rtx3080,low_vram",
        "steps=25,40",
        cwd=tmp_path,
        gpus=[RTX_3080_BUSY],
    )

    assert result.returncode == 0, result.output
    sweep = sweep_dir(tmp_path)
    by_overrides = jobs(sweep)
    assert set(by_overrides) == {
        (f"profile={p}", f"steps={s}") for p in ("rtx3080", "low_vram") for s in (25, 40)
    }
    for (profile_override, steps_override), doc in by_overrides.items():
        assert doc["ok"] is True
        assert f"profile={doc['profile']['name']}" == profile_override
        assert f"steps={doc['settings']['steps']}" == steps_override
        assert doc["hardware"]["gpus"][0]["name"] == RTX_3080_BUSY.name  # the job saw the GPU
        assert doc["fits"] is expected_fits[doc["profile"]["name"]]
    assert_summary_names_every_job(sweep, result)
    fits_words = {True: "yes", False: "NO"}
    for job in json.loads((sweep / SUMMARY_JSON_FILE).read_text("utf-8"))["jobs"]:
        row = summary_rows(sweep)[job["num"]].split()
        assert fits_words[expected_fits[job["profile"]]] in row


@pytest.mark.slow
def test_joblib_sweep_keeps_results_reports_the_failure_and_a_node_that_differs(
    tmp_path: Path,
) -> None:
    # The host sees an RTX 3080, so `auto` composes as rtx3080; the jobs see no GPU
    # (CUDA_VISIBLE_DEVICES=-1 set for the job only), as on a cluster node without one.
    result = run_avatar(
        "-m",
        "hydra/launcher=joblib",
        "steps=0,25",
        "+hydra.job.env_set.CUDA_VISIBLE_DEVICES=-1",
        cwd=tmp_path,
        gpus=[RTX_3080_BUSY],
    )

    assert result.returncode == 1
    assert "Traceback" not in result.output
    assert "1 of 2 sweep jobs failed" in result.stderr
    sweep = sweep_dir(tmp_path)
    failed, kept = jobs(sweep)[("steps=0",)], jobs(sweep)[("steps=25",)]
    assert failed["ok"] is False and "'steps'" in failed["error"]
    assert kept["ok"] is True and kept["settings"]["steps"] == 25
    assert kept["profile"]["name"] == "rtx3080" and kept["profile"]["auto_picked"] is True
    assert kept["profile"]["own_hardware_pick"] == "cpu"
    assert "cpu" in kept["profile"]["mismatch"]
    assert_summary_names_every_job(sweep, result)
    rows = summary_rows(sweep)
    assert "FAILED" in rows[0] and "Invalid value for 'steps'" in rows[0]
    assert "MISMATCH" in rows[1] and "cpu" in rows[1]


@pytest.mark.slow
def test_basic_launcher_sweep_with_a_bad_point_still_summarises_every_job(
    tmp_path: Path,
) -> None:
    result = run_avatar("-m", "profile=cpu", "steps=0,25", cwd=tmp_path, gpus=None)

    assert result.returncode == 1
    assert "Traceback" not in result.output
    sweep = sweep_dir(tmp_path)
    assert [doc["ok"] for doc in jobs(sweep).values()] == [False, True]
    rows = summary_rows(sweep)
    assert "FAILED" in rows[0] and "n/a" in rows[1]


@pytest.mark.slow
def test_slurm_template_composes_with_its_keys_overridable(tmp_path: Path) -> None:
    result = run_avatar(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=30",
        "--cfg",
        "hydra",
        "-p",
        "hydra.launcher",
        cwd=tmp_path,
        gpus=None,
    )

    assert result.returncode == 0, result.output
    launcher = yaml.safe_load(result.stdout)
    assert launcher["_target_"].endswith("avatar_launcher.slurm_launcher.AvatarSlurmLauncher")
    assert (launcher["partition"], launcher["timeout_min"]) == ("gpu", 30)
    for key in ("cpus_per_task", "mem_gb"):
        assert isinstance(launcher[key], int), key
    assert launcher["gpus_per_node"] == "auto"  # follows each job's profile
    assert list(tmp_path.iterdir()) == []  # composing wrote nothing


SLURM_KEYS = {  # the template's plain keys, and a value a user might set
    "partition": "gpu",
    "gpus_per_node": 2,
    "cpus_per_task": 16,
    "mem_gb": 64,
    "timeout_min": 240,
}


@pytest.mark.parametrize(("key", "value"), SLURM_KEYS.items())
def test_slurm_template_key_is_overridable_through_the_compose_api(key: str, value: Any) -> None:
    register_config(AutoProfile([builtin_conf_dir()]), explicit_profile="cpu")
    with initialize_config_dir(config_dir=str(builtin_conf_dir()), version_base="1.3"):
        default = compose(PRIMARY_CONFIG, ["profile=cpu", "hydra/launcher=slurm"], True)
        changed = compose(
            PRIMARY_CONFIG,
            ["profile=cpu", "hydra/launcher=slurm", f"hydra.launcher.{key}={value}"],
            return_hydra_config=True,
        )

    assert key in default.hydra.launcher
    assert changed.hydra.launcher[key] == value != default.hydra.launcher[key]
    assert changed.hydra.launcher._target_.endswith("SlurmLauncher")


@pytest.mark.slow
def test_slurm_sweep_submits_the_resources_the_readme_recipe_asks_for(tmp_path: Path) -> None:
    """Up to sbatch: a fake `sbatch` keeps the script it was given and refuses it
    (submitit also wants an `srun` on PATH before it submits anything)."""
    bin_dir, script_copy = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    for name, script in [
        ("sbatch", 'cp "$1" "$SBATCH_COPY"\necho "sbatch: fake cluster" >&2\nexit 1'),
        ("srun", "exit 1"),
    ]:
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "work"
    work.mkdir()

    result = run_avatar(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=2",
        "hydra.launcher.mem_gb=24",
        "hydra.launcher.timeout_min=30",
        "profile=rtx3080",
        "steps=25,40",
        cwd=work,
        gpus=None,
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_COPY": str(script_copy)},
    )

    assert result.returncode != 0  # nothing was submitted
    flags = [line for line in script_copy.read_text("utf-8").splitlines() if "#SBATCH" in line]
    for expected in (
        "--partition=gpu",
        "--gpus-per-node=2",
        "--mem=24GB",
        "--time=30",
        "--array=0-1%2",
    ):
        assert any(line.endswith(expected) for line in flags), (expected, flags)
    assert not list(sweep_dir(work).glob(SUMMARY_TEXT_FILE))  # no job ran: nothing to summarise


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "slurm"])
def test_a_launcher_whose_plugin_is_missing_is_a_clear_error(
    launcher: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_launcher([f"hydra/launcher={launcher}"])  # installed here: accepted
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(AvatarUserError) as raised:
        check_launcher(["steps=3", f"hydra/launcher={launcher}"])

    assert f"hydra/launcher={launcher}" in str(raised.value)
    assert "hydra-" in str(raised.value) and "avatar[sweep]" not in str(raised.value)
    check_launcher(["hydra/launcher=basic"])  # Hydra's own needs no plugin


@pytest.mark.parametrize(
    ("overrides", "env", "warned"),
    [
        (["hydra/launcher=slurm", "steps=25,40"], {}, True),
        (["hydra/launcher=slurm", "profile=auto"], {}, True),
        (["hydra/launcher=slurm", "profile=rtx3080,rtx4090"], {}, False),
        (["hydra/launcher=slurm"], {"AVATAR_PROFILE": "rtx3080"}, False),
        (["hydra/launcher=joblib"], {}, False),  # jobs run here: auto is right for them
    ],
)
def test_a_cluster_sweep_left_to_the_auto_profile_is_warned_before_submitting(
    overrides: list[str], env: dict[str, str], warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="avatar.sweep"):
        check_launcher(overrides, env)

    assert ("Pass profile=NAME" in caplog.text) is warned
