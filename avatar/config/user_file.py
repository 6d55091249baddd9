"""Checks of a user's own primary config file, before Hydra reads it.

Hydra's own messages for these mistakes name no file; these name the file (and the
line, for YAML errors) and say how to fix it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from avatar.config.files import PRIMARY_CONFIG, builtin_conf_dir
from avatar.config.overrides import PROFILE_GROUP
from avatar.config.schema import huge_number_message, too_large_number
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (as OmegaConf and
    Hydra do), so that the check before Hydra reports it with the file and line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"the key {key!r} is given twice (first at line {first_line[key] + 1})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line
            except TypeError:
                pass  # an unhashable key: the base class says so
        return super().construct_mapping(node, deep=deep)


@functools.cache
def _fast_loader() -> type | None:
    """`_UniqueKeyLoader` on libyaml's parser (None where PyYAML was built without it).

    PyYAML's pure-Python parser is most of reading a profile file, and status reads every
    profile on each run (32 ms -> 9 ms of CPU for the four built-in ones on 2 cores). The
    constructor and resolver stay PyYAML's and the duplicate-key check this module's, so
    a mapping comes out the same; anything else (an error, an empty file, a list) is read
    again by the pure-Python loader, so every message stays as it was.
    """
    try:
        from yaml.cyaml import CParser
    except ImportError:
        return None

    class FastUniqueKeyLoader(CParser, _UniqueKeyLoader):  # type: ignore[misc]
        def __init__(self, stream: Any) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return FastUniqueKeyLoader


def read_yaml_file(path: Path, *, what: str) -> Any:
    """A user's YAML file as plain data; unreadable, not UTF-8, invalid YAML or a key
    given twice are one-paragraph errors naming `what` and `path` (and the line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigFileError(
            f"{what} {path} is not UTF-8 text: byte {exc.object[exc.start]:#04x} at line "
            f"{line}. Save the file as UTF-8; nothing was run."
        ) from exc
    except OSError as exc:
        raise ConfigFileError(
            f"{what} {path} could not be read: {exc.strerror or exc}. Nothing was run."
        ) from exc
    fast = _fast_loader()
    if fast is not None:
        try:
            data = yaml.load(text, Loader=fast)  # a SafeLoader on libyaml's parser
        except Exception:  # the pure-Python loader below reports it as it always has
            data = None
        if isinstance(data, dict):
            return data
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc).split())
        raise ConfigFileError(
            f"{what} {path} is not valid YAML{where}: {problem}. Fix the file; nothing was run."
        ) from exc
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigFileError(
            f"{what} {path} is not valid YAML: {' '.join(str(exc).split())[:200]}. Fix the "
            "file; nothing was run."
        ) from exc


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
    found = too_large_number(data)
    if found is not None:
        raise ConfigFileError(
            f"Config file {path}: {huge_number_message(*found)} Fix the file; nothing was run."
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
    _check_no_cycle(path, [path.resolve()])
    return UserConfig(path)


def _check_no_cycle(path: Path, chain: list[Path]) -> None:
    """A user file's defaults must not include the file itself, directly or through other
    files of the same folder: Hydra would recurse until Python gives up."""
    data = read_yaml_file(path, what="Config file")
    defaults = data.get("defaults") if isinstance(data, dict) else None
    for entry in defaults if isinstance(defaults, list) else []:
        if not isinstance(entry, str) or entry == "_self_" or _names_primary(entry):
            continue
        included = (chain[0].parent / entry.lstrip("/")).with_suffix(".yaml").resolve()
        if included in chain:
            loop = " -> ".join(p.name for p in [*chain, included])
            raise ConfigFileError(
                f"Config file {path} lists {entry!r} in its defaults, which includes "
                f"{included} again ({loop}): a defaults list must not include itself. "
                f"Remove {entry!r} from the defaults of {path}."
            )
        if included.is_file():
            _check_no_cycle(included, [*chain, included])


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
