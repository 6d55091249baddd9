"""Sweeps through Hydra's launchers: what each job writes, and the summary at the end.

Every multirun job writes `status.json` into its job dir, beside Hydra's
`.hydra/`, whichever launcher ran it (basic, joblib, submitit_local, slurm). A
job that fails on a user error still writes one, with `ok: false` and its error,
so the other jobs' results and this job's failure are both on disk. At the end
the `SweepSummary` callback (`hydra.callbacks` in conf/config.yaml) prints the
table of all jobs and saves it in the sweep dir. Hydra 1.3 skips
`on_multirun_end` when a job raised or a cluster job was lost; `cli.main` then
calls `finish_sweep()`, which writes the summary anyway, and exits 1 when any
job failed.

Cluster correctness: the `auto` profile is chosen where the sweep is composed
(launchers pickle the ConfigStore to their workers). Each job detects its own
hardware and, when that would pick another profile, says so in its status and
in the summary.

The documents themselves (status.json's shape, the table) are in `cli.report`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from avatar.cli.paragraph import exception_paragraph
from avatar.cli.report import (
    STATUS_FILE,
    Summary,
    collect_jobs,
    hidden_gpu_note,
    status_document,
    write_status_file,
    write_summary,
)
from avatar.cli.status_view import StatusReport
from avatar.config.files import builtin_conf_dir
from avatar.config.overrides import AUTO, PROFILE_GROUP, group_options, override_values
from avatar.config.profiles import PROFILE_ENV, AutoProfile, ProfileChoice
from avatar.config.user_dir import failures_explained
from avatar.errors import AvatarUserError

log = logging.getLogger("avatar.sweep")

# Hydra's copy of the sweep's config, in the sweep dir.
MULTIRUN_FILE = "multirun.yaml"


# Launchers that come from a plugin, and the plugin each needs (all in the `sweep` extra).
# The hint names the packages themselves: `avatar` on the public index is another project.
PLUGIN_MIN_VERSION = "1.2"  # as pyproject's sweep extra
LAUNCHER_PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


# Launchers whose jobs run on other machines than the one that composes the sweep.
CLUSTER_LAUNCHERS = {"slurm", "submitit_slurm"}


def check_launcher(overrides: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Check the launcher before Hydra starts.

    A launcher whose plugin is missing raises AvatarUserError naming the package
    and the install command (Hydra itself only says "Could not load"). A cluster
    launcher with the auto profile gets a warning now, before any job is queued:
    `auto` would be decided here, on the submitting host.
    """
    environ = os.environ if env is None else env
    for value in override_values(overrides, "hydra/launcher") or []:
        if value not in LAUNCHER_PLUGINS:
            continue
        if value in CLUSTER_LAUNCHERS and not _profile_given(overrides, environ):
            log.warning(
                "hydra/launcher=%s with the auto profile: the profile is picked here, on the "
                "machine that submits the sweep, not on the cluster's nodes. Pass profile=NAME "
                "(or profile=a,b to sweep) so every job uses the profile meant for its GPU.",
                value,
            )
        module, package = LAUNCHER_PLUGINS[value]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise AvatarUserError(
                f"hydra/launcher={value} needs the {package} plugin, which is not installed. "
                f"Install it (pip install '{package}>={PLUGIN_MIN_VERSION}'; from a checkout "
                "of avatar: pip install '.[sweep]', avatar's sweep extra), or leave "
                "hydra/launcher out to run the sweep's jobs one after another with Hydra's "
                "basic launcher."
            )


def _profile_given(overrides: Sequence[str], env: Mapping[str, str]) -> bool:
    """Whether the profile is named (command line or AVATAR_PROFILE), not left to `auto`."""
    options = group_options(overrides, PROFILE_GROUP)
    if options is not None:
        return AUTO not in options
    return env.get(PROFILE_ENV, "").strip() not in ("", AUTO)


# ---------------------------------------------------------------- per job


def job_conf_dirs(hydra_cfg: DictConfig) -> list[Path]:
    """The config dirs the job was composed from (avatar's, then a user's --config-dir).

    Read from Hydra's runtime info, since a worker process never ran cli.main.
    """
    dirs = [
        Path(str(source.path))
        for source in hydra_cfg.runtime.config_sources
        if source.schema == "file" and source.path
    ]
    return dirs or [builtin_conf_dir()]


