"""Sweeps on a real one-node SLURM cluster: real sbatch, sacct, scancel (tests/slurm/cluster.sh).

The cluster (munged, slurmctld, slurmd, slurmdbd with a MariaDB, all in a temp dir) is
started once per session and stopped at the end. Its node declares 4 GPUs that are
placeholder device files, so GPU requests are granted by SLURM itself; partition `cpu`
has no GPU gres. The jobs' NVML is avatar's fake (tests/fake_pynvml): the submitting
process sees no driver, while each job is given an RTX 3080 by a `setup` line that runs
on the node, so what a job reports is what it detected there.

Without SLURM installed these tests skip, saying so; under CI=true they fail instead,
so a broken apt step cannot pass CI green. Slow parts: the time-limit test (SLURM's
smallest limit is 1 minute, checked every 30 s) takes about 80 s; the rest 5-15 s each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import GPUS_ENV, FakeGPU, fake_nvml_env

from avatar.cli.report import STATUS_FILE, SUMMARY_JSON_FILE, SUMMARY_TEXT_FILE

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO_ROOT / "tests" / "slurm" / "cluster.sh"
NEEDED = ("sbatch", "scancel", "sacct", "srun", "munged", "slurmctld", "slurmd", "slurmdbd")
NEEDED += ("mariadbd", "mariadb-install-db")
SWEEP_TIMEOUT_S = 240
# The node's 4 GPUs as its jobs' NVML sees them (SLURM's gres are placeholder files): SLURM
# gives each GPU job one of them through CUDA_VISIBLE_DEVICES, which the job must honour.
NODE_GPUS = [FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300) for _ in range(4)]
# Run on the node before avatar starts: the job's fake NVML gets NODE_GPUS there only.
NODE_SETUP = 'hydra.launcher.setup=["export AVATAR_FAKE_GPUS=$AVATAR_TEST_NODE_GPUS"]'


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"SLURM tests must run under CI=true, but: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Cluster:
    dir: Path

    @property
    def conf(self) -> Path:
        return self.dir / "etc" / "slurm.conf"

    def script(self, action: str, **env: str) -> None:
        done = subprocess.run(
            ["bash", str(CLUSTER_SH), action],
            env={**os.environ, "AVATAR_SLURM_DIR": str(self.dir), **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"cluster.sh {action} failed:\n{done.stdout}{done.stderr}", pytrace=False)

    def tool(self, *args: str) -> str:
        """A SLURM command against this cluster; its stdout."""
        done = subprocess.run(
            list(args),
            env={**os.environ, "SLURM_CONF": str(self.conf)},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def queued(self) -> dict[str, str]:
        """Job id -> state, for what squeue lists (pending, running)."""
        lines = self.tool("squeue", "-h", "-r", "-o", "%i|%T").split()
        return dict(line.split("|", 1) for line in lines)

    def alloc_tres(self, job_id: str, deadline_s: float = 20) -> str:
        """What SLURM allocated to the job, from accounting (e.g. cpu=2,gres/gpu=1,...).

        slurmctld hands job records to slurmdbd in the background: a job that just ended
        may not have its allocation recorded yet, so this waits until it is.
        """
        end = time.monotonic() + deadline_s
        while True:
            out = self.tool("sacct", "-n", "-P", "-X", "-o", "JobID,AllocTRES", "-j", job_id)
            tres = dict(line.split("|", 1) for line in out.split()).get(job_id, "")
            if tres or time.monotonic() > end:
                return tres
            time.sleep(0.5)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        _unavailable(
            f"SLURM is not installed here ({', '.join(missing)} not found); as root: "
            "apt-get install -y slurm-wlm munge slurmdbd mariadb-server"
        )
    if os.geteuid() != 0:
        _unavailable("the test cluster's daemons run as root (tests/slurm/cluster.sh)")
    given = os.environ.get("AVATAR_SLURM_DIR")
    home = given or tempfile.mkdtemp(prefix="avatar-slurm-")
    os.chmod(home, 0o755)  # munged's socket folder must be reachable by all
    found = Cluster(Path(home))
    found.script("start")
    try:
        yield found
    finally:
        found.script("stop")
        if not given:  # a dir of our own: its database and logs go with it
            shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class Sweep:
    returncode: int
    stdout: str
    stderr: str
    dir: Path | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def summary(self) -> dict[str, Any]:
        assert self.dir is not None
        return json.loads((self.dir / SUMMARY_JSON_FILE).read_text("utf-8"))

    def rows(self) -> dict[int, dict[str, Any]]:
        return {job["num"]: job for job in self.summary()["jobs"]}


def _env(cluster: Cluster) -> dict[str, str]:
    env = fake_nvml_env(None)  # the submitting process: no NVIDIA driver
    env["SLURM_CONF"] = str(cluster.conf)
    env["AVATAR_TEST_NODE_GPUS"] = json.dumps([gpu.to_json() for gpu in NODE_GPUS])
    env.pop(GPUS_ENV, None)
    return env


def _start(
    cluster: Cluster, cwd: Path, args: Sequence[str], module: str = "avatar"
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, "-m", "hydra/launcher=slurm", *args],
        cwd=cwd,
        env=_env(cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], cwd: Path) -> Sweep:
    try:
        out, err = proc.communicate(timeout=SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the sweep did not end in {SWEEP_TIMEOUT_S} s:\n{out}{err}")
    found = [p.parent for p in (cwd / "multirun").glob("*/*/multirun.yaml")]
    return Sweep(proc.returncode, out, err, found[0] if found else None)


def sweep(cluster: Cluster, cwd: Path, *args: str, module: str = "avatar") -> Sweep:
    return _finish(_start(cluster, cwd, args, module), cwd)


def wait_for_running(cluster: Cluster, count: int, deadline_s: float = 60) -> list[str]:
    """The ids of `count` running jobs, once SLURM runs them."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        running = sorted(i for i, state in cluster.queued().items() if state == "RUNNING")
        if len(running) >= count:
            return running
        time.sleep(0.2)
    pytest.fail(f"{count} jobs did not start running in {deadline_s} s: {cluster.queued()}")


