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
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from avatar import __version__
from avatar.compose import (
    PRIMARY_CONFIG,
    TRUSTED_TARGETS,
    AutoProfile,
    check_profile_overrides,
    check_user_config,
    explicit_profile,
    gpu_index_override,
    hydra_main_options,
    install,
    user_config_path,
    validate_where_set,
)
from avatar.errors import AvatarUserError, ConfigFileError, ConfigValueError
from avatar.nvml import Nvml, NvmlError
from avatar.profiles import builtin_conf_dir
from avatar.schema import AvatarConfig
from avatar.status import build_status, profile_reason, render_status
from avatar.sweep import check_launcher, finish_sweep, job_conf_dirs, write_job_status

log = logging.getLogger("avatar")

# Hydra's flags that take a value (argparse consumes the next argument), so
# pre-parsing can tell a flag's value from an override.
_VALUE_FLAGS = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp"}
_VALUE_FLAGS |= {"--cfg", "-c", "--package", "-p", "--experimental-rerun"}
# --info takes an optional value: the next argument unless it is a flag.
_OPTIONAL_VALUE_FLAGS = {"--info", "-i"}


@dataclass
class PreParse:
    """What main() needs from argv before Hydra runs; argv itself is not rewritten."""

    config_dir: str | None = None
    config_path: str | None = None
    config_name: str | None = None
    config_name_at: int | None = None  # the argv index of the argument holding the name
    config_name_prefix: str = ""  # "--config-name=" when the name was given inline
    overrides: list[str] = field(default_factory=list)


def preparse(argv: list[str]) -> PreParse:
    pre = PreParse()
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        if arg.startswith("-") and flag in _VALUE_FLAGS | _OPTIONAL_VALUE_FLAGS:
            value: str | None
            at, prefix = i, f"{flag}="
            if eq:
                value = inline
            elif i + 1 < len(argv) and not (
                flag in _OPTIONAL_VALUE_FLAGS and argv[i + 1].startswith("-")
            ):
                i += 1
                value, at, prefix = argv[i], i, ""
            else:
                value = None
            if flag in ("--config-dir", "-cd"):
                pre.config_dir = value
            elif flag in ("--config-path", "-cp"):
                pre.config_path = value
            elif flag in ("--config-name", "-cn"):
                pre.config_name, pre.config_name_at, pre.config_name_prefix = value, at, prefix
        elif not arg.startswith("-"):
            pre.overrides.append(arg)
        i += 1
    return pre


class _Session:
    """What main() prepared, for the task function in the same process."""

    auto: AutoProfile | None = None


def _conf_dirs(pre: PreParse) -> list[Path]:
    dirs = [builtin_conf_dir()]
    if pre.config_dir:
        dirs.append(Path(pre.config_dir).resolve())
    return dirs


def check_override_syntax(overrides: list[str]) -> None:
    """Parse the overrides as Hydra will, so a malformed one gets a message in avatar's words.

    Hydra's parser reports e.g. "missing EQUAL at '<EOF>'" for `steps`.
    """
    if not overrides:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    avatar_keys = {f.name for f in fields(AvatarConfig)}
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException as exc:
            key = text.lstrip("+~").partition("=")[0] or "KEY"
            if "=" not in text and not text.startswith("~"):
                problem = f"it has no value ({key}=VALUE)"
            else:
                detail = str(exc).splitlines()
                said = next((d for d in detail if not d.startswith(("Error parsing", "See "))), "")
                problem = f"it is not valid override syntax ({said.strip()})"
            raise ConfigValueError(
                f"Cannot read the command-line override {text!r}: {problem}. An override is "
                "KEY=VALUE, for example steps=30 or profile=low_vram; quote a value with spaces "
                "or brackets ('key=\"a b\"'), and sweep with -m KEY=A,B."
            ) from exc
        root = override.key_or_group.split(".")[0].split("/")[0]
        if override.is_delete() and root in avatar_keys:
            raise ConfigValueError(
                f"The override {text!r} deletes {override.key_or_group!r}, which avatar needs. "
                f"Set a value instead ({override.key_or_group}=VALUE), or leave it out to keep "
                "the default."
            )


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


def _prepare(argv: list[str]) -> None:
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
    install(auto, explicit_profile=explicit_profile(pre.overrides))
    _Session.auto = auto


def _fail(exc: AvatarUserError) -> None:
    print(f"Error: {exc}", file=sys.stderr)
    sys.exit(1)


@hydra.main(
    config_path=str(builtin_conf_dir()),
    config_name=PRIMARY_CONFIG,
    **hydra_main_options(*TRUSTED_TARGETS),
)
def _app(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        conf_dirs = job_conf_dirs(hydra_cfg)
        validate_where_set(
            cfg,
            overrides=list(hydra_cfg.overrides.task),
            config_name=hydra_cfg.job.config_name,
            conf_dirs=conf_dirs,
        )
        # A sweep job detects its own hardware: it may run in another process or on a
        # cluster node, where the submitting host's detection says nothing.
        auto = (None if multirun else _Session.auto) or AutoProfile(
            conf_dirs, gpu_index=cfg.gpu_index
        )
        reason = profile_reason(
            cfg,
            hydra_cfg.runtime.choices.get("profile", ""),
            list(hydra_cfg.overrides.task),
            hydra_cfg.job.config_name,
        )
        report = build_status(cfg, detection=auto.detection, reason=reason, version=__version__)
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
        write_job_status(hydra_cfg, cfg, report=report, auto=auto)
    print(render_status(report))
    if cfg.verbose:
        print("\nResolved config\n" + OmegaConf.to_yaml(cfg, resolve=True))


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
            _prepare(argv)
        except AvatarUserError as exc:
            _fail(exc)
        try:
            _app()
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
