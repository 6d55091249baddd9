"""The command line: `python -m avatar` and the `avatar` console script.

`main()` does what must happen before Hydra composes (check a user's config
file, register the resolvers, store the auto profile), then hands over to the
`@hydra.main` app, which validates the composed config and prints the status.
User errors end as one paragraph on stderr and exit status 1, no traceback.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from avatar.cli.argv import PreParse, preparse
from avatar.cli.status_view import build_status, profile_reason, render_status
from avatar.cli.sweep import check_launcher, finish_sweep, job_conf_dirs, write_job_status
from avatar.config.compat import hydra_main_options
from avatar.config.compose import TRUSTED_TARGETS, register_config
from avatar.config.files import PRIMARY_CONFIG, builtin_conf_dir
from avatar.config.origin import validate_where_set
from avatar.config.overrides import check_override_syntax, explicit_profile, gpu_index_override
from avatar.config.profiles import AutoProfile, check_profile_overrides
from avatar.config.user_file import check_user_config, user_config_path
from avatar.errors import AvatarUserError, ConfigFileError
from avatar.hardware.nvml import Nvml, NvmlError
from avatar.version import __version__

log = logging.getLogger("avatar")


def _conf_dirs(pre: PreParse) -> list[Path]:
    dirs = [builtin_conf_dir()]
    if pre.config_dir:
        dirs.append(Path(pre.config_dir).resolve())
    return dirs


def _check_config_dirs(pre: PreParse) -> None:
    if pre.config_path is not None:
        raise ConfigFileError(
            f"--config-path {pre.config_path} would replace avatar's own config folder, and "
            "with it the profiles and defaults your config builds on. Use --config-dir DIR "
            "--config-name NAME to add your folder instead."
        )
    if pre.config_dir is not None and not Path(pre.config_dir).is_dir():
        raise ConfigFileError(
            f"--config-dir {pre.config_dir}: folder {Path(pre.config_dir).resolve()} not found. "
            "Pass the folder that holds your NAME.yaml (and any profile/ files), relative to "
            "the current directory or absolute."
        )


def prepare(argv: list[str]) -> AutoProfile:
    """Everything before Hydra composes: check the command line and a user's config file,
    register the resolvers and store the auto profile. Returns the auto choice (its
    detection is reused by a single run's status)."""
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
    check_profile_overrides(pre.overrides, conf_dirs)
    auto = AutoProfile(conf_dirs, gpu_index=gpu_index_override(pre.overrides))
    register_config(auto, explicit_profile=explicit_profile(pre.overrides))
    return auto


def _fail(exc: AvatarUserError) -> None:
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
        validate_where_set(
            cfg,
            overrides=list(hydra_cfg.overrides.task),
            config_name=hydra_cfg.job.config_name,
            conf_dirs=conf_dirs,
        )
        job_auto = (None if multirun else auto) or AutoProfile(conf_dirs, gpu_index=cfg.gpu_index)
        reason = profile_reason(
            cfg,
            hydra_cfg.runtime.choices.get("profile", ""),
            list(hydra_cfg.overrides.task),
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
        _fail(exc)
        return
    if multirun:
        write_job_status(hydra_cfg, cfg, report=report, auto=job_auto)
    print(render_status(report))
    if cfg.verbose:
        print("\nResolved config\n" + OmegaConf.to_yaml(cfg, resolve=True))


def hydra_app(auto: AutoProfile | None) -> Callable[[], None]:
    """The `@hydra.main` app: a thin call into `run_status` with what `prepare()` chose."""

    @hydra.main(
        config_path=str(builtin_conf_dir()),
        config_name=PRIMARY_CONFIG,
        **hydra_main_options(*TRUSTED_TARGETS),
    )
    def avatar_status(cfg: DictConfig) -> None:
        run_status(cfg, HydraConfig.get(), auto)

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
    """Entry point of `python -m avatar` and the `avatar` script."""
    argv = sys.argv[1:]
    if "--version" in argv or "-V" in argv:
        print(f"avatar {__version__}")
        return
    with _nvml_held():
        try:
            auto = prepare(argv)
        except AvatarUserError as exc:
            _fail(exc)
        try:
            hydra_app(auto)()
        finally:
            summary = finish_sweep()  # a multirun's summary, even when Hydra stopped early
    if summary is not None and summary.failed:
        print(f"Error: {summary.failure_message()}", file=sys.stderr)
        sys.exit(1)


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
    except BrokenPipeError:
        # `avatar --help | head`: the reader left. Silence the flush at exit, like `ls | head`.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    finally:
        gc.freeze()
