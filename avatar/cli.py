"""The command line: `python -m avatar` and the `avatar` console script.

`main()` does what must happen before Hydra composes (check a user's config
file, register the resolvers, store the auto profile), then hands over to the
`@hydra.main` app, which validates the composed config and prints the status.
User errors end as one paragraph on stderr and exit status 1, no traceback.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from avatar import __version__
from avatar.compose import (
    PRIMARY_CONFIG,
    AutoProfile,
    check_user_config,
    explicit_profile,
    gpu_index_override,
    install,
)
from avatar.errors import AvatarUserError
from avatar.profiles import builtin_conf_dir
from avatar.schema import validate
from avatar.status import build_status, profile_reason, render_status

log = logging.getLogger("avatar")

# Hydra flags that take a value, so pre-parsing can skip over them.
_VALUE_FLAGS = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp"}
_VALUE_FLAGS |= {"--info", "-i", "--cfg", "-c", "--package", "-p", "--experimental-rerun"}


@dataclass
class PreParse:
    """What main() needs from argv before Hydra runs; argv itself is not rewritten."""

    config_dir: str | None = None
    config_name: str | None = None
    config_name_at: int | None = None  # where in argv the config name value sits
    overrides: list[str] = field(default_factory=list)


def preparse(argv: list[str]) -> PreParse:
    pre = PreParse()
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        if arg.startswith("-") and flag in _VALUE_FLAGS:
            if eq:
                value, at = inline, None
            elif i + 1 < len(argv) and flag not in ("--info", "-i", "--cfg", "-c"):
                value, at = argv[i + 1], i + 1
                i += 1
            else:
                value, at = None, None
            if flag in ("--config-dir", "-cd"):
                pre.config_dir = value
            elif flag in ("--config-name", "-cn"):
                pre.config_name, pre.config_name_at = value, at
        elif not arg.startswith("-") and "=" in arg:
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


def _prepare(argv: list[str]) -> None:
    pre = preparse(argv)
    if pre.config_name and pre.config_name != PRIMARY_CONFIG:
        base = Path(pre.config_dir).resolve() if pre.config_dir else builtin_conf_dir()
        user = check_user_config(base / f"{pre.config_name}.yaml")
        if user is None and pre.config_name_at is not None:
            # An empty file gets the defaults: swap the name in place (argv keeps its shape).
            sys.argv[1 + pre.config_name_at] = PRIMARY_CONFIG
    auto = AutoProfile(_conf_dirs(pre), gpu_index=gpu_index_override(pre.overrides))
    install(auto, explicit_profile=explicit_profile(pre.overrides))
    _Session.auto = auto


def _fail(exc: AvatarUserError) -> None:
    print(f"Error: {exc}", file=sys.stderr)
    sys.exit(1)


@hydra.main(version_base="1.3", config_path=str(builtin_conf_dir()), config_name=PRIMARY_CONFIG)
def _app(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        validate(cfg)
        auto = _Session.auto or AutoProfile([builtin_conf_dir()], gpu_index=cfg.gpu_index)
        reason = profile_reason(
            cfg,
            hydra_cfg.runtime.choices.get("profile", ""),
            list(hydra_cfg.overrides.task),
            hydra_cfg.job.config_name,
        )
        report = build_status(cfg, detection=auto.detection, reason=reason, version=__version__)
    except AvatarUserError as exc:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # the launcher records this job as failed; the other jobs go on
        _fail(exc)
        return
    print(render_status(report))
    if cfg.verbose:
        print("\nResolved config\n" + OmegaConf.to_yaml(cfg, resolve=True))


def main() -> None:
    """Entry point of `python -m avatar` and the `avatar` script."""
    argv = sys.argv[1:]
    if "--version" in argv or "-V" in argv:
        print(f"avatar {__version__}")
        return
    try:
        _prepare(argv)
    except AvatarUserError as exc:
        _fail(exc)
    _app()
