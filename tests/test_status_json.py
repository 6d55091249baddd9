"""status.json and the sweep summary, in-process: what each job writes, and what the
summary reads back, including jobs that failed, raised, or never finished.

The real sweeps (subprocesses, real launchers) are in test_sweep.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeGPU, FakeNvmlModule
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from avatar import load_config
from avatar.cli.report import (
    STATUS_FILE,
    SUMMARY_JSON_FILE,
    SUMMARY_TEXT_FILE,
    collect_jobs,
    hidden_gpu_note,
    status_document,
    write_summary,
)
from avatar.cli.status_view import StatusReport, build_status
from avatar.cli.sweep import SweepSummary, finish_sweep, write_job_status
from avatar.config.files import builtin_conf_dir
from avatar.config.profiles import AutoProfile
from avatar.errors import ConfigValueError
from avatar.hardware.detect import detect_gpu
from avatar.hardware.types import GPUDetection

RTX_3080_BUSY = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=4000)
RTX_2060 = FakeGPU("NVIDIA GeForce RTX 2060", total_mib=6144, used_mib=400)
# The top-level keys the module docstring (and README) document.
DOCUMENTED_KEYS = {
    "schema_version", "ok", "error", "avatar_version", "job", "profile", "settings",
    "hardware", "vram", "fits", "fit_measured", "fit_message", "notes", "plan",
}  # fmt: skip


def hydra_node(job_dir: Path, *, choice: str, overrides: list[str], num: int = 0) -> DictConfig:
    """The parts of a job's `hydra` config that write_job_status reads."""
    return OmegaConf.create(
        {
            "mode": "MULTIRUN",
            "runtime": {
                "output_dir": str(job_dir),
                "choices": {"profile": choice},
                "config_sources": [
                    {"path": str(builtin_conf_dir()), "schema": "file", "provider": "main"}
                ],
            },
            "overrides": {"task": overrides},
            "job": {"num": num},
        }
    )


def one_card_report(overrides: list[str], reason: str) -> tuple[DictConfig, StatusReport]:
    cfg = load_config(overrides)
    return cfg, build_status(cfg, detection=detect_gpu(), reason=reason)


def detector_for(card: FakeGPU | None) -> Callable[[int | None], GPUDetection]:
    """Another machine's detection, as a job on another node would see it."""
    detection = (
        GPUDetection((), None, "none", "no NVIDIA driver found")
        if card is None
        else GPUDetection((as_info(card),), as_info(card), "nvml", "test")
    )
    return lambda gpu_index: detection


def as_info(card: FakeGPU) -> Any:
    from avatar.hardware.types import GPUInfo

    return GPUInfo(0, card.name, card.total_mib, card.used_mib, card.free_mib, card.uuid, 0)


def read_status(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / STATUS_FILE).read_text("utf-8"))


def test_a_job_status_json_holds_hardware_profile_settings_and_fit(
    tmp_path: Path, fake_nvml: Callable[..., FakeNvmlModule]
) -> None:
    fake_nvml([RTX_3080_BUSY])
    cfg, report = one_card_report(["profile=rtx3080", "steps=25"], "set on the command line")
    hydra_cfg = hydra_node(tmp_path, choice="rtx3080", overrides=["profile=rtx3080", "steps=25"])

    write_job_status(hydra_cfg, cfg, report=report, auto=AutoProfile([builtin_conf_dir()]))

    doc = read_status(tmp_path)
    assert set(doc) == DOCUMENTED_KEYS
    assert doc["ok"] is True and doc["error"] is None
    assert doc["job"]["overrides"] == ["profile=rtx3080", "steps=25"]
    assert Path(doc["job"]["dir"]) == tmp_path.resolve()
    assert doc["profile"]["name"] == "rtx3080"
    assert doc["profile"]["reason"] == "set on the command line"
    assert doc["settings"]["steps"] == 25 and doc["settings"]["precision"] == "fp16"
    gpu = doc["hardware"]["gpus"][0]
    assert (gpu["name"], gpu["total_mib"], gpu["chosen"]) == (RTX_3080_BUSY.name, 10240, True)
    assert doc["vram"]["free_mib"] == pytest.approx(10240 - 4000)
    assert (doc["fits"], doc["fit_message"]) == (report.check.fits, report.check.message)
    assert doc["fit_measured"] is True  # against this GPU, not a nominal card
    assert report.plan is not None
    assert [row["stage"] for row in doc["plan"]["rows"]] == [r.stage for r in report.plan.rows]
    assert doc["notes"] == []


