"""Sweeps that lose or misreport work (issue 10, class 6), through the real CLI.

Sweeps started at once in one folder, Ctrl-C during a sweep, a sweep point that does
not compose (with every local launcher), profile sweep functions, a sweep dir that
holds another sweep or cannot be written, and the missing-plugin hint.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CLI_TIMEOUT_S, CliResult, run_avatar, tree_snapshot
from fakes import HOLD_ENV, fake_nvml_env

from avatar.cli.report import STATUS_FILE, SUMMARY_JSON_FILE, collect_jobs
from avatar.cli.sweep import check_launcher
from avatar.config.files import builtin_conf_dir, group_files
from avatar.errors import AvatarUserError

pytestmark = pytest.mark.slow


def summary_json(sweep: Path) -> dict[str, Any]:
    return json.loads((sweep / SUMMARY_JSON_FILE).read_text("utf-8"))


def job_overrides(summary: dict[str, Any]) -> set[tuple[str, ...]]:
    return {tuple(job["overrides"]) for job in summary["jobs"]}


def sweep_dir_named_in(stdout: str, cwd: Path) -> Path:
    """The sweep dir the printed summary names (`Sweep summary: ... (DIR)`)."""
    (line,) = [line for line in stdout.splitlines() if line.startswith("Sweep summary:")]
    return cwd / line.rsplit("(", 1)[1].rstrip(")")


def start_avatar(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """`python -m avatar ARGS` started, not waited for; SIGINT acts as in a terminal
    (a shell starts background jobs with SIGINT ignored, which Python would inherit)."""
    return subprocess.Popen(
        [sys.executable, "-m", "avatar", *args],
        cwd=cwd,
        env=fake_nvml_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_file(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while not path.exists():
        assert proc.poll() is None, f"ended before {path} appeared: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


# ------------------------------------------------------------ sweeps at once, one folder


def test_sweeps_started_at_once_in_one_folder_each_keep_and_report_only_their_own_jobs(
    tmp_path: Path,
) -> None:
    sweeps = [("steps=11,12",), ("steps=21,22",), ("steps=31,32",)]
    procs = [start_avatar("-m", *args, "profile=cpu", cwd=tmp_path) for args in sweeps]
    results = [CliResult(p.wait(CLI_TIMEOUT_S), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]

    dirs = []
    for args, result in zip(sweeps, results, strict=True):
        assert result.returncode == 0, result.output
        sweep = sweep_dir_named_in(result.stdout, tmp_path)
        dirs.append(sweep)
        values = args[0].split("=")[1].split(",")
        own = {(f"steps={v}", "profile=cpu") for v in values}
        assert job_overrides(summary_json(sweep)) == own
        assert all(job["ok"] for job in summary_json(sweep)["jobs"])
    assert len(set(dirs)) == 3
    # Every job's result is on disk: 3 sweeps x 2 jobs.
    assert len(list((tmp_path / "multirun").rglob(STATUS_FILE))) == 6


def test_a_sweep_dir_that_holds_another_sweeps_jobs_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    first = run_avatar("-m", "steps=5,6", "profile=cpu", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert first.returncode == 0, first.output
    before = tree_snapshot(tmp_path)

    again = run_avatar("-m", "steps=7", "profile=cpu", "hydra.sweep.dir=sweep", cwd=tmp_path)

    message = again.error_message()
    assert again.returncode == 1, again.output
    assert "Traceback" not in again.output
    assert message.startswith("Error: ") and "\n" not in message, message
    assert "already holds" in message and "hydra.sweep.dir=" in message
    assert tree_snapshot(tmp_path) == before


def test_two_sweeps_started_at_once_into_the_same_given_dir_never_mix_their_jobs(
    tmp_path: Path,
) -> None:
    sweeps = [("steps=11,12",), ("steps=21,22",)]
    procs = [
        start_avatar("-m", *args, "profile=cpu", "hydra.sweep.dir=sweep", cwd=tmp_path)
        for args in sweeps
    ]
    results = [CliResult(p.wait(CLI_TIMEOUT_S), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]

    codes = sorted(r.returncode for r in results)
    assert codes == [0, 1], [r.output for r in results]
    winner = next(args for args, r in zip(sweeps, results, strict=True) if r.returncode == 0)
    refused = next(r for r in results if r.returncode == 1)
    assert "already holds" in refused.error_message() and "Traceback" not in refused.output
    values = winner[0].split("=")[1].split(",")
    own = {(f"steps={v}", "profile=cpu") for v in values}
    assert job_overrides(summary_json(tmp_path / "sweep")) == own


# ------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_during_a_sweep_ends_with_an_interrupted_summary_and_exit_status_130(
    tmp_path: Path,
) -> None:
    planned = 40  # sequential jobs of ~0.3 s each: the signal comes long before the last
    proc = start_avatar(
        "-m", f"steps=range(1,{planned + 1})", "profile=cpu", "hydra.sweep.dir=sweep", cwd=tmp_path
    )
    wait_for_file(tmp_path / "sweep" / "0" / STATUS_FILE, proc)

    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)

    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    summary = summary_json(tmp_path / "sweep")
    assert summary["interrupted"] is True
    assert summary["planned"] == planned
    done = sum(1 for p in (tmp_path / "sweep").glob(f"*/{STATUS_FILE}"))
    assert 1 <= summary["done"] == done < planned
    assert f"INTERRUPTED (Ctrl-C): {done} of {planned} planned jobs done" in stdout
    assert "Interrupted" in stderr
    # No job's note points to a log file that is not there.
    for job in summary["jobs"]:
        assert "see its log" not in (job["error"] or ""), job


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_ctrl_c_in_a_terminal_stops_a_sweep_of_worker_processes_without_a_traceback(
    tmp_path: Path, launcher: str
) -> None:
    """As a terminal sends it: SIGINT to the whole process group, so joblib's workers and
    submitit's controllers get it too. One job is done, the others are held in the fake
    driver's nvmlInit until the signal, so the counts are known."""
    check_launcher([f"hydra/launcher={launcher}"])  # the plugin is installed (test extra)
    hold = tmp_path / "hold"
    hold.mkdir()
    planned = 4
    proc = subprocess.Popen(
        [sys.executable, "-m", "avatar", "-m", f"steps=range(1,{planned + 1})", "profile=cpu",
         f"hydra/launcher={launcher}", "hydra.sweep.dir=sweep"],
        cwd=tmp_path, env=fake_nvml_env([], **{HOLD_ENV: str(hold)}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + CLI_TIMEOUT_S
        # The job let through is done (whichever started first), a second is held.
        while not list((tmp_path / "sweep").glob(f"*/{STATUS_FILE}")) or (
            len(list(hold.glob("job-*"))) < 2
        ):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sweep never got to one job done"
            time.sleep(0.05)

        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
    finally:  # whatever failed, no process of the sweep outlives the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    summary = summary_json(tmp_path / "sweep")
    assert summary["interrupted"] is True and summary["planned"] == planned
    assert summary["done"] == 1, summary
    assert f"INTERRUPTED (Ctrl-C): 1 of {planned} planned jobs done" in stdout
    assert stderr.strip().endswith(
        f"1 of {planned} planned sweep jobs were done; their "
        f"results are kept in {tmp_path / 'sweep'}."
    ), stderr


def test_a_second_ctrl_c_while_the_summary_is_written_does_not_cut_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users press Ctrl-C again when the first seems slow: the summary is still written
    whole, and Ctrl-C works as before afterwards. (A recording handler stands in for
    Python's, which would raise KeyboardInterrupt into the test run.)"""
    from avatar.cli import sweep

    events: list[str] = []

    def write_summary(*args: object, **kwargs: object) -> str:
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while writing
        time.sleep(0.1)  # a handler left in place runs here
        events.append("written")
        return "summary"

    monkeypatch.setattr(sweep, "write_summary", write_summary)
    monkeypatch.setattr(sweep._progress, "sweep_dir", tmp_path)
    monkeypatch.setattr(sweep._progress, "ended", False)
    previous = signal.signal(signal.SIGINT, lambda *_: events.append("Ctrl-C"))
    try:
        assert sweep.finish_sweep(interrupted=True) == "summary"
        assert events == ["written"]
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert events == ["written", "Ctrl-C"]  # the handler is back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_job_without_status_names_its_log_only_when_the_log_exists(tmp_path: Path) -> None:
    for num in ("0", "1"):
        (tmp_path / num / ".hydra").mkdir(parents=True)
        (tmp_path / num / ".hydra" / "overrides.yaml").write_text("- steps=5\n", "utf-8")
    (tmp_path / "1" / "avatar.log").write_text("the job's log\n", "utf-8")

    no_log, with_log = collect_jobs(tmp_path)

    assert not no_log.ok and "log" not in (no_log.error or "")
    assert not with_log.ok and "avatar.log" in (with_log.error or "")


# ------------------------------------------------------- a bad point fails alone


LOCAL_LAUNCHERS = ["basic", "joblib", "submitit_local"]


@pytest.mark.parametrize("launcher", LOCAL_LAUNCHERS)
def test_an_unknown_option_in_a_sweep_fails_as_its_own_job_and_the_others_run(
    tmp_path: Path, launcher: str
) -> None:
    if launcher != "basic":
        check_launcher([f"hydra/launcher={launcher}"])  # the plugin is installed (test extra)
    result = run_avatar(
        "-m", "lipsync=wav2lip,nope", "profile=cpu", f"hydra/launcher={launcher}",
        "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    jobs = {tuple(j["overrides"]): j for j in summary_json(tmp_path / "sweep")["jobs"]}
    assert set(jobs) == {("lipsync=wav2lip", "profile=cpu"), ("lipsync=nope", "profile=cpu")}
    assert jobs[("lipsync=wav2lip", "profile=cpu")]["ok"] is True
    bad = jobs[("lipsync=nope", "profile=cpu")]
    assert bad["ok"] is False and "lipsync/nope" in bad["error"], bad
    status = json.loads((Path(bad["dir"]) / STATUS_FILE).read_text("utf-8"))
    assert status["ok"] is False and "wav2lip" in status["error"]  # the options it could be
    assert "FAILED" in result.stdout
    assert "1 of 2 sweep jobs failed" in result.stderr


# ------------------------------------------------------- profile sweep functions


@pytest.mark.parametrize(
    ("expression", "pattern"),
    [("choice(rtx3080,low_vram)", None), ("glob(rtx*)", "rtx")],
)
def test_a_profile_sweep_function_sweeps_the_profiles_it_names(
    tmp_path: Path, expression: str, pattern: str | None
) -> None:
    result = run_avatar("-m", f"profile={expression}", "hydra.sweep.dir=sweep", cwd=tmp_path)

    assert result.returncode == 0, result.output
    profiles = {job["profile"] for job in summary_json(tmp_path / "sweep")["jobs"]}
    if pattern is None:
        assert profiles == {"rtx3080", "low_vram"}
    else:
        names = set(group_files("profile", [builtin_conf_dir()]))
        assert profiles == {n for n in names if n.startswith(pattern)} and len(profiles) >= 2


def test_a_profile_glob_that_matches_no_profile_is_one_paragraph(tmp_path: Path) -> None:
    result = run_avatar("-m", "profile=glob(zzz*)", cwd=tmp_path)

    message = result.error_message()
    assert result.returncode == 1, result.output
    assert (
        message.startswith("Error: profile=glob(zzz*) matches no profile") and "\n" not in message
    )
    assert not (tmp_path / "multirun").exists()


# --------------------------------------------------------- a sweep dir that can't be written


def test_a_sweep_dir_that_cannot_be_made_is_one_paragraph_naming_hydra_sweep_dir(
    tmp_path: Path,
) -> None:
    (tmp_path / "blocker").write_text("a file where the sweep dir's parent would be\n", "utf-8")
    before = tree_snapshot(tmp_path)

    result = run_avatar(
        "-m", "steps=5,6", "profile=cpu", "hydra.sweep.dir=blocker/sweep", cwd=tmp_path
    )

    message = result.error_message()
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    assert (
        message.startswith("Error: Cannot start the sweep in blocker/sweep") and "\n" not in message
    )
    assert "hydra.sweep.dir=" in message
    assert tree_snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_multirun_in_a_read_only_folder_is_one_paragraph_naming_hydra_sweep_dir(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o555)
    try:
        result = run_avatar("-m", "steps=5,6", "profile=cpu", cwd=tmp_path)
    finally:
        tmp_path.chmod(0o755)

    message = result.error_message()
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    assert "cannot be written" in message and "hydra.sweep.dir=" in message, message
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- missing plugin


@pytest.mark.parametrize(
    ("launcher", "package"),
    [("joblib", "hydra-joblib-launcher"), ("submitit_local", "hydra-submitit-launcher")],
)
def test_the_missing_plugin_hint_names_the_package_not_an_unrelated_project(
    launcher: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(AvatarUserError) as raised:
        check_launcher([f"hydra/launcher={launcher}"])

    message = str(raised.value)
    assert f"pip install '{package}>=1.2'" in message
    assert "pip install '.[sweep]'" in message
    assert "avatar[sweep]" not in message


def _sysfs_refuses_folders() -> bool:
    try:
        os.mkdir("/sys/avatar-sweep-probe")
    except OSError:
        return True
    os.rmdir("/sys/avatar-sweep-probe")
    return False


@pytest.mark.skipif(not _sysfs_refuses_folders(), reason="needs Linux's sysfs at /sys")
def test_a_sweep_dir_where_no_folder_can_be_made_is_one_paragraph_even_for_root(
    tmp_path: Path,
) -> None:
    result = run_avatar(
        "-m", "steps=5,6", "profile=cpu", "hydra.sweep.dir=/sys/avatar-sweep/s", cwd=tmp_path
    )

    message = result.error_message()
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    assert "cannot be written" in message and "hydra.sweep.dir=" in message, message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_processes_started_during_a_local_submitit_launch_write_stderr_to_the_log(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """submitit_local's controllers inherit fd 2: inside, a child's stderr goes to the log,
    this process's own stderr does not, and fd 2 is as it was afterwards."""
    from avatar.cli.sweep import _inherited_stderr

    log = tmp_path / "controllers.log"
    child = [sys.executable, "-c", "import sys; sys.stderr.write('from the child')"]
    with _inherited_stderr(log):
        subprocess.run(child, check=True)
        print("from this process", file=sys.stderr)
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write(' after')"], check=True)

    assert log.read_text("utf-8") == "from the child"
    assert capfd.readouterr().err == "from this process\n after"


def test_a_log_that_cannot_be_opened_leaves_stderr_as_it_is(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from avatar.cli.sweep import _inherited_stderr

    (tmp_path / "file").write_text("a file where the log's folder would be\n", "utf-8")
    with _inherited_stderr(tmp_path / "file" / "controllers.log"):
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('x')"], check=True)

    assert capfd.readouterr().err == "x"