@pytest.fixture
def no_jobs_left(cluster: Cluster) -> Iterator[Cluster]:
    """Each test leaves an empty queue, whatever happened in it."""
    yield cluster
    cluster.tool("scancel", "--full", "-u", os.environ.get("USER") or "root")


# ---------------------------------------------------------------- end to end


def test_a_2x2_sweep_runs_one_slurm_job_per_point_each_reporting_its_own_node(
    no_jobs_left: Cluster, tmp_path: Path
) -> None:
    result = sweep(no_jobs_left, tmp_path, "profile=rtx3080,low_vram", "steps=25,40", NODE_SETUP)

    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    assert "Sweep summary: 4 jobs, 4 ok, 0 failed" in result.stdout
    assert result.dir is not None
    assert (result.dir / SUMMARY_TEXT_FILE).read_text("utf-8").startswith("Sweep summary: 4 jobs")
    rows = result.rows()
    assert sorted(rows) == [0, 1, 2, 3]
    assert len({row["slurm"]["job_id"] for row in rows.values()}) == 4
    for num, row in rows.items():
        assert row["slurm"]["state"] == "COMPLETED"
        assert Path(row["slurm"]["log"]).is_file()
        status = json.loads((Path(row["dir"]) / STATUS_FILE).read_text("utf-8"))
        assert status["ok"] is True, status
        # Detected on the node (the submitting process saw no driver at all), on the GPU
        # SLURM gave the job (CUDA_VISIBLE_DEVICES): one visible, and it fits.
        assert status["hardware"]["cpu_mode"] is False, status["hardware"]
        (chosen,) = [gpu for gpu in status["hardware"]["gpus"] if gpu["chosen"]]
        assert chosen["name"] == NODE_GPUS[0].name
        assert status["job"]["host"] == socket.gethostname()
        assert status["fits"] is True and status["fit_measured"] is True
        expected_profile = "rtx3080" if num < 2 else "low_vram"
        assert status["profile"]["name"] == expected_profile
        assert "gres/gpu=1" in no_jobs_left.alloc_tres(row["slurm"]["job_id"])


