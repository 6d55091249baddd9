"""The command line: `python -m avatar` and the `avatar` console script.

`main()` does what must happen before Hydra composes (check a user's config
file, register the resolvers, store the auto profile), then hands over to the
`@hydra.main` app, which validates the composed config and prints the status.
User errors end as one paragraph on stderr and exit status 1, no traceback (unless
HYDRA_FULL_ERROR=1); an unexpected exception is an internal error, exit status 2;
Ctrl-C ends with exit status 130, no traceback, and a sweep's summary so far.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TextIO

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from avatar.cli.argv import PreParse, preparse
from avatar.cli.paragraph import exception_paragraph
from avatar.cli.report import Summary
from avatar.cli.status_view import build_status, profile_reason, render_status
from avatar.cli.sweep import (
    check_launcher,
    finish_sweep,
    job_conf_dirs,
    task_overrides,
    write_job_status,
)
from avatar.config.compat import hydra_main_options
from avatar.config.compose import TRUSTED_TARGETS, register_config
from avatar.config.files import PRIMARY_CONFIG, builtin_conf_dir
from avatar.config.origin import validate_where_set
from avatar.config.overrides import check_override_syntax, explicit_profile, gpu_index_override
from avatar.config.profiles import AutoProfile, announce_shadowed, check_profile_overrides
from avatar.config.user_dir import failures_explained
from avatar.config.user_file import check_user_config, check_user_dir, user_config_path
from avatar.errors import AvatarUserError, ConfigFileError, ProfileError
from avatar.hardware.nvml import Nvml, NvmlError
from avatar.version import __version__

log = logging.getLogger("avatar")
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
EXIT_INTERRUPTED = 130  # 128 + SIGINT
_HELP_FLAGS = ("--help", "-h", "--hydra-help")


def _conf_dirs(pre: PreParse) -> list[Path]:
    """The config dirs, the user's first: its files shadow avatar's of the same name."""
    user = [Path(pre.config_dir).resolve()] if pre.config_dir else []
    return [*user, builtin_conf_dir()]


def _check_config_dirs(pre: PreParse) -> None:
    if pre.config_path is not None:
        raise ConfigFileError(
            f"--config-path {pre.config_path} would replace avatar's own config folder, and "
            "with it the profiles and defaults your config builds on. Use --config-dir DIR "
            "--config-name NAME to add your folder instead."
        )
    if pre.config_dir is not None:
        check_user_dir(Path(pre.config_dir).resolve())


def _user_dir_first(pre: PreParse) -> Path:
    """The folder `@hydra.main` gets as its own: the user's, so it comes first in the search
    path and a user's `profile/NAME.yaml` shadows avatar's. avatar's folder takes the
    user's place as `--config-dir`, in the same argument (argv keeps its shape)."""
    if pre.config_dir is None or pre.config_dir_at is None:
        return builtin_conf_dir()
    sys.argv[1 + pre.config_dir_at] = pre.config_dir_prefix + str(builtin_conf_dir())
    return Path(pre.config_dir).resolve()


def prepare(argv: list[str]) -> tuple[AutoProfile, Path]:
    """Everything before Hydra composes: check the command line and a user's config file,
    register the resolvers and store the auto profile. Returns the auto choice (its
    detection is reused by a single run's status) and the app's own config folder."""
    pre = preparse(argv)
    check_override_syntax(pre.overrides)
    check_launcher(pre.overrides)
    _check_config_dirs(pre)
    if pre.config_name and pre.config_name.removesuffix(".yaml") != PRIMARY_CONFIG:
        base = Path(pre.config_dir).resolve() if pre.config_dir else builtin_conf_dir()
        user = check_user_config(user_config_path(base, pre.config_name))
        if user is None and pre.config_name_at is not None:
            # An empty file gets the defaults: swap the name in place (argv keeps its shape).
            sys.argv[1 + pre.config_name_at] = pre.config_name_prefix + PRIMARY_CONFIG
    conf_dirs = _conf_dirs(pre)
    announce_shadowed(conf_dirs)
    check_profile_overrides(pre.overrides, conf_dirs)
    auto = AutoProfile(conf_dirs, gpu_index=gpu_index_override(pre.overrides))
    try:
        register_config(auto, explicit_profile=explicit_profile(pre.overrides))
    except ProfileError as exc:
        if not any(arg in _HELP_FLAGS for arg in argv):
            raise
        # --help must work whatever the environment says: the problem becomes a warning.
        log.warning("%s (--help goes on without it)", exc)
        auto = AutoProfile(conf_dirs, gpu_index=auto.gpu_index, env={})
        register_config(auto, explicit_profile=explicit_profile(pre.overrides))
    return auto, _user_dir_first(pre)


