"""Which file set a config value: so a range error can name the user's YAML or a profile.

Looked up only when validation fails, so a valid run reads no file here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from avatar.config.files import group_files
from avatar.config.overrides import PROFILE_GROUP, override_values
from avatar.config.schema import Stage, validate
from avatar.config.user_file import user_config_path
from avatar.errors import ConfigValueError

# The config groups whose chosen option names itself in a `name` key (profile files must;
# stage options do by convention), so the file behind a composed value can be found again.
_NAMED_GROUPS = (PROFILE_GROUP, *(stage.value for stage in Stage))


def value_origin(
    cfg: DictConfig,
    key: str,
    *,
    overrides: Sequence[str],
    primary_file: Path | None,
    conf_dirs: Sequence[Path],
) -> Path | None:
    """The file that set `key` in the composed `cfg`, in the cascade's order of precedence.

    None when the command line set it (the user just typed it), when it is a built-in
    default of the schema, or when it comes by interpolation from another key. So an
    error about `steps: 0` in a user's YAML can name that file, and one about
    `profile.steps` the profile file.
    """
    if override_values(overrides, key) is not None:
        return None
    if primary_file is not None and _file_sets_key(primary_file, key):
        return primary_file
    group, _, rest = key.partition(".")
    if group not in _NAMED_GROUPS or not rest:
        return None
    option = OmegaConf.select(cfg, f"{group}.name", default=None)
    path = group_files(group, conf_dirs).get(str(option)) if option else None
    return path if path is not None and _file_sets_key(path, rest) else None


def validate_where_set(
    cfg: DictConfig,
    *,
    overrides: Sequence[str],
    config_name: str,
    conf_dirs: Sequence[Path],
) -> None:
    """`validate(cfg)`, whose error about a key also names the file that set it.

    The files are looked for only when there is an error: a valid run reads none.
    """
    try:
        validate(cfg)
    except ConfigValueError as exc:
        if exc.key is None:
            raise
        origin = value_origin(
            cfg,
            exc.key,
            overrides=overrides,
            primary_file=primary_config_file(config_name, conf_dirs),
            conf_dirs=conf_dirs,
        )
        raise exc.set_in(origin) from exc.__cause__


def primary_config_file(config_name: str, conf_dirs: Sequence[Path]) -> Path | None:
    """The file Hydra read as the primary config: the first dir that has it, as Hydra looks."""
    for conf_dir in conf_dirs:
        path = user_config_path(conf_dir, config_name)
        if path.is_file():
            return path
    return None


def _file_sets_key(path: Path, dotted_key: str) -> bool:
    """Whether the YAML file gives `dotted_key` a value of its own (not an interpolation)."""
    try:
        node: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not (isinstance(node, str) and "${" in node)