def test_a_cpu_profile_job_asks_slurm_for_no_gpu_while_a_gpu_job_gets_one(
    no_jobs_left: Cluster, tmp_path: Path
) -> None:
    result = sweep(no_jobs_left, tmp_path, "profile=cpu,rtx3080", "steps=25")

    assert result.returncode == 0, result.output
    rows = result.rows()
    cpu_job, gpu_job = rows[0]["slurm"]["job_id"], rows[1]["slurm"]["job_id"]
    assert cpu_job.split("_")[0] != gpu_job.split("_")[0]  # one sbatch array per request
    cpu_tres = no_jobs_left.alloc_tres(cpu_job)
    assert "cpu=2" in cpu_tres and "gres/gpu" not in cpu_tres
    assert "gres/gpu=1" in no_jobs_left.alloc_tres(gpu_job)


def test_a_speak_sweep_leaves_one_audio_file_per_slurm_job_with_its_record(
    no_jobs_left: Cluster, tmp_path: Path
) -> None:
    pytest.importorskip("hibari", reason="the light CPU voice needs the voice extra")
    import numpy as np
    import soundfile

    result = sweep(
        no_jobs_left,
        tmp_path,
        "profile=cpu",  # the light CPU voice (hibari): no download, no GPU
        "text=Hello from the cluster.",
        "voice.speed=0.9,1.1",
        module="avatar.speak",
    )

    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    assert "Sweep summary: 2 jobs, 2 ok, 0 failed" in result.stdout
    rows = result.rows()
    assert sorted(rows) == [0, 1]
    job_ids = {row["slurm"]["job_id"] for row in rows.values()}
    assert len(job_ids) == 2 and all(job_id in result.stdout for job_id in job_ids)
    durations_s = {}
    for num, speed in ((0, 0.9), (1, 1.1)):
        row = rows[num]
        assert row["ok"] is True and row["slurm"]["state"] == "COMPLETED", row
        job_dir = Path(row["dir"])
        status = json.loads((job_dir / STATUS_FILE).read_text("utf-8"))
        speech = status["speech"]
        assert speech["voice"]["name"] == "hibari" and speech["voice"]["speed"] == speed
        wav = Path(speech["path"])
        assert wav.parent == job_dir and wav.suffix == ".wav"  # in its own job dir
        audio, rate_hz = soundfile.read(wav, dtype="float32")
        assert rate_hz == 24000 == speech["sample_rate_hz"]
        assert float(np.sqrt(np.mean(audio**2))) > 0.01  # speech, not silence
        durations_s[speed] = len(audio) / rate_hz
    assert durations_s[0.9] > durations_s[1.1]  # each job spoke at its own speed


# ---------------------------------------------------------------- faults


def test_a_gpu_request_on_a_partition_without_gpus_is_one_clear_paragraph(
    no_jobs_left: Cluster, tmp_path: Path
) -> None:
    result = sweep(no_jobs_left, tmp_path, "hydra.launcher.partition=cpu", "profile=rtx3080")

    assert result.returncode == 1
    assert "Traceback" not in result.output
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "partition 'cpu'" in error
    assert "hydra.launcher.partition" in error and "hydra.launcher.gpus_per_node=0" in error
    assert "Nothing was submitted" in error
    assert no_jobs_left.queued() == {}


def test_a_bad_sweep_point_fails_alone_with_its_slurm_job_id_and_log(
    no_jobs_left: Cluster, tmp_path: Path
) -> None:
    result = sweep(no_jobs_left, tmp_path, "profile=cpu", "steps=0,25")

    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    bad, good = result.rows()[0], result.rows()[1]
    assert (bad["ok"], good["ok"]) == (False, True)
    assert "steps" in bad["error"]
    log = Path(bad["slurm"]["log"])
    assert "Invalid value for 'steps': 0" in log.read_text("utf-8")  # the job's own words
    table = result.stdout
    assert bad["slurm"]["job_id"] in table
    assert str(log.relative_to(tmp_path)) in table