def fail_user_error(exc: AvatarUserError) -> NoReturn:
    """Bad input: its paragraph on stderr, exit status 1 (the traceback too with
    HYDRA_FULL_ERROR=1, as README promises)."""
    if _full_error():
        traceback.print_exception(exc)
    print(f"Error: {exc}", file=sys.stderr)
    sys.exit(1)


def run_status(cfg: DictConfig, hydra_cfg: DictConfig, auto: AutoProfile | None = None) -> None:
    """The status command once Hydra has composed `cfg`: validate, choose, report, print.

    `auto` is the choice `prepare()` made in this process; a sweep job makes its own
    (it may run in another process or on a cluster node, where the submitting host's
    detection says nothing). In a multirun a user error is recorded in the job's
    status.json and the summary instead of ending the sweep.
    """
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        conf_dirs = job_conf_dirs(hydra_cfg)
        overrides = task_overrides(hydra_cfg)
        validate_where_set(
            cfg,
            overrides=overrides,
            config_name=hydra_cfg.job.config_name,
            conf_dirs=conf_dirs,
        )
        job_auto = (None if multirun else auto) or AutoProfile(conf_dirs, gpu_index=cfg.gpu_index)
        reason = profile_reason(
            cfg,
            hydra_cfg.runtime.choices.get("profile", ""),
            overrides,
            hydra_cfg.job.config_name,
        )
        report = build_status(cfg, detection=job_auto.detection, reason=reason)
    except AvatarUserError as exc:
        if multirun:
            # Recorded in status.json and the summary, and main() exits 1 at the end.
            # Not raised: Hydra would then skip the summary and print a traceback.
            write_job_status(hydra_cfg, cfg, error=exc)
            print(f"Error: {exc}", file=sys.stderr)
            return
        fail_user_error(exc)
        return
    if multirun:
        write_job_status(hydra_cfg, cfg, report=report, auto=job_auto)
    print(render_status(report))
    if cfg.verbose:
        print("\nResolved config\n" + OmegaConf.to_yaml(cfg, resolve=True))


def hydra_app(auto: AutoProfile | None, config_dir: Path | None = None) -> Callable[[], None]:
    """The `@hydra.main` app: a thin call into `run_status` with what `prepare()` chose."""

    @hydra.main(
        config_path=str(config_dir or builtin_conf_dir()),
        config_name=PRIMARY_CONFIG,
        **hydra_main_options(*TRUSTED_TARGETS),
    )
    def avatar_status(cfg: DictConfig) -> None:
        hydra_cfg = HydraConfig.get()
        try:
            run_status(cfg, hydra_cfg, auto)
        except Exception as exc:
            if hydra_cfg.mode == RunMode.MULTIRUN:
                raise  # Hydra's sweeper stops the sweep; main() reports it
            _internal_error(exc)  # here, before Hydra adds its own line about the job

    return avatar_status


@contextlib.contextmanager
def _nvml_held() -> Iterator[None]:
    """Hold one NVML initialisation for the whole command.

    Detection and the status's VRAM query each start and stop an NVML session; NVML
    counts those, so inside this one they cost nothing, where a second start after a
    full shutdown costs about 9 ms on an H100. When NVML cannot start, detection says
    why (once); nothing is reported here.
    """
    try:
        held: Nvml | None = Nvml()
    except NvmlError:
        held = None
    try:
        yield
    finally:
        if held is not None:
            held.close()


def main() -> None:
    """Entry point of `python -m avatar` and the `avatar` script.

    Bad input ends as one paragraph and exit status 1; an unexpected exception is a bug
    in avatar, reported as an internal error with exit status 2. Hydra is made to raise
    its errors (instead of printing and exiting) so both are told apart here; with
    HYDRA_FULL_ERROR=1 set by the user, the traceback is shown too.
    """
    argv = sys.argv[1:]
    if "--version" in argv or "-V" in argv:
        print(f"avatar {__version__}")
        return
    run_app(argv, hydra_app)