def test_a_job_whose_own_hardware_would_pick_another_profile_says_so(
    tmp_path: Path, fake_nvml: Callable[..., FakeNvmlModule]
) -> None:
    fake_nvml([RTX_3080_BUSY])
    composed_reason = "auto: 10240 MiB on GPU 0 (NVIDIA GeForce RTX 3080) >= 8192 -> rtx3080"
    cfg, report = one_card_report(["profile=rtx3080"], composed_reason)
    on_this_node = AutoProfile([builtin_conf_dir()], detector=detector_for(RTX_2060))

    write_job_status(
        hydra_node(tmp_path, choice="auto", overrides=[]), cfg, report=report, auto=on_this_node
    )

    profile = read_status(tmp_path)["profile"]
    assert profile["auto_picked"] is True
    assert profile["own_hardware_pick"] == "low_vram"
    assert "rtx3080" in profile["mismatch"] and "low_vram" in profile["mismatch"]
    assert "profile=" in profile["mismatch"]  # tells the user the fix
    assert read_status(tmp_path)["notes"][0] == profile["mismatch"]


def test_a_profile_named_by_the_user_is_no_mismatch_but_the_own_pick_is_reported(
    tmp_path: Path, fake_nvml: Callable[..., FakeNvmlModule]
) -> None:
    fake_nvml([RTX_3080_BUSY])
    cfg, report = one_card_report(["profile=rtx3080"], "set on the command line")
    on_this_node = AutoProfile([builtin_conf_dir()], detector=detector_for(None))

    write_job_status(
        hydra_node(tmp_path, choice="rtx3080", overrides=["profile=rtx3080"]),
        cfg,
        report=report,
        auto=on_this_node,
    )

    profile = read_status(tmp_path)["profile"]
    assert (profile["own_hardware_pick"], profile["mismatch"]) == ("cpu", None)


def test_a_failed_job_status_names_the_error_and_keeps_what_is_known(tmp_path: Path) -> None:
    cfg = load_config(["profile=low_vram"])
    error = ConfigValueError("Invalid value for 'steps': 0. It must be an integer of at least 1.")

    write_job_status(
        hydra_node(tmp_path, choice="low_vram", overrides=["steps=0"]), cfg, error=error
    )

    doc = read_status(tmp_path)
    assert set(doc) == DOCUMENTED_KEYS
    assert doc["ok"] is False
    assert doc["error"] == str(error)
    assert doc["profile"]["name"] == "low_vram"
    assert doc["job"]["overrides"] == ["steps=0"]
    assert doc["hardware"] is None and doc["fits"] is None


def test_submitit_local_hiding_the_gpu_is_named_with_the_fix(
    fake_nvml: Callable[..., FakeNvmlModule],
) -> None:
    fake_nvml([RTX_3080_BUSY])
    submitit_env = {"SUBMITIT_EXECUTOR": "local", "CUDA_VISIBLE_DEVICES": ""}
    cfg = load_config(["profile=rtx3080"])
    report = build_status(cfg, detection=detect_gpu(env=submitit_env), reason="x")

    note = hidden_gpu_note(report, "gpu", submitit_env)

    assert note is not None and "hydra.launcher.gpus_per_node=1" in note
    assert "gpus_per_node" not in (hidden_gpu_note(report, "gpu", {}) or "")  # not submitit
    assert hidden_gpu_note(report, "cpu", submitit_env) is None  # a CPU profile needs no GPU


def test_no_hint_about_submitit_where_there_is_no_gpu_at_all() -> None:
    cfg = load_config(["profile=rtx3080"])
    report = build_status(cfg, detection=detect_gpu(), reason="x")  # no driver
    submitit_env = {"SUBMITIT_EXECUTOR": "local", "CUDA_VISIBLE_DEVICES": ""}

    note = hidden_gpu_note(report, "gpu", submitit_env)

    assert note is not None and "gpus_per_node" not in note


def test_a_fit_checked_without_a_gpu_is_marked_nominal(tmp_path: Path) -> None:
    cfg = load_config(["profile=rtx3080"])
    report = build_status(cfg, detection=detect_gpu(), reason="x")  # no driver
    write_job(tmp_path, 0, **status_document(job={"num": 0, "overrides": []}, report=report))

    (row,) = collect_jobs(tmp_path)

    if report.check.fits is None:
        assert row.fits_text == "n/a"
    else:
        assert row.fits_text == ("yes" if report.check.fits else "NO") + " (nominal)"


def write_job(sweep: Path, num: int, **doc: Any) -> Path:
    job_dir = sweep / str(num)
    (job_dir / ".hydra").mkdir(parents=True)
    overrides = doc.get("job", {}).get("overrides", [])
    (job_dir / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in overrides), encoding="utf-8"
    )
    if doc:
        (job_dir / STATUS_FILE).write_text(json.dumps(doc), encoding="utf-8")
    return job_dir


def ok_job(num: int, overrides: list[str], profile: str, fits: bool | None) -> dict[str, Any]:
    return {
        "ok": True,
        "error": None,
        "job": {"num": num, "overrides": overrides},
        "profile": {"name": profile, "auto_picked": False, "mismatch": None},
        "fits": fits,
        "notes": [],
    }