def test_a_job_cancelled_with_scancel_is_reported_cancelled_and_the_others_kept(
    no_jobs_left: Cluster, tmp_path: Path
) -> None:
    sleeper = 'hydra.launcher.setup=["test $SLURM_ARRAY_TASK_ID != 1 || sleep 300"]'
    proc = _start(no_jobs_left, tmp_path, ["profile=cpu", "steps=25,40", sleeper])
    running = wait_for_running(no_jobs_left, 2)
    (victim,) = [job_id for job_id in running if job_id.endswith("_1")]
    no_jobs_left.tool("scancel", victim)
    result = _finish(proc, tmp_path)

    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    rows = result.rows()
    assert (rows[0]["ok"], rows[0]["slurm"]["state"]) == (True, "COMPLETED")
    assert (rows[1]["ok"], rows[1]["slurm"]["state"]) == (False, "CANCELLED")
    assert rows[1]["slurm"]["job_id"] == victim
    assert "CANCELLED" in result.stdout


def test_a_job_past_its_time_limit_is_reported_timed_out(
    no_jobs_left: Cluster, tmp_path: Path
) -> None:
    result = sweep(
        no_jobs_left,
        tmp_path,
        "profile=cpu",
        "hydra.launcher.timeout_min=1",  # SLURM's smallest time limit
        "hydra.launcher.poll_max_s=5",
        'hydra.launcher.setup=["sleep 600"]',
    )

    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    (row,) = result.rows().values()
    assert (row["ok"], row["slurm"]["state"]) == (False, "TIMEOUT")
    assert "TIMEOUT" in result.stdout


def test_ctrl_c_of_the_submitter_names_the_jobs_left_and_how_to_cancel_them(
    no_jobs_left: Cluster, tmp_path: Path
) -> None:
    proc = _start(
        no_jobs_left, tmp_path, ["profile=cpu", "steps=25,40", 'hydra.launcher.setup=["sleep 300"]']
    )
    running = wait_for_running(no_jobs_left, 2)
    proc.send_signal(signal.SIGINT)
    result = _finish(proc, tmp_path)

    assert result.returncode == 130, result.output
    assert "Traceback" not in result.output
    (command,) = [line.strip() for line in result.stderr.splitlines() if "scancel" in line]
    assert command == "scancel " + " ".join(running)
    assert result.dir is not None and (result.dir / SUMMARY_TEXT_FILE).is_file()
    assert {row["slurm"]["state"] for row in result.rows().values()} == {"RUNNING"}
    # The command it printed does cancel them.
    no_jobs_left.tool(*command.split())
    end = time.monotonic() + 30
    while no_jobs_left.queued() and time.monotonic() < end:
        time.sleep(0.5)
    assert no_jobs_left.queued() == {}


# Last: it restarts the cluster without accounting, and then with it again.
def test_without_accounting_waiting_has_a_limit_and_the_message_says_why(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.script("stop")
    cluster.script("start", AVATAR_SLURM_ACCOUNTING="0")
    try:
        sleeper = 'hydra.launcher.setup=["test $SLURM_ARRAY_TASK_ID != 1 || sleep 300"]'
        started = time.monotonic()
        result = sweep(
            cluster,
            tmp_path,
            "profile=cpu",
            "steps=25,40",
            sleeper,
            "hydra.launcher.wait_without_accounting_min=0.15",  # 9 s
        )
        took_s = time.monotonic() - started
    finally:
        cluster.script("stop")
        cluster.script("start")

    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    assert took_s < 60
    rows = result.rows()
    assert rows[0]["ok"] is True  # finished jobs still come back (their result files)
    assert (rows[1]["ok"], rows[1]["slurm"]["state"]) == (False, "UNKNOWN")
    error = next(line for line in result.stderr.splitlines() if "Stopped waiting" in line)
    assert "accounting storage is disabled" in error  # sacct's own reason
    assert "hydra.launcher.wait_without_accounting_min" in error
    assert f"scancel {rows[1]['slurm']['job_id']}" in error