def run_app(
    argv: list[str],
    make_app: Callable[[AutoProfile, Path | None], Callable[[], None]],
    *,
    after_prepare: Callable[[], None] | None = None,
) -> None:
    """Run one of avatar's Hydra apps (status, speak) with the same error handling.

    `make_app(auto, config_dir)` builds the `@hydra.main` function from what `prepare()`
    chose; `after_prepare` stores what only that app needs (speak's schema). Bad input is
    one paragraph and exit status 1, Ctrl-C exit 130 with the sweep's summary, anything
    unexpected an internal error with exit status 2.
    """
    summary = None
    interrupted = False
    with _nvml_held(), _one_line_warnings():
        try:
            auto, config_dir = prepare(argv)
            if after_prepare is not None:
                after_prepare()
            with hydra_raises(), failures_explained(auto.conf_dirs):
                try:
                    make_app(auto, config_dir)()
                except KeyboardInterrupt:
                    interrupted = True
                finally:
                    # A multirun's summary, even when Hydra stopped or the user pressed Ctrl-C.
                    summary = finish_sweep(interrupted=interrupted)
        except AvatarUserError as exc:
            fail_user_error(exc)
        except (HydraException, OmegaConfBaseException) as exc:
            _fail_hydra(exc)
        except Exception as exc:
            _internal_error(exc)
    if interrupted:
        _interrupted(summary)
    if summary is not None and summary.failed:
        print(f"Error: {summary.failure_message()}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Python warnings raised while a command runs (Hydra's migration notes, a library's
    deprecations) as one line on stderr, like avatar's own warnings, instead of with the
    file, line and source text that raised them: noise to a user, who did not write that
    code. HYDRA_FULL_ERROR=1 keeps Python's own format for developers."""
    if _full_error():
        yield
        return
    shown = warnings.showwarning

    def show_one_line(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        print(" ".join(str(message).split()), file=file or sys.stderr)

    warnings.showwarning = show_one_line
    try:
        yield
    finally:
        warnings.showwarning = shown


def _interrupted(summary: Summary | None) -> NoReturn:
    """Ctrl-C: no traceback; what was done is kept and said; exit status 130 (128 + SIGINT),
    as a shell reports a command stopped by Ctrl-C."""
    kept = (
        ""
        if summary is None
        else f" {summary.done} of {summary.planned or '?'} planned sweep jobs were done; their "
        f"results are kept in {summary.sweep_dir}."
    )
    print(f"Interrupted (Ctrl-C).{kept}", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def _full_error() -> bool:
    """Whether the user asked for tracebacks (README: HYDRA_FULL_ERROR=1)."""
    if _user_full_error is not None:  # inside hydra_raises(), which sets the variable itself
        return _user_full_error
    return os.environ.get(FULL_ERROR_ENV) == "1"


_user_full_error: bool | None = None


@contextlib.contextmanager
def hydra_raises() -> Iterator[None]:
    """Hydra raises its errors instead of printing its own report and exiting 1.

    Hydra does so when HYDRA_FULL_ERROR=1; the user's own setting is kept in mind (for
    the traceback) and restored afterwards.
    """
    global _user_full_error
    saved = os.environ.get(FULL_ERROR_ENV)
    _user_full_error = saved == "1"
    os.environ[FULL_ERROR_ENV] = "1"
    try:
        yield
    finally:
        _user_full_error = None
        if saved is None:
            os.environ.pop(FULL_ERROR_ENV, None)
        else:
            os.environ[FULL_ERROR_ENV] = saved


def _fail_hydra(exc: Exception) -> NoReturn:
    """A composition error Hydra or OmegaConf found (a wrong type, an unknown key or
    option): user input, reported in their words as one paragraph, exit status 1."""
    if _full_error():
        traceback.print_exception(exc)
    print(f"Error: {exception_paragraph(exc)}", file=sys.stderr)
    sys.exit(1)


def _internal_error(exc: Exception) -> NoReturn:
    """An exception avatar did not expect: a bug, not the user's mistake (exit status 2)."""
    if _full_error():
        traceback.print_exception(exc)
    where = "" if _full_error() else f" Set {FULL_ERROR_ENV}=1 to see the traceback."
    print(
        f"Internal error: {type(exc).__name__}: {exc}. This is a bug in avatar {__version__}, "
        f"not a mistake in your input; please report it with the command you ran.{where}",
        file=sys.stderr,
    )
    sys.exit(2)


def run() -> None:
    """The process entry point (`python -m avatar`, the `avatar` script): main(), with
    the garbage collector kept off the objects that live as long as the process.

    Hydra, OmegaConf and avatar import tens of thousands of objects (modules, classes,
    the grammar's tables) that every full collection would walk again: frozen after
    the imports, they cost no collection time (about 50 ms of a status run on a
    2-core machine). Frozen again at the end, the interpreter skips collecting
    everything at exit (about 85 ms), which frees nothing the OS would not. Only for
    whole processes: frozen objects are never collected, so code that calls avatar
    in-process uses main().
    """
    gc.freeze()
    try:
        main()
    except KeyboardInterrupt:
        # Ctrl-C before or after the work (composing, printing): no traceback either.
        print("Interrupted (Ctrl-C).", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `avatar --help | head`: the reader left. Silence the flush at exit, like `ls | head`.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    finally:
        gc.freeze()
