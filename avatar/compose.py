"""Composition: avatar's resolvers, the `auto` profile option, and `load_config()`.

The auto choice is a custom OmegaConf resolver, `${avatar.auto_profile:}`. Its
answer becomes the `profile/auto` option, stored in Hydra's ConfigStore before
composition as `{defaults: [<answer>]}`. That shape works on hydra-core 1.3.8 and
1.4 alike; an interpolation inside the defaults list itself does not (1.4 rejects
it, and 1.3 breaks on nested defaults; see facts.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import hydra
import omegaconf
import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from avatar.errors import ConfigFileError, ConfigValueError, ProfileError
from avatar.hardware import GPUDetection, detect_gpu
from avatar.profiles import (
    AUTO,
    PROFILE_GROUP,
    ProfileChoice,
    ProfileSpec,
    builtin_conf_dir,
    group_files,
    load_profiles,
    pick_profile,
    profile_files,
)
from avatar.schema import SCHEMA_NAME, STAGE_SCHEMAS, AvatarConfig, Stage, validate

log = logging.getLogger("avatar.compose")

PROFILE_ENV = "AVATAR_PROFILE"
PRIMARY_CONFIG = "config"
# The `_target_`s conf/config.yaml has Hydra instantiate (hydra.callbacks): hydra-core 1.4
# instantiates only targets named as trusted without a warning.
TRUSTED_TARGETS = ("avatar.sweep.SweepSummary",)


def _major_minor(version: str) -> tuple[int, ...]:
    """(2, 4) for "2.4.1rc1": enough to tell the API generations apart."""
    return tuple(int(part) for part in version.split(".")[:2])


# hydra-core 1.4 and omegaconf 2.4 rename or deprecate APIs avatar uses. Code for both
# branches on these, never on hasattr (in 2.3 `register_resolver` exists with other semantics).
OMEGACONF_2_4 = _major_minor(omegaconf.__version__) >= (2, 4)
HYDRA_1_4 = _major_minor(hydra.__version__) >= (1, 4)


def register_resolver(name: str, fn: Callable[..., Any]) -> None:
    """Register under the `avatar.` namespace on omegaconf 2.3 and 2.4.

    2.4 renames the API: `register_resolver` is the new one there, while in 2.3 it
    is the legacy API with other semantics, so this branches on the version.
    """
    register = (
        OmegaConf.register_resolver  # type: ignore[attr-defined]
        if OMEGACONF_2_4
        else OmegaConf.register_new_resolver
    )
    register(f"avatar.{name}", fn, replace=True)


def store_config(**entry: Any) -> None:
    """`ConfigStore.store`, replacing an earlier entry of the same name on purpose.

    install() runs again for every load_config(); hydra-core 1.4 warns when an entry is
    replaced without `replace=True` (1.5 will refuse), and 1.3 has no such argument.
    """
    if HYDRA_1_4:
        entry["replace"] = True
    ConfigStore.instance().store(**entry)


def hydra_main_options(*trusted_targets: str) -> dict[str, Any]:
    """Keyword arguments for `@hydra.main` that mean the same on hydra-core 1.3 and 1.4.

    1.3 needs `version_base="1.3"` (without it: 1.1's defaults, which chdir into the
    output dir). 1.4 deprecates `version_base` (its defaults are 1.3's) and warns on
    every run unless the `_target_`s the config instantiates (our callbacks) are named
    as trusted.
    """
    if HYDRA_1_4:
        return {"execution_whitelist": list(trusted_targets)}
    return {"version_base": "1.3"}


class AutoProfile:
    """Answers "which profile fits this machine" once per process (detection is cached)."""

    def __init__(
        self,
        conf_dirs: Sequence[Path],
        *,
        gpu_index: int | None = None,
        env: Mapping[str, str] | None = None,
        detector: Callable[[int | None], GPUDetection] = detect_gpu,
    ) -> None:
        self.conf_dirs = list(conf_dirs)
        self.gpu_index = gpu_index
        self._env = os.environ if env is None else env
        self._detector = detector

    @cached_property
    def detection(self) -> GPUDetection:
        return self._detector(self.gpu_index)

    @cached_property
    def profiles(self) -> list[ProfileSpec]:
        return load_profiles(self.conf_dirs)

    @cached_property
    def choice(self) -> ProfileChoice:
        forced = self._env.get(PROFILE_ENV, "").strip()
        if forced and forced != AUTO:
            names = sorted(n for n in profile_files(self.conf_dirs) if n != AUTO)
            if forced not in names:
                raise ProfileError(
                    f"{PROFILE_ENV}={forced!r} is not a profile. Allowed: {', '.join(names)} "
                    f"(files in the profile/ folder of {_dir_list(self.conf_dirs)}), or 'auto'. "
                    f"Unset {PROFILE_ENV} to pick the profile from the detected VRAM."
                )
            return ProfileChoice(forced, f"set by {PROFILE_ENV}={forced}")
        return pick_profile(self.profiles, self.detection)

    def table(self) -> str:
        """The profiles and their thresholds, one line each, for `--help`."""
        rows = sorted(self.profiles, key=lambda p: (p.vram_min_mib is None, -(p.vram_min_mib or 0)))
        lines = []
        for p in rows:
            need = "no GPU" if p.vram_min_mib is None else f">= {p.vram_min_mib} MiB"
            lines.append(f"  {p.name:<10} {need:<14} {p.description}")
        return "\n".join(lines)


def _dir_list(dirs: Sequence[Path]) -> str:
    return " and ".join(str(d) for d in dirs)


def _multirun_only(mode: Any, value: str) -> str | None:
    """`value` in a multirun, None in a single run: keeps .hydra/ for sweep jobs only."""
    return value if str(mode).endswith("MULTIRUN") else None


def by_quality(quality: Any, table: Any) -> Any:
    """`${avatar.by_quality:${quality},${.tile_by_quality}}`: the table's value for the quality.

    Lets a stage size follow the profile (low_vram is "reduced": small tiles) while the
    sizes stay in the stage's YAML. A resolver, since OmegaConf cannot use an enum
    value as a key inside an interpolation.
    """
    return table[getattr(quality, "name", quality)]


def install(auto: AutoProfile, *, explicit_profile: str | None = None) -> None:
    """Register the resolvers and store the schema and the `profile/auto` option.

    With an explicit `profile=X` no detection is needed and none runs: `auto` then
    points at X, since a multirun still composes its base config with `auto`.
    """
    from avatar import __version__

    register_resolver("auto_profile", lambda: auto.choice.name)
    register_resolver("auto_reason", lambda: auto.choice.reason)
    register_resolver("profile_table", auto.table)
    register_resolver("version", lambda: __version__)
    register_resolver("multirun_only", _multirun_only)
    register_resolver("by_quality", by_quality)
    store_config(name=SCHEMA_NAME, node=AvatarConfig)
    for schema_name, schema in STAGE_SCHEMAS.items():
        store_config(name=schema_name, node=schema)
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
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigFileError(
            f"Config file {path} is not valid YAML{where}: {exc.problem or exc}. "
            "Fix the file; nothing was run."
        ) from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"Config file {path} could not be read: {exc}") from exc
    if data is None or data == {}:
        log.warning("Config file %s is empty; using the built-in defaults.", path)
        return None
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"Config file {path} must hold a mapping of keys to values, not a "
            f"{type(data).__name__}."
        )
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
    return UserConfig(path)


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


def override_values(overrides: Sequence[str], key: str) -> list[str] | None:
    """The values of the first `key=...` override (`+key=` too), split at a sweep's commas;
    None when no override sets `key`. What avatar must know before Hydra parses them."""
    for override in overrides:
        name, sep, value = override.lstrip("+").partition("=")
        if sep and name == key:
            return [v.strip() for v in value.split(",")]
    return None


def explicit_profile(overrides: Sequence[str]) -> str | None:
    """The profile the overrides choose themselves (the first of a sweep), else None.

    When they choose one, no detection is needed for composition.
    """
    options = override_values(overrides, PROFILE_GROUP)
    return None if options is None or AUTO in options or not options[0] else options[0]


def check_profile_overrides(overrides: Sequence[str], conf_dirs: Sequence[Path]) -> None:
    """`profile=X` (or a sweep `profile=a,b`) must name profile files that exist.

    Checked before composition so the message matches AVATAR_PROFILE's; sweep
    functions such as `glob(*)` are left to Hydra.
    """
    names: list[str] | None = None
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        if not sep or key != PROFILE_GROUP or any(c in value for c in "()[]{}$*'\""):
            continue
        if names is None:
            names = sorted({*profile_files(conf_dirs), AUTO})
        for option in (v.strip() for v in value.split(",")):
            if option not in names:
                raise ProfileError(
                    f"profile={option!r} is not a profile. Allowed: {', '.join(names)} (files "
                    f"in the profile/ folder of {_dir_list(conf_dirs)}; auto picks one from the "
                    "detected VRAM)."
                )


def gpu_index_override(overrides: Sequence[str]) -> int | None:
    """`gpu_index=N` from the overrides, needed before composition for the auto choice."""
    values = override_values(overrides, "gpu_index")
    return int(values[0]) if values and len(values) == 1 and values[0].isdigit() else None


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
    if primary_file is not None and _sets(primary_file, key):
        return primary_file
    group, _, rest = key.partition(".")
    if group not in _NAMED_GROUPS or not rest:
        return None
    option = OmegaConf.select(cfg, f"{group}.name", default=None)
    path = group_files(group, conf_dirs).get(str(option)) if option else None
    return path if path is not None and _sets(path, rest) else None


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


def _sets(path: Path, dotted_key: str) -> bool:
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


def load_config(
    overrides: Sequence[str] | None = None, config_file: str | os.PathLike[str] | None = None
) -> DictConfig:
    """Compose avatar's config from Python, exactly as `python -m avatar` does.

    `overrides` are command-line style (`["profile=low_vram", "steps=30"]`);
    `config_file` is a user YAML that lists `config` in its defaults. Works in a
    notebook, a test, a stage's script, and inside a running `@hydra.main` app
    (Hydra's global state is set aside and restored around the composition, and so
    is the app's `profile/auto` option, which the app's next sweep job composes with).
    Raises AvatarUserError subclasses for bad input, hydra's errors for bad overrides.
    """
    from hydra import compose
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    overrides = list(overrides or [])
    user = check_user_config(Path(config_file).resolve()) if config_file is not None else None
    conf_dirs = [builtin_conf_dir()] + ([user.config_dir] if user else [])
    auto = AutoProfile(conf_dirs, gpu_index=gpu_index_override(overrides))
    group = ConfigStore.instance().repo.get(PROFILE_GROUP, {})
    app_auto = group.get(f"{AUTO}.yaml")  # a running app's own auto choice, if any
    install(auto, explicit_profile=explicit_profile(overrides))

    # The search path the CLI builds for `--config-dir DIR`: avatar's configs first, the
    # user's dir after them (Hydra's own order), then structured configs.
    search_path = create_config_search_path(f"file://{builtin_conf_dir()}")
    if user is not None:
        search_path.prepend(
            provider="command-line",
            path=f"file://{user.config_dir}",
            anchor=SearchPathQuery(provider="schema"),
        )
    global_hydra = GlobalHydra.instance()
    saved = global_hydra.hydra  # set aside inside a running app, restored below
    global_hydra.clear()
    try:
        Hydra.create_main_hydra2(task_name="avatar", config_search_path=search_path)
        cfg = compose(config_name=user.config_name if user else PRIMARY_CONFIG, overrides=overrides)
    finally:
        global_hydra.clear()
        global_hydra.hydra = saved
        if app_auto is not None:
            ConfigStore.instance().repo[PROFILE_GROUP][f"{AUTO}.yaml"] = app_auto
    validate_where_set(
        cfg,
        overrides=overrides,
        config_name=user.config_name if user else PRIMARY_CONFIG,
        conf_dirs=conf_dirs,
    )
    return cfg
