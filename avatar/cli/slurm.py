"""avatar's SLURM launcher (`hydra/launcher=slurm`), built on submitit.

Why not hydra-submitit-launcher's own SlurmLauncher: it gives every job of a sweep
the same sbatch parameters, and collects results as `[j.results()[0] for j in jobs]`,
so one cancelled job loses every result with a traceback. This launcher

- asks SLURM for what each job needs: jobs are grouped by their resources (a GPU
  for a job whose profile uses one, none for `profile=cpu`, or
  `hydra.launcher.gpus_per_node=N` for all), one sbatch array per group;
- collects each job on its own, reading job states with `sacct`, and records the
  SLURM job id, state and log path beside the job's status.json (`slurm.json`),
  so the sweep summary lists cancelled, timed-out and failed jobs with their ids;
- turns the cluster's refusals, Ctrl-C and a cluster without accounting into one
  paragraph each, without a traceback.

Hydra only instantiates launchers from the `hydra_plugins` package, so
conf/hydra/launcher/slurm.yaml names the thin class in
`hydra_plugins/avatar_launcher/`, which hands over to `SlurmSweepLauncher` here
(imported only when a sweep uses it).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from avatar.cli.report import SLURM_FILE
from avatar.errors import AvatarUserError

log = logging.getLogger("avatar.cli.slurm")

AUTO = "auto"
# Keys of conf/hydra/launcher/slurm.yaml that are avatar's, not submitit's.
OWN_KEYS = {"gpus_per_node", "wait_without_accounting_min", "poll_max_s"}
# SLURM job states after which a job never runs again (sacct's State column, first word).
# Not PREEMPTED: submitit requeues a preempted job (the launcher is checkpointable).
TERMINAL_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "REVOKED",
    "TIMEOUT",
}
SACCT_TIMEOUT_S = 30.0  # one sacct call; a hung controller must not hang the sweep
RESULT_GRACE_S = 15.0  # a COMPLETED job's result file may reach a shared disk late
SUBMITTER_INTERRUPTED = 130  # exit status after Ctrl-C, as shells report SIGINT


class SlurmSubmitError(AvatarUserError):
    """sbatch refused the sweep's jobs (a GPU request, a partition, an account...)."""


# ---------------------------------------------------------------- pure decisions


def gpus_for_job(setting: Any, accelerator: str | None) -> int:
    """GPUs to request for one job: `auto` follows its profile (1 for gpu, 0 for cpu).

    A job whose config cannot be composed (accelerator None) asks for none: it will
    fail the same way on the node, and needs no GPU to say so.
    """
    if setting is None or str(setting).strip().lower() == AUTO:
        return 1 if accelerator == "gpu" else 0
    try:
        count = int(setting)
    except (TypeError, ValueError):
        count = -1
    if count < 0 or str(count) != str(setting).strip():
        raise AvatarUserError(
            f"hydra.launcher.gpus_per_node={setting!r} is not allowed: use auto (one GPU for "
            "each job whose profile uses a GPU, none for profile=cpu) or a whole number of GPUs "
            "for every job (0 for none)."
        )
    return count


@dataclass(frozen=True)
class Resources:
    """What one group of jobs asks SLURM for, beyond the launcher's common keys."""

    gpus_per_node: int


@dataclass
class PlannedJob:
    num: int
    overrides: tuple[str, ...]
    job_dir: Path
    resources: Resources


def group_by_resources(jobs: Iterable[PlannedJob]) -> dict[Resources, list[PlannedJob]]:
    """One sbatch array per distinct request, in the order the jobs come."""
    groups: dict[Resources, list[PlannedJob]] = {}
    for job in jobs:
        groups.setdefault(job.resources, []).append(job)
    return groups


_ARRAY_ID = re.compile(r"^(?P<base>\d+)_\[(?P<ranges>[^\]]*)\]$")


