"""Composition: avatar's resolvers, the `auto` profile option, and `load_config()`.

The auto choice is a custom OmegaConf resolver, `${avatar.auto_profile:}`. Its
answer becomes the `profile/auto` option, stored in Hydra's ConfigStore before
composition as `{defaults: [<answer>]}`. That shape works on hydra-core 1.3.8 and
1.4 alike; an interpolation inside the defaults list itself does not (1.4 rejects
it, and 1.3 breaks on nested defaults; see facts.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from avatar.config.compat import (
    compose,
    isolated_hydra,
    register_resolver,
    restore_option,
    store_config,
    stored_option,
)
from avatar.config.files import PRIMARY_CONFIG, builtin_conf_dir
from avatar.config.origin import validate_where_set
from avatar.config.overrides import (
    AUTO,
    PROFILE_GROUP,
    check_override_syntax,
    explicit_profile,
    gpu_index_override,
)
from avatar.config.profiles import AutoProfile, announce_shadowed, check_profile_overrides
from avatar.config.schema import SCHEMA_NAME, STAGE_SCHEMAS, AvatarConfig
from avatar.config.user_dir import failures_explained
from avatar.config.user_file import check_user_config, check_user_dir
from avatar.version import __version__

# The `_target_`s conf/config.yaml has Hydra instantiate (hydra.callbacks): hydra-core 1.4
# instantiates only targets named as trusted without a warning.
TRUSTED_TARGETS = (
    "avatar.cli.sweep.SweepSummary",
    "hydra_plugins.avatar_sweeper.sweeper.AvatarSweeper",
)


def _multirun_only(mode: Any, value: str) -> str | None:
    """`value` in a multirun, None in a single run: keeps .hydra/ for sweep jobs only."""
    return value if str(mode).endswith("MULTIRUN") else None


def _process_id() -> str:
    """This process's id, 7 digits wide (Linux's largest pid_max has 7): sweep dirs of
    one second sort and line up alike whatever the id."""
    return f"{os.getpid():07d}"


def by_quality(quality: Any, table: Any) -> Any:
    """`${avatar.by_quality:${quality},${.tile_by_quality}}`: the table's value for the quality.

    Lets a stage size follow the profile (low_vram is "reduced": small tiles) while the
    sizes stay in the stage's YAML. A resolver, since OmegaConf cannot use an enum
    value as a key inside an interpolation.
    """
    return table[getattr(quality, "name", quality)]


def _store_schemas() -> None:
    """Store the structured schemas in Hydra's ConfigStore, once per process.

    Turning the dataclasses into configs is a fifth of a `load_config()` (measured), and
    they never change; they are stored again only when the store was reset (tests do).
    """
    for name, schema in ((SCHEMA_NAME, AvatarConfig), *STAGE_SCHEMAS.items()):
        if stored_option(None, name) is None:
            store_config(name=name, node=schema)


def register_config(auto: AutoProfile, *, explicit_profile: str | None = None) -> None:
    """Register the resolvers and store the schema and the `profile/auto` option.

    With an explicit `profile=X` no detection is needed and none runs: `auto` then
    points at X, since a multirun still composes its base config with `auto`.
    """
    register_resolver("auto_profile", lambda: auto.choice.name)
    register_resolver("auto_reason", lambda: auto.choice.reason)
    register_resolver("profile_table", auto.table)
    register_resolver("version", lambda: __version__)
    register_resolver("multirun_only", _multirun_only)
    register_resolver("by_quality", by_quality)
    # The default sweep dir's suffix: unique among sweeps running at once; cached, so a
    # launcher's worker processes see the id of the process that started the sweep.
    register_resolver("pid", _process_id, use_cache=True)
    _store_schemas()
    auto.forced()  # a bad AVATAR_PROFILE is an error wherever the profile is chosen
    if explicit_profile is None:
        auto.choice  # noqa: B018 - raise a bad AVATAR_PROFILE as itself, not wrapped by OmegaConf
        answer = OmegaConf.create(
            {"name": "${avatar.auto_profile:}", "reason": "${avatar.auto_reason:}"}
        )
        name, reason = str(answer.name), str(answer.reason)
    else:
        name, reason = explicit_profile, "set on the command line"
    store_config(
        group=PROFILE_GROUP,
        name=AUTO,
        node={"defaults": [name, "_self_"], "selected_by": reason},
    )


def load_config(
    overrides: Sequence[str] | None = None, config_file: str | os.PathLike[str] | None = None
) -> DictConfig:
    """Compose avatar's config from Python, exactly as `python -m avatar` does.

    `overrides` are command-line style (`["profile=low_vram", "steps=30"]`);
    `config_file` is a user YAML that lists `config` in its defaults. Works in a
    notebook, a test, a stage's script, and inside a running `@hydra.main` app
    (Hydra's global state is set aside and restored around the composition, and so
    is the app's `profile/auto` option, which the app's next sweep job composes with).
    Raises AvatarUserError subclasses for bad input, as the CLI reports them (the
    same override checks run first), and TypeError for a string in place of a list.
    """
    if isinstance(overrides, (str, bytes)):
        raise TypeError(
            f"load_config() takes a list of overrides, not a string: pass [{overrides!r}] "
            "(one string per KEY=VALUE override), e.g. load_config(['steps=30'])."
        )
    overrides = [str(o) for o in overrides or []]
    check_override_syntax(overrides)
    user = check_user_config(Path(config_file).resolve()) if config_file is not None else None
    if user is not None:
        check_user_dir(user.config_dir, flag="The folder of config_file")
    conf_dirs = ([user.config_dir] if user else []) + [builtin_conf_dir()]  # the user's first
    announce_shadowed(conf_dirs)
    check_profile_overrides(overrides, conf_dirs)
    auto = AutoProfile(conf_dirs, gpu_index=gpu_index_override(overrides))
    app_auto = stored_option(PROFILE_GROUP, AUTO)  # a running app's own auto choice, if any
    register_config(auto, explicit_profile=explicit_profile(overrides))
    config_name = user.config_name if user else PRIMARY_CONFIG
    try:
        with (
            failures_explained(conf_dirs),
            isolated_hydra(builtin_conf_dir(), user.config_dir if user else None),
        ):
            cfg = compose(config_name, overrides)
    finally:
        if app_auto is not None:
            restore_option(PROFILE_GROUP, AUTO, app_auto)
    validate_where_set(cfg, overrides=overrides, config_name=config_name, conf_dirs=conf_dirs)
    return cfg
