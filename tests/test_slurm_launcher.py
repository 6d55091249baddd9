"""The SLURM launcher's decisions, without a cluster (tests/slurm/ runs it on a real one):
what each job asks for, how sacct's and sinfo's answers are read, the paragraphs a user
gets, and how the summary shows a job that SLURM ended or never ran.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_avatar

from avatar.cli.report import SLURM_FILE, STATUS_FILE, write_summary
from avatar.cli.slurm import (
    PlannedJob,
    Resources,
    gpus_for_job,
    group_by_resources,
    interrupt_message,
    no_accounting_message,
    parse_sacct,
    partition_has_gpus,
    refusal_message,
)
from avatar.errors import AvatarUserError


@pytest.mark.parametrize(
    ("setting", "accelerator", "gpus"),
    [
        ("auto", "gpu", 1),
        ("auto", "cpu", 0),
        ("auto", None, 0),  # a config that can't be composed fails on the node, GPU-less
        (None, "gpu", 1),
        (2, "gpu", 2),
        ("2", "cpu", 2),  # a number is for every job, the user's decision
        (0, "gpu", 0),
    ],
)
def test_a_job_asks_for_gpus_by_its_profile_unless_a_number_is_set(
    setting: object, accelerator: str | None, gpus: int
) -> None:
    assert gpus_for_job(setting, accelerator) == gpus


@pytest.mark.parametrize("setting", ["two", -1, "1.5"])
def test_a_bad_gpus_per_node_names_the_key_and_what_is_allowed(setting: object) -> None:
    with pytest.raises(AvatarUserError) as raised:
        gpus_for_job(setting, "gpu")

    assert "hydra.launcher.gpus_per_node" in str(raised.value)
    assert "auto" in str(raised.value)


def test_jobs_with_the_same_request_share_one_array_in_sweep_order(tmp_path: Path) -> None:
    def job(num: int, gpus: int) -> PlannedJob:
        return PlannedJob(num, (f"n={num}",), tmp_path / str(num), Resources(gpus))

    groups = group_by_resources([job(0, 0), job(1, 1), job(2, 0), job(3, 1)])

    assert [[j.num for j in members] for members in groups.values()] == [[0, 2], [1, 3]]
    assert list(groups) == [Resources(0), Resources(1)]


def test_sacct_lines_give_one_state_per_array_task() -> None:
    text = "\n".join(
        [
            "41_0|COMPLETED",
            "41_1|CANCELLED by 0",
            "41_[2-4%2]|PENDING",
            "42_[0,2]|PENDING",
            "43|TIMEOUT",
            "",
        ]
    )

    assert parse_sacct(text) == {
        "41_0": "COMPLETED",
        "41_1": "CANCELLED",
        "41_2": "PENDING",
        "41_3": "PENDING",
        "41_4": "PENDING",
        "42_0": "PENDING",
        "42_2": "PENDING",
        "43": "TIMEOUT",
    }


def test_sinfo_tells_which_partitions_have_gpus() -> None:
    text = "gpu*|gpu:4\ncpu|(null)\nmixed|(null)\nmixed|gpu:a100:8\n"

    assert partition_has_gpus(text, None) is True  # the default, marked *
    assert partition_has_gpus(text, "cpu") is False
    assert partition_has_gpus(text, "mixed") is True
    assert partition_has_gpus(text, "nope") is None
    assert partition_has_gpus("", "cpu") is None  # sinfo failed: unknown


def test_a_refused_gpu_request_names_the_partition_and_the_keys_to_change() -> None:
    text = refusal_message(
        "sbatch: error: Batch job submission failed: Requested node configuration is not available",
        partition="cpu",
        gpus_per_node=1,
        count=4,
        cancelled=0,
        has_gpus=False,
    )

    assert "4 sweep jobs asking for 1 GPU per node on partition 'cpu'" in text
    assert "Requested node configuration is not available" in text
    assert "hydra.launcher.partition=NAME" in text and "hydra.launcher.gpus_per_node=0" in text
    assert "Nothing was submitted." in text
    assert "\n" not in text  # one paragraph


def test_other_refusals_point_at_the_launcher_settings_and_say_what_was_cancelled() -> None:
    text = refusal_message(
        "sbatch: error: Invalid account or account/partition combination specified",
        partition=None,
        gpus_per_node=1,
        count=2,
        cancelled=3,
        has_gpus=True,
    )

    assert "the cluster's default partition" in text
    assert "account" in text and "gpus_per_node=0" not in text
    assert "The 3 jobs already submitted for this sweep were cancelled." in text


def test_after_ctrl_c_the_message_ends_with_the_exact_scancel_command() -> None:
    text = interrupt_message({"7_0": "RUNNING", "7_1": "PENDING"})

    assert "7_0 (RUNNING), 7_1 (PENDING)" in text
    assert text.splitlines()[-1] == "  scancel 7_0 7_1"
    assert "No job" in interrupt_message({})


def test_the_no_accounting_message_quotes_sacct_and_names_the_key() -> None:
    text = no_accounting_message("sacct: error: Slurm accounting storage is disabled", ["9_1"], 9)

    assert '"sacct: error: Slurm accounting storage is disabled"' in text
    assert "hydra.launcher.wait_without_accounting_min" in text
    assert "squeue -j 9_1" in text and "scancel 9_1" in text


def _slurm_record(job_dir: Path, num: int, state: str) -> None:
    job_dir.mkdir(parents=True)
    log = job_dir.parent / ".submitit" / f"5_{num}" / f"5_{num}_0_log.out"
    record = {"job_id": f"5_{num}", "state": state, "log": str(log), "num": num}
    record["overrides"] = [f"steps={25 + num}"]
    (job_dir / SLURM_FILE).write_text(json.dumps(record), "utf-8")


def test_the_summary_lists_slurm_jobs_that_never_wrote_a_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _slurm_record(tmp_path / "0", 0, "COMPLETED")
    (tmp_path / "0" / STATUS_FILE).write_text(
        json.dumps({"ok": True, "job": {"num": 0, "overrides": ["steps=25"]}}), "utf-8"
    )
    _slurm_record(tmp_path / "1", 1, "CANCELLED")  # cancelled before it ran: no job dir of Hydra's
    _slurm_record(tmp_path / "2", 2, "TIMEOUT")

    summary = write_summary(tmp_path)

    assert summary is not None
    assert [(j.num, j.ok, j.slurm_state) for j in summary.jobs] == [
        (0, True, "COMPLETED"),
        (1, False, "CANCELLED"),
        (2, False, "TIMEOUT"),
    ]
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("job "))
    assert header.split()[:4] == ["job", "slurm", "job", "overrides"]
    row_1 = next(line for line in table.splitlines() if line.startswith("1 "))
    assert "5_1" in row_1 and "steps=26" in row_1 and "CANCELLED" in row_1
    assert "5_2_0_log.out" in table  # the log of each job that did not succeed
    jobs = json.loads((tmp_path / "summary.json").read_text("utf-8"))["jobs"]
    assert jobs[2]["slurm"] == {
        "job_id": "5_2",
        "state": "TIMEOUT",
        "log": str(tmp_path / ".submitit" / "5_2" / "5_2_0_log.out"),
    }


def test_readme_table_of_slurm_keys_matches_the_launcher_config() -> None:
    root = Path(__file__).resolve().parent.parent
    conf = yaml.safe_load((root / "conf" / "hydra" / "launcher" / "slurm.yaml").read_text("utf-8"))
    readme = (root / "README.md").read_text("utf-8")
    table = readme.split("| key (`hydra.launcher.KEY=`) | default | sbatch |", 1)[1]
    rows = [line for line in table.split("\n\n", 1)[0].splitlines() if line.startswith("| `")]
    assert rows
    for row in rows:
        keys_cell, default_cell = (cell.strip() for cell in row.strip("|").split("|")[:2])
        default = default_cell.replace("`", "").split(":")[0].split(" ")[0]
        for key in re.findall(r"`(\w+)`", keys_cell):
            assert key in conf, key
            value = conf[key]
            shown = "null" if value is None else str(value)
            if isinstance(value, (dict, list)):
                shown = json.dumps(value)
            assert default == shown, key


@pytest.mark.slow
def test_a_slurm_sweep_where_slurm_is_missing_says_where_to_start_it(tmp_path: Path) -> None:
    empty_path = tmp_path / "bin"  # no sbatch, no srun
    empty_path.mkdir()

    result = run_avatar(
        "-m",
        "hydra/launcher=slurm",
        "profile=cpu",
        "steps=25,40",
        cwd=tmp_path,
        env={"PATH": str(empty_path)},
    )

    assert result.returncode == 1
    assert "Traceback" not in result.output
    error = result.error_message()
    assert error.startswith("Error: hydra/launcher=slurm submits jobs with SLURM's sbatch and srun")
    assert "hydra/launcher=submitit_local" in error


def test_a_task_ended_by_submitits_time_limit_handler_counts_as_timed_out() -> None:
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import UncompletedJobError

    from avatar.cli.slurm import _stopped_by_time_limit

    # What submitit raises inside the task when SLURM's warning signal comes near the limit.
    timed_out = JobReturn(
        status=JobStatus.FAILED,
        _return_value=UncompletedJobError("Job not requeued because: timed-out too many times."),
    )
    crashed = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("timed-out? no"))
    finished = JobReturn(status=JobStatus.COMPLETED, _return_value=None)

    assert _stopped_by_time_limit(timed_out) is True
    assert _stopped_by_time_limit(crashed) is False
    assert _stopped_by_time_limit(finished) is False
    assert _stopped_by_time_limit(None) is False