def parse_sacct(text: str) -> dict[str, str]:
    """`sacct -n -P -X -o JobID,State` output -> {"12_3": "CANCELLED", ...}.

    Pending array tasks come as one line, `12_[2-5%4]`; states like "CANCELLED by 0"
    keep their first word.
    """
    states: dict[str, str] = {}
    for line in text.splitlines():
        job_id, _, state = line.strip().partition("|")
        if not job_id or not state:
            continue
        word = state.split()[0].upper()
        match = _ARRAY_ID.match(job_id)
        if match is None:
            states[job_id] = word
            continue
        for part in match["ranges"].split("%")[0].split(","):
            first, _, last = part.partition("-")
            if first.isdigit():
                for index in range(int(first), int(last or first) + 1):
                    states.setdefault(f"{match['base']}_{index}", word)
    return states


def where(partition: str | None) -> str:
    return f"partition {partition!r}" if partition else "the cluster's default partition"


def partition_has_gpus(sinfo_text: str, partition: str | None) -> bool | None:
    """From `sinfo -h -o "%P|%G"`: whether the partition (None: the default, marked
    with *) has any gpu gres; None when sinfo did not list it."""
    found: bool | None = None
    for line in sinfo_text.splitlines():
        name, _, gres = line.strip().partition("|")
        is_default = name.endswith("*")
        if (partition is None and is_default) or name.rstrip("*") == partition:
            found = bool(found) or "gpu" in gres
    return found


def refusal_message(
    sbatch_error: str,
    *,
    partition: str | None,
    gpus_per_node: int,
    count: int,
    cancelled: int,
    has_gpus: bool | None = None,
) -> str:
    """The paragraph for a submission sbatch refused; names the key to change.

    `has_gpus` is what sinfo says of the partition: sbatch's own words for a GPU
    request a partition cannot meet ("Requested node configuration is not available")
    are the same as for too much memory or too many CPUs.
    """
    said = " ".join(line.strip() for line in sbatch_error.splitlines() if line.strip())
    said = said or "no message"
    gpu_refusal = gpus_per_node > 0 and ("gres" in said.lower() or has_gpus is False)
    asking = (
        f"{gpus_per_node} GPU{'s' if gpus_per_node != 1 else ''} per node"
        if gpus_per_node
        else "no GPU"
    )
    head = (
        f"SLURM refused {count} sweep job{'s' if count != 1 else ''} asking for {asking} on "
        f'{where(partition)} (sbatch said: "{said}").'
    )
    if gpu_refusal:
        advice = (
            f" {where(partition).capitalize()} has no GPUs SLURM can give (no gpu gres). Choose "
            'a partition with GPUs with hydra.launcher.partition=NAME (`sinfo -o "%P %G"` '
            "lists each partition's GPUs), or ask for none with hydra.launcher.gpus_per_node=0 "
            "(or sweep profile=cpu, whose jobs ask for no GPU)."
        )
    else:
        advice = (
            " Check the launcher's settings against your cluster: hydra.launcher.partition, "
            "account, qos, constraint, timeout_min, mem_gb, cpus_per_task and "
            "additional_parameters (see them with `python -m avatar hydra/launcher=slurm --cfg "
            "hydra -p hydra.launcher`)."
        )
    tail = (
        f" The {cancelled} job{'s' if cancelled != 1 else ''} already submitted for this sweep "
        "were cancelled."
        if cancelled
        else " Nothing was submitted."
    )
    return head + advice + tail


def interrupt_message(states: Mapping[str, str]) -> str:
    """After Ctrl-C: what is still on the cluster, and the exact command to cancel it."""
    if not states:
        return "Interrupted. No job of this sweep is left on the cluster."
    listed = ", ".join(f"{job_id} ({state})" for job_id, state in states.items())
    return (
        f"Interrupted. {len(states)} job{'s are' if len(states) != 1 else ' is'} still queued "
        f"or running on the cluster: {listed}. They go on without this command, but nothing "
        "will collect them into the summary. To cancel them:\n"
        f"  scancel {' '.join(states)}"
    )