def three_job_sweep(sweep: Path) -> None:
    """Job 0 fits, job 1 failed validation, job 2 never wrote its status (lost)."""
    write_job(sweep, 0, **ok_job(0, ["profile=low_vram", "steps=25"], "low_vram", True))
    failed = {**ok_job(1, ["steps=0"], "cpu", None), "ok": False, "error": "Invalid value 'steps'"}
    write_job(sweep, 1, **failed)
    lost = write_job(sweep, 2)
    (lost / ".hydra" / "overrides.yaml").write_text("- profile=rtx4090\n", encoding="utf-8")
    (sweep / ".submitit" / "77").mkdir(parents=True)  # submitit's own files are no job


def test_summary_lists_every_job_with_its_outcome_and_saves_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    three_job_sweep(tmp_path)

    summary = write_summary(tmp_path)

    assert summary is not None
    assert [j.num for j in summary.jobs] == [0, 1, 2]
    assert [j.fits_text for j in summary.jobs] == ["yes", "FAILED", "FAILED"]
    assert [j.num for j in summary.failed] == [1, 2]
    text = (tmp_path / SUMMARY_TEXT_FILE).read_text("utf-8")
    assert text.strip() in capsys.readouterr().out
    for line_start, words in [
        ("0 ", ["profile=low_vram steps=25", "low_vram", "yes", str(tmp_path / "0")]),
        ("1 ", ["steps=0", "FAILED", "Invalid value 'steps'"]),
        ("2 ", ["profile=rtx4090", "rtx4090", "FAILED", f"no {STATUS_FILE}"]),
    ]:
        row = next(line for line in text.splitlines() if line.startswith(line_start))
        assert all(word in row for word in words), row
    saved = json.loads((tmp_path / SUMMARY_JSON_FILE).read_text("utf-8"))
    assert [(j["num"], j["ok"]) for j in saved["jobs"]] == [(0, True), (1, False), (2, False)]
    assert "2 of 3 sweep jobs failed (job 1, 2)" in summary.failure_message()


def test_collect_jobs_reads_nothing_from_an_empty_sweep_dir(tmp_path: Path) -> None:
    assert collect_jobs(tmp_path) == []
    assert write_summary(tmp_path) is None
    assert not (tmp_path / SUMMARY_TEXT_FILE).exists()


def job_config(job_dir: Path, mode: str) -> DictConfig:
    return OmegaConf.create(
        {
            "profile": {"name": "cpu"},
            "hydra": {
                "mode": mode,
                "runtime": {"output_dir": str(job_dir)},
                "overrides": {"task": ["steps=3"]},
                "job": {"num": 4},
            },
        }
    )


def failed_return(exc: Exception) -> JobReturn:
    ret = JobReturn(status=JobStatus.FAILED)
    ret.return_value = exc
    return ret


def test_a_job_that_raised_gets_a_status_json_with_its_exception(tmp_path: Path) -> None:
    SweepSummary().on_job_end(
        config=job_config(tmp_path, "MULTIRUN"), job_return=failed_return(RuntimeError("boom"))
    )

    doc = read_status(tmp_path)
    assert (doc["ok"], doc["error"]) == (False, "RuntimeError: boom")
    assert (doc["job"]["num"], doc["job"]["overrides"]) == (4, ["steps=3"])


def test_a_plain_run_that_raised_writes_no_file(tmp_path: Path) -> None:
    SweepSummary().on_job_end(
        config=job_config(tmp_path, "RUN"), job_return=failed_return(RuntimeError("boom"))
    )

    assert list(tmp_path.iterdir()) == []


def sweep_config(sweep: Path) -> DictConfig:
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})


def test_summary_is_written_even_when_hydra_stops_before_on_multirun_end(tmp_path: Path) -> None:
    three_job_sweep(tmp_path)
    SweepSummary().on_multirun_start(config=sweep_config(tmp_path))
    # ... a job raised, so Hydra re-raises and never calls on_multirun_end

    summary = finish_sweep()

    assert summary is not None and summary.stopped_early
    assert len(summary.jobs) == 3
    assert "stopped the sweep early" in (tmp_path / SUMMARY_TEXT_FILE).read_text("utf-8")
    assert finish_sweep() is None  # once per sweep


def test_a_finished_sweep_is_summarised_once(tmp_path: Path) -> None:
    three_job_sweep(tmp_path)
    callback = SweepSummary()
    callback.on_multirun_start(config=sweep_config(tmp_path))
    callback.on_multirun_end(config=sweep_config(tmp_path))
    (tmp_path / SUMMARY_TEXT_FILE).unlink()

    summary = finish_sweep()

    assert summary is not None and not summary.stopped_early
    assert not (tmp_path / SUMMARY_TEXT_FILE).exists()  # not written a second time