def task_overrides(hydra_cfg: DictConfig) -> list[str]:
    """The job's command-line overrides as typed, unresolved.

    Reading `hydra_cfg.overrides.task` item by item would resolve an override such as
    `steps=${nosuch}` as an interpolation of the Hydra config, and fail there.
    """
    return [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]


def _job_info(hydra_cfg: DictConfig) -> dict[str, Any]:
    num = OmegaConf.select(hydra_cfg, "job.num", default=None)
    return {
        "num": None if num is None else int(num),
        "overrides": task_overrides(hydra_cfg),
        "dir": str(Path(str(hydra_cfg.runtime.output_dir)).resolve()),
        "host": _host_name(),
    }


def _host_name() -> str:
    import socket  # only in sweep jobs: keeps the plain status run's imports small

    return socket.gethostname()


def _profile_name(cfg: DictConfig) -> str | None:
    try:
        name = OmegaConf.select(cfg, "profile.name", default=None)
    except Exception:  # a config too broken to read is reported by its own error
        return None
    return None if name is None else str(name)


def write_job_status(
    hydra_cfg: DictConfig,
    cfg: DictConfig,
    *,
    report: StatusReport | None = None,
    error: BaseException | str | None = None,
    auto: AutoProfile | None = None,
    notes: Sequence[str] = (),
    sections: Mapping[str, Any] | None = None,
) -> Path:
    """Write this multirun job's status.json into its job dir (called by the task).

    `notes` are sentences for the summary's note column (what the job made, say).
    `sections`: a command's own top-level sections (speak's "speech"), added as given.

    `auto` is this job's own AutoProfile (its own hardware); with it the status
    says which profile this job's hardware would pick, and whether that differs
    from an auto choice made where the sweep was composed.
    """
    auto_picked = str(hydra_cfg.runtime.choices.get("profile", "")) == AUTO
    own_choice: ProfileChoice | None = None
    own_error: str | None = None
    if report is not None and auto is not None:
        try:
            own_choice = auto.choice
        except AvatarUserError as exc:
            own_error = f"this job could not pick a profile itself: {exc}"
    results = list(notes)  # the caller's: shown in the summary, not warned about
    notes = list(results)
    if report is not None:
        accelerator = OmegaConf.select(cfg, "profile.accelerator", default=None)
        hidden = hidden_gpu_note(report, accelerator, os.environ)
        notes = ([hidden] if hidden else []) + notes
    doc = status_document(
        job=_job_info(hydra_cfg),
        report=report,
        error=None if error is None else str(error),
        profile_name=_profile_name(cfg),
        auto_picked=auto_picked,
        own_choice=own_choice,
        own_choice_error=own_error,
        notes=notes,
    )
    doc.update(sections or {})
    for note in doc["notes"]:
        if note not in results:
            log.warning("%s", note)
    return write_status_file(Path(str(hydra_cfg.runtime.output_dir)), doc)


# ---------------------------------------------------------------- per sweep


def _sweep_dir_message(sweep_dir: Path, problem: str) -> str:
    return (
        f"Cannot start the sweep in {sweep_dir}: {problem}. Nothing was written. Choose "
        "another folder with hydra.sweep.dir=DIR (for example hydra.sweep.dir=/tmp/mysweep), "
        "or leave it out to get a new dir under multirun/."
    )


def claim_sweep_dir(sweep_dir: Path) -> None:
    """Create the sweep dir, refusing one that already holds a sweep (its multirun.yaml or
    its jobs): a new sweep's jobs would overwrite and be mixed up with the old ones.

    The claim is multirun.yaml, created exclusively: of two sweeps started at once with
    the same hydra.sweep.dir, one gets the dir and the other is refused.
    """
    if sweep_dir.is_file():
        raise AvatarUserError(_sweep_dir_message(sweep_dir, "it is a file, not a folder"))
    held = _sweep_dir_message(
        sweep_dir, "it already holds another sweep's jobs, which this sweep would overwrite"
    )
    if sweep_dir.is_dir() and collect_jobs(sweep_dir):
        raise AvatarUserError(held)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / MULTIRUN_FILE).open("x").close()
    except FileExistsError as exc:
        raise AvatarUserError(held) from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AvatarUserError(
            _sweep_dir_message(sweep_dir, f"the folder cannot be written ({reason})")
        ) from exc