def no_accounting_message(sacct_error: str, job_ids: Sequence[str], waited_s: float) -> str:
    """Why waiting stopped on a cluster whose job states can't be read."""
    said = " ".join(sacct_error.split()) or "no message"
    return (
        f"Stopped waiting for SLURM job{'s' if len(job_ids) != 1 else ''} {', '.join(job_ids)} "
        f"after {waited_s:.0f} s: sacct cannot read job states on this cluster (sacct said: "
        f'"{said}"). Without SLURM accounting a job that was cancelled, killed or timed out '
        "cannot be told from one still running, so avatar waits only "
        "hydra.launcher.wait_without_accounting_min (default: the time limit, timeout_min, "
        "plus 5) for results. The jobs may still be queued or running: check with "
        f"`squeue -j {','.join(job_ids)}`, cancel with `scancel {' '.join(job_ids)}`."
    )


# ---------------------------------------------------------------- cluster commands


@dataclass
class SacctReading:
    states: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # sacct failed: accounting off, slurmdbd down...


def read_states(job_ids: Iterable[str]) -> SacctReading:
    """One sacct call for the given jobs (arrays asked for by their base id)."""
    bases = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not bases:
        return SacctReading()
    command = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(bases)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SACCT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SacctReading(error=str(exc))
    if done.returncode != 0:
        return SacctReading(error=(done.stderr or done.stdout).strip() or f"exit {done.returncode}")
    return SacctReading(states=parse_sacct(done.stdout))


def queued_states(job_ids: Sequence[str]) -> dict[str, str]:
    """Jobs still queued or running, by squeue (works without accounting), best effort."""
    wanted = set(job_ids)
    try:
        done = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted(wanted))],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {job_id: "UNKNOWN" for job_id in job_ids}
    if done.returncode != 0:
        return {job_id: "UNKNOWN" for job_id in job_ids}
    found = parse_sacct(done.stdout)
    return {job_id: found[job_id] for job_id in job_ids if job_id in found}


def _sinfo_gres() -> str:
    """Each partition's gres, `name|gres` per line ("" when sinfo fails)."""
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%P|%G"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


# ---------------------------------------------------------------- the launcher


@dataclass
class Submitted:
    planned: PlannedJob
    job: Any  # submitit.slurm.slurm.SlurmJob
    state: str = "PENDING"
    result: JobReturn | None = None
    done: bool = False
    ended_at: float | None = None  # when sacct first said it ended without a result yet

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def log_path(self) -> Path:
        return Path(self.job.paths.stdout)


