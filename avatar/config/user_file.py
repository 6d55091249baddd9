"""Checks of a user's own primary config file, before Hydra reads it.

Hydra's own messages for these mistakes name no file; these name the file (and the
line, for YAML errors) and say how to fix it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar.config.files import PRIMARY_CONFIG, builtin_conf_dir
from avatar.config.overrides import PROFILE_GROUP
from avatar.config.user_dir import find_defaults_cycle, huge_number_error
from avatar.config.yaml_files import read_yaml_file
from avatar.errors import ConfigFileError

log = logging.getLogger("avatar.config")


@dataclass(frozen=True)
class UserConfig:
    """A user's own primary config file, checked before Hydra reads it."""

    path: Path

    @property
    def config_dir(self) -> Path:
        return self.path.parent

    @property
    def config_name(self) -> str:
        return self.path.stem


def check_user_config(path: Path) -> UserConfig | None:
    """Check a user's config file; None (with a warning) when it is empty.

    Missing, unreadable, invalid YAML, not a mapping, or a defaults list without
    `config` are errors naming the file (and the line, for YAML errors).
    """
    if path.suffix != ".yaml":
        raise ConfigFileError(
            f"Config file {path} must end in .yaml: Hydra reads only .yaml files "
            f"(--config-name NAME reads NAME.yaml). Rename it to {path.stem}.yaml."
        )
    if not path.is_file():
        yml = path.with_suffix(".yml")
        hint = f" There is a {yml.name}: rename it to {path.name}." if yml.is_file() else ""
        raise ConfigFileError(
            f"Config file {path} not found. --config-name NAME reads NAME.yaml from "
            f"--config-dir DIR (from avatar's own config dir without --config-dir).{hint}"
        )
    data = read_yaml_file(path, what="Config file")
    if data is None or data == {}:
        log.warning("Config file %s is empty; using the built-in defaults.", path)
        return None
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"Config file {path} must hold a mapping of keys to values, not a "
            f"{type(data).__name__}."
        )
    huge = huge_number_error(path, data)
    if huge is not None:
        raise huge
    defaults = data.get("defaults") or []
    if not isinstance(defaults, list):
        raise ConfigFileError(
            f"Config file {path}: `defaults` must be a list, not a {type(defaults).__name__}. "
            f"Write `defaults: [{PRIMARY_CONFIG}, _self_]`."
        )
    if not any(_names_primary(entry) for entry in defaults):
        raise ConfigFileError(
            f"Config file {path} does not list `{PRIMARY_CONFIG}` in its defaults list, so it "
            "would replace avatar's config instead of extending it. Start the file with:\n"
            f"defaults:\n  - {PRIMARY_CONFIG}\n  - _self_"
        )
    _check_profile_selection(path, data, defaults)
    # Hydra would recurse until Python gives up on a file that includes itself.
    cycle = find_defaults_cycle([path.stem], [path.parent])
    if cycle is not None:
        raise cycle
    return UserConfig(path)


def check_user_dir(config_dir: Path, flag: str = "--config-dir") -> None:
    """A user's config folder must be a folder, and must not hold a `config.yaml`.

    The user's folder comes first in the search path (so a profile of the user's
    shadows a built-in one of the same name); a `config.yaml` there would then replace
    avatar's primary config, and every default with it, without a word.
    """
    if config_dir.is_file():
        raise ConfigFileError(
            f"{flag} {config_dir} is a file, not a folder. Pass the folder that holds your "
            f"YAML: {flag} {config_dir.parent} --config-name {config_dir.stem}."
        )
    if not config_dir.is_dir():
        raise ConfigFileError(
            f"{flag} {config_dir}: folder not found. Pass the folder that holds your "
            "NAME.yaml (and any profile/ files), relative to the current directory or absolute."
        )
    shadow = config_dir / f"{PRIMARY_CONFIG}.yaml"
    if shadow.is_file() and config_dir.resolve() != builtin_conf_dir().resolve():
        raise ConfigFileError(
            f"Config file {shadow} has the name of avatar's own primary config, which it would "
            f"replace with all its defaults. Rename it (for example to mine.yaml), list "
            f"`{PRIMARY_CONFIG}` first in its defaults, and pass --config-name mine."
        )


def user_config_path(config_dir: Path, config_name: str) -> Path:
    """The file `--config-dir DIR --config-name NAME` names, as Hydra finds it.

    Hydra takes NAME with or without `.yaml`; a `.yml` name is kept as it is so the
    check can say that Hydra does not read it.
    """
    name = config_name if config_name.endswith((".yaml", ".yml")) else f"{config_name}.yaml"
    return config_dir / name


def _check_profile_selection(path: Path, data: dict[str, Any], defaults: list[Any]) -> None:
    """The ways a user file can get choosing a profile wrong, said in avatar's words.

    A profile is chosen in the defaults list with `override profile: NAME` (config
    already chooses one); Hydra's own messages for the other forms name no file.
    """
    how = f"defaults: [{PRIMARY_CONFIG}, {{override {PROFILE_GROUP}: NAME}}, _self_]"
    chosen = data.get(PROFILE_GROUP)
    if isinstance(chosen, str):
        raise ConfigFileError(
            f"Config file {path} sets `{PROFILE_GROUP}: {chosen}` as a value, but a profile is "
            f"chosen in the defaults list: write `{how.replace('NAME', chosen)}`."
        )
    for entry in defaults:
        if isinstance(entry, dict) and PROFILE_GROUP in entry:
            raise ConfigFileError(
                f"Config file {path} lists `{PROFILE_GROUP}: {entry[PROFILE_GROUP]}` in its "
                f"defaults, but `{PRIMARY_CONFIG}` already chooses a profile, so it must be "
                f"overridden: write `{how.replace('NAME', str(entry[PROFILE_GROUP]))}`."
            )
    names = [e if isinstance(e, str) else None for e in defaults]
    if "_self_" in names and names.index("_self_") < next(
        i for i, e in enumerate(defaults) if _names_primary(e)
    ):
        log.warning(
            "Config file %s lists _self_ before %s in its defaults, so avatar's defaults "
            "override the values in the file; put _self_ last.",
            path,
            PRIMARY_CONFIG,
        )


def _names_primary(entry: Any) -> bool:
    return isinstance(entry, str) and entry.lstrip("/") == PRIMARY_CONFIG