def run_sweep(sweeper: Any, arguments: list[str]) -> list[Sequence[JobReturn]]:
    """avatar's sweep (hydra_plugins.avatar_sweeper): Hydra's basic sweep, where a point
    that does not compose fails alone.

    Hydra's basic sweeper composes every point of a batch before launching it and stops
    the whole sweep at the first that fails (`lipsync=nope`). Here such a point becomes
    a failed job (its status.json holds the error, the summary lists it) and the points
    around it are launched, with the job numbers they would have had, by any launcher.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config, launcher, context = sweeper.config, sweeper.launcher, sweeper.hydra_context
    parser = OverridesParser.create(config_loader=context.config_loader)
    parsed = parser.parse_overrides([*sweeper._parse_config(), *arguments])
    batches = sweeper.split_arguments(parsed, sweeper.max_batch_size)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    try:
        claim_sweep_dir(sweep_dir)
    except AvatarUserError:
        _progress.sweep_dir = None  # nothing of this sweep to summarise (and not the old one)
        raise
    _progress.planned = sum(len(batch) for batch in batches)
    OmegaConf.save(config, sweep_dir / MULTIRUN_FILE)
    returns: list[Sequence[JobReturn]] = []
    num = 0
    for batch in batches:
        segment: list[list[str]] = []
        start = num
        for job in batch:
            error = _composition_error(context, config, job)
            if error is None:
                segment.append(list(job))
            else:
                if segment:
                    returns.append(_launch(launcher, segment, start, sweep_dir))
                _write_uncomposed_job(sweep_dir, num, job, error)
                segment, start = [], num + 1
            num += 1
        if segment:
            returns.append(_launch(launcher, segment, start, sweep_dir))
    return returns


# Where the processes of the local launchers write their stderr (see _launch).
LOCAL_CONTROLLERS_LOG = ".submitit/controllers.log"
JOBLIB_WORKERS_LOG = "joblib-workers.log"  # a file, not a folder: never read as a job dir


def _launch(
    launcher: Any, jobs: list[list[str]], start: int, sweep_dir: Path
) -> Sequence[JobReturn]:
    """`launcher.launch`, with the processes a local launcher starts kept off the terminal.

    submitit_local starts one controller process per job, joblib a pool of worker
    processes; both inherit this process's stderr and process group, so Ctrl-C reaches
    them too, and each prints a KeyboardInterrupt traceback (a controller always, an idle
    joblib worker when the signal finds it between jobs). Their stderr goes to a log in
    the sweep dir instead; what a job found is in its status.json as before.
    """
    log_path = _launcher_log(launcher, sweep_dir)
    if log_path is None:
        return launcher.launch(jobs, initial_job_idx=start)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with _inherited_stderr(log_path):
        return launcher.launch(jobs, initial_job_idx=start)


def _launcher_log(launcher: Any, sweep_dir: Path) -> Path | None:
    """Where the processes this launcher starts write their stderr; None: it starts none
    here (basic runs jobs in this process, SLURM on the cluster's nodes)."""
    kind = type(launcher)
    if getattr(kind, "_EXECUTOR", None) == "local":  # hydra-submitit-launcher's LocalLauncher
        return sweep_dir / LOCAL_CONTROLLERS_LOG
    if kind.__module__.startswith("hydra_plugins.hydra_joblib_launcher"):
        return sweep_dir / JOBLIB_WORKERS_LOG
    return None


@contextlib.contextmanager
def _inherited_stderr(path: Path) -> Iterator[None]:
    """Processes started inside inherit `path` as their stderr (fd 2); this process's
    own writes to sys.stderr still reach where they went before. Where that cannot be
    arranged (no fd 2, the log cannot be opened) the processes keep this one's stderr:
    noise on the terminal is better than a sweep that does not start."""
    own = sys.stderr
    own.flush()
    terminal_fd: int | None = None
    try:
        terminal_fd = os.dup(2)
        with path.open("ab") as log:
            os.dup2(log.fileno(), 2)
    except OSError:
        if terminal_fd is not None:
            os.close(terminal_fd)
        yield
        return
    try:
        with open(
            terminal_fd, "w", closefd=False, encoding="utf-8", errors="backslashreplace"
        ) as terminal:
            if _writes_to_fd_2(own):
                sys.stderr = terminal
            try:
                yield
            finally:
                sys.stderr = own
    finally:
        os.dup2(terminal_fd, 2)
        os.close(terminal_fd)


def _writes_to_fd_2(stream: Any) -> bool:
    try:
        return bool(stream.fileno() == 2)
    except (AttributeError, OSError, ValueError):  # io.StringIO: a test captures it
        return False


def _composition_error(context: Any, config: DictConfig, job: Sequence[str]) -> str | None:
    """The paragraph saying why this point does not compose, or None when it does."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with failures_explained(job_conf_dirs(config.hydra)):
            context.config_loader.load_sweep_config(config, list(job))
    except AvatarUserError as exc:
        return str(exc)
    except (HydraException, OmegaConfBaseException) as exc:
        return exception_paragraph(exc)
    return None


def _write_uncomposed_job(sweep_dir: Path, num: int, job: Sequence[str], error: str) -> None:
    """A failed job's dir and status.json for a point that never composed (so never ran)."""
    job_dir = sweep_dir / str(num)
    job_dir.mkdir(parents=True, exist_ok=True)
    profile = next((o.split("=", 1)[1] for o in job if o.startswith("profile=")), None)
    info = {"num": num, "overrides": list(job), "dir": str(job_dir.resolve()), "host": _host_name()}
    write_status_file(job_dir, status_document(job=info, error=error, profile_name=profile))
    print(f"Error: job {num} ({' '.join(job)}) did not start: {error}", file=sys.stderr)


@dataclass
class SweepProgress:
    """The multirun this process submitted, for the CLI's exit status and fallback.

    Hydra instantiates the callback itself and hands it to nobody, so the callback
    reports here, in the one instance below, and the CLI reads it after Hydra returns.
    """

    sweep_dir: Path | None = None
    summary: Summary | None = None
    ended: bool = False  # on_multirun_end ran
    planned: int | None = None  # the jobs the sweep holds (avatar's sweeper knows)


_progress = SweepProgress()


def finish_sweep(*, interrupted: bool = False) -> Summary | None:
    """After Hydra returns or stops: the sweep's summary, written now if Hydra skipped it.

    Hydra 1.3 skips `on_multirun_end` when any job raised (every launcher re-raises
    the first failure after the batch ran), when a cluster job was lost, or when the
    user pressed Ctrl-C (`interrupted`: the summary then says so, with the jobs done of
    those planned).
    """
    sweep_dir, summary, ended = _progress.sweep_dir, _progress.summary, _progress.ended
    planned = _progress.planned
    _progress.sweep_dir, _progress.summary, _progress.ended = None, None, False
    _progress.planned = None
    if sweep_dir is None or ended:
        return summary
    try:
        with _sigint_ignored() if interrupted else contextlib.nullcontext():
            return write_summary(
                sweep_dir, stopped_early=True, interrupted=interrupted, planned=planned
            )
    except OSError as exc:
        log.warning("Could not write the sweep summary in %s: %s", sweep_dir, exc)
        return None


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """After the first Ctrl-C, a second one (users press it again when a sweep seems to
    hang) must not cut the summary of what was done in half; writing it takes well
    under a second, then Ctrl-C works again."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class SweepSummary(Callback):
    """Hydra callback: the sweep summary, and status.json for jobs that raised.

    Registered in conf/config.yaml under `hydra.callbacks.sweep_summary`.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _progress.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        _progress.summary, _progress.ended, _progress.planned = None, False, None

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Runs where the job ran: a job that raised gets a status.json with its error."""
        if not str(config.hydra.mode).endswith("MULTIRUN"):
            return  # a plain run writes no file
        if job_return.status != JobStatus.FAILED:
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        if (job_dir / STATUS_FILE).exists():
            return
        try:
            job_return.return_value  # noqa: B018 - re-raises the job's exception
        except Exception as exc:
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        else:
            return
        doc = status_document(
            job=_job_info(config.hydra), error=error, profile_name=_profile_name(config)
        )
        write_status_file(job_dir, doc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = _progress.sweep_dir or Path(str(config.hydra.sweep.dir)).resolve()
        _progress.summary = write_summary(sweep_dir, planned=_progress.planned)
        _progress.sweep_dir, _progress.ended = sweep_dir, True