def write_record(submitted: Submitted, note: str | None = None) -> None:
    """slurm.json in the job's dir: what the summary shows beside status.json."""
    job_dir = submitted.planned.job_dir
    job_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "job_id": submitted.job_id,
        "state": submitted.state,
        "log": str(submitted.log_path.resolve()),
        "gpus_per_node": submitted.planned.resources.gpus_per_node,
        "overrides": list(submitted.planned.overrides),
        "num": submitted.planned.num,
        "note": note,
    }
    tmp = job_dir / (SLURM_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(job_dir / SLURM_FILE)


def _stopped_by_time_limit(result: JobReturn | None) -> bool:
    """submitit's signal handler ends a task near its time limit by raising
    UncompletedJobError("... timed-out ...") inside it; Hydra records that as the
    task's failure, and SLURM then sees the job end normally."""
    if result is None or result.status != JobStatus.FAILED:
        return False
    error = result._return_value  # Hydra keeps the task's exception here
    return type(error).__name__ == "UncompletedJobError" and "timed-out" in str(error)


def _fail(exc: AvatarUserError, code: int = 1) -> None:
    """Inside Hydra's launch an exception would end in Hydra's traceback printer."""
    print(f"Error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(code)


class SlurmSweepLauncher(BaseSubmititLauncher):
    """submitit's SLURM executor, per-group resources and per-job collection.

    The job side (`__call__`, run on the node) is hydra-submitit-launcher's: it
    composes the job's config there and runs the task with Hydra's callbacks, so
    each job detects its own hardware and writes its status.json.
    """

    _EXECUTOR = "slurm"

    # ------------------------------------------------------------ planning

    def _plan(self, job_overrides: Sequence[Sequence[str]], first: int) -> list[PlannedJob]:
        assert self.config is not None and self.hydra_context is not None
        setting = self.params.get("gpus_per_node", AUTO)
        try:
            gpus_for_job(setting, None)  # reject a bad value before composing anything
        except AvatarUserError as exc:
            _fail(exc)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        numbering = OmegaConf.create({"hydra": OmegaConf.to_container(self.config.hydra)})
        accelerators: dict[tuple[str, ...], str | None] = {}
        planned = []
        for offset, overrides in enumerate(job_overrides):
            num = first + offset
            key = tuple(o for o in overrides if "profile" in o.partition("=")[0])
            if key not in accelerators:
                accelerators[key] = self._accelerator(list(overrides))
            gpus = gpus_for_job(setting, accelerators[key])
            planned.append(
                PlannedJob(
                    num=num,
                    overrides=tuple(overrides),
                    job_dir=sweep_dir / self._subdir(numbering, num),
                    resources=Resources(gpus_per_node=gpus),
                )
            )
        return planned

    def _accelerator(self, overrides: list[str]) -> str | None:
        """The job's profile accelerator (gpu/cpu), composed as the node will compose it."""
        assert self.config is not None and self.hydra_context is not None
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            value = OmegaConf.select(cfg, "profile.accelerator", default=None)
        except Exception:  # the job itself will report why its config can't be composed
            return None
        return None if value is None else str(getattr(value, "value", value))

    @staticmethod
    def _subdir(numbering: DictConfig, num: int) -> str:
        try:
            with open_dict(numbering):
                numbering.hydra.job.num = num
            return str(numbering.hydra.sweep.subdir)
        except Exception:
            return str(num)

    # ------------------------------------------------------------ submitting

    def _executor(self, resources: Resources) -> Any:
        import submitit

        params = {k: v for k, v in self.params.items() if k not in OWN_KEYS}
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init["slurm_max_num_timeout"] = params.pop("max_num_timeout")
        try:
            executor = submitit.AutoExecutor(cluster="slurm", **init)
        except RuntimeError as exc:  # no srun: not on a SLURM machine
            _fail(
                AvatarUserError(
                    "hydra/launcher=slurm submits jobs with SLURM's sbatch and srun, which are not "
                    f"on PATH here ({exc}). Start the sweep on a machine of the cluster (a login "
                    "node), or choose a launcher for this machine: hydra/launcher=submitit_local "
                    "or joblib."
                )
            )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        named = {(k if k in base else f"slurm_{k}"): v for k, v in params.items()}
        named["gpus_per_node"] = resources.gpus_per_node or None
        executor.update_parameters(**named)
        return executor

    def _submit(self, planned: list[PlannedJob]) -> list[Submitted]:
        import submitit

        submitted: list[Submitted] = []
        for resources, members in group_by_resources(planned).items():
            executor = self._executor(resources)
            args = [
                (
                    list(p.overrides),
                    "hydra.sweep.dir",
                    p.num,
                    f"job_id_for_{p.num}",
                    Singleton.get_state(),
                )
                for p in members
            ]
            said = io.StringIO()
            try:
                # submitit prints sbatch's stderr itself; it goes into the paragraph instead.
                with contextlib.redirect_stderr(said):
                    jobs = executor.map_array(self, *zip(*args, strict=True))
            except submitit.core.utils.FailedJobError as exc:
                cancelled = self._cancel(submitted)
                partition = self.params.get("partition")
                _fail(
                    SlurmSubmitError(
                        refusal_message(
                            str(exc) or said.getvalue(),
                            partition=partition,
                            gpus_per_node=resources.gpus_per_node,
                            count=len(members),
                            cancelled=cancelled,
                            has_gpus=partition_has_gpus(_sinfo_gres(), partition),
                        )
                    )
                )
            for p, job in zip(members, jobs, strict=True):
                entry = Submitted(planned=p, job=job)
                write_record(entry)
                submitted.append(entry)
                log.info(
                    "\t#%d : %s -> SLURM job %s (%d GPU)",
                    p.num,
                    " ".join(filter_overrides(p.overrides)),
                    entry.job_id,
                    resources.gpus_per_node,
                )
        return submitted

    @staticmethod
    def _cancel(submitted: Sequence[Submitted]) -> int:
        ids = [s.job_id for s in submitted]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)
            for s in submitted:
                s.state = "CANCELLED"
                write_record(s, note="cancelled by avatar: another part of the sweep was refused")
        return len(ids)

    # ------------------------------------------------------------ collecting

    def _collect(self, entry: Submitted, now: float) -> None:
        """Take the job's result, or its end without one; leave it pending otherwise."""
        import submitit

        pickle = Path(entry.job.paths.result_pickle)
        if pickle.exists():
            try:
                value = entry.job.results()[0]
            except submitit.core.utils.UncompletedJobError as exc:
                # submitit's own time-limit handler ends the job with this error.
                if "timed-out" in str(exc):
                    entry.state = "TIMEOUT"
                elif entry.state not in TERMINAL_STATES:
                    entry.state = "FAILED"
            else:
                entry.result = value if isinstance(value, JobReturn) else None
                if entry.state not in TERMINAL_STATES:
                    entry.state = "COMPLETED"
                if _stopped_by_time_limit(entry.result):
                    entry.state = "TIMEOUT"
            entry.done = True
            return
        if entry.state in TERMINAL_STATES:
            # Cancelled, timed out, killed: no result will come. A COMPLETED job's result
            # may still be on its way to a shared disk.
            entry.ended_at = entry.ended_at or now
            if entry.state != "COMPLETED" or now - entry.ended_at > RESULT_GRACE_S:
                entry.done = True

    def _wait(self, submitted: list[Submitted]) -> None:
        poll_max_s = float(self.params.get("poll_max_s") or 30)
        limit_min = self.params.get("wait_without_accounting_min")
        if limit_min is None:
            limit_min = float(self.params.get("timeout_min") or 60) + 5
        limit_s = float(limit_min) * 60
        start = last_read = time.monotonic()
        read_every_s = 2.0
        unreadable_since: float | None = None
        sacct_error = ""
        pending = list(submitted)
        while pending:
            now = time.monotonic()
            if now - last_read >= read_every_s:
                reading = read_states(s.job_id for s in pending)
                last_read = now
                read_every_s = min(poll_max_s, max(2.0, (now - start) / 4))
                if reading.error is None:
                    unreadable_since = None
                    for s in pending:
                        s.state = reading.states.get(s.job_id, s.state)
                else:
                    sacct_error = reading.error
                    unreadable_since = unreadable_since or now
            for s in pending:
                self._collect(s, now)
                if s.done:
                    write_record(s)
            pending = [s for s in pending if not s.done]
            if pending and unreadable_since is not None and now - unreadable_since >= limit_s:
                self._give_up(pending, sacct_error, now - unreadable_since)
                return
            if pending:
                time.sleep(1.0)

    @staticmethod
    def _give_up(pending: list[Submitted], sacct_error: str, waited_s: float) -> None:
        note = "state unknown: sacct cannot read job states on this cluster"
        for s in pending:
            s.state = "UNKNOWN"
            write_record(s, note=note)
        message = no_accounting_message(sacct_error, [s.job_id for s in pending], waited_s)
        print(f"Error: {message}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------ Hydra's entry point

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("SLURM sweep output dir: %s", sweep_dir)
        submitted: list[Submitted] = []
        try:
            planned = self._plan(job_overrides, initial_job_idx)
            submitted = self._submit(planned)
            self._wait(submitted)
        except KeyboardInterrupt:
            self._interrupted(submitted)
        # Only the jobs that returned go back to Hydra (which re-raises a failed one's
        # exception); the others are in their slurm.json and status.json, and so in the summary.
        return [
            s.result
            for s in submitted
            if s.result is not None and s.result.status == JobStatus.COMPLETED
        ]

    def _interrupted(self, submitted: list[Submitted]) -> None:
        left = [s for s in submitted if not s.done]
        still = queued_states([s.job_id for s in left]) if left else {}
        for s in left:
            s.state = still.get(s.job_id, s.state)
            on_cluster = s.job_id in still
            write_record(
                s,
                note=(
                    f"left {s.state} on the cluster when the sweep was interrupted"
                    if on_cluster
                    else "the sweep was interrupted before this job's result was collected"
                ),
            )
        print("\n" + interrupt_message(still), file=sys.stderr, flush=True)
        raise SystemExit(SUBMITTER_INTERRUPTED)
