"""Reading command-line overrides before Hydra does: the one home for `key=value` parsing.

avatar must know a few overrides before composition (the profile, the GPU, the
launcher), and must say in its own words when one is malformed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from avatar.config.files import builtin_conf_dir, group_files
from avatar.config.schema import (
    AvatarConfig,
    Stage,
    huge_number_message,
    too_large_number,
)
from avatar.errors import ConfigValueError

PROFILE_GROUP = "profile"
AUTO = "auto"


def override_values(overrides: Sequence[str], key: str) -> list[str] | None:
    """The values of the first `key=...` override (`+key=` too), split at a sweep's commas;
    None when no override sets `key`. What avatar must know before Hydra parses them."""
    for override in overrides:
        name, sep, value = override.lstrip("+").partition("=")
        if sep and name == key:
            return [v.strip() for v in value.split(",")]
    return None


def group_options(
    overrides: Sequence[str], group: str, available: Sequence[str] | None = None
) -> list[str] | None:
    """The options the first `group=...` override chooses, a sweep's expanded as Hydra will:
    `a,b`, `choice(a,b)`, `range(...)`, and `glob(rtx*)` matched against `available` (an
    empty list when those are not known). None when no override sets `group`.

    Hydra's parser reads the value, so a sweep function is never taken for a name.
    """
    for text in overrides:
        name, sep, _ = text.lstrip("+").partition("=")
        if not sep or name != group:
            continue
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.override_parser.types import Glob
        from hydra.errors import HydraException

        try:
            (override,) = OverridesParser.create().parse_overrides([text])
            if isinstance(override.value(), Glob):
                return list(override.value().filter(list(available or [])))
            if override.is_sweep_override() and not override.is_interval_sweep():
                return [str(option) for option in override.sweep_string_iterator()]
            return [override.get_value_element_as_str()]
        except (HydraException, ValueError, TypeError):
            return override_values([text], group)  # Hydra reports the bad value itself
    return None


def explicit_profile(overrides: Sequence[str]) -> str | None:
    """The profile the overrides choose themselves (the first of a sweep), else None.

    When they choose one, no detection is needed for composition. A glob is matched
    against the profiles only later, by Hydra: it leaves the choice to detection here.
    """
    options = group_options(overrides, PROFILE_GROUP)
    return None if not options or AUTO in options or not options[0] else options[0]


def gpu_index_override(overrides: Sequence[str]) -> int | None:
    """`gpu_index=N` from the overrides, needed before composition for the auto choice."""
    values = override_values(overrides, "gpu_index")
    return int(values[0]) if values and len(values) == 1 and values[0].isdigit() else None


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
            value = text.partition("=")[2]
            beyond_ascii = next((c for c in value if ord(c) > 127), None)
            if "=" not in text and not text.startswith("~"):
                problem = f"it has no value ({key}=VALUE)"
            elif beyond_ascii is not None and not value.startswith(("'", '"')):
                problem = (
                    f"Hydra reads an unquoted value in ASCII only, and this one holds "
                    f"{beyond_ascii!r}: quote the value inside the argument, as in "
                    f"'{key}=\"{value}\"'"
                )
            else:
                detail = str(exc).splitlines()
                said = next((d for d in detail if not d.startswith(("Error parsing", "See "))), "")
                problem = f"it is not valid override syntax ({said.strip()})"
            raise ConfigValueError(
                f"Cannot read the command-line override {text!r}: {problem}. An override is "
                "KEY=VALUE, for example steps=30 or profile=low_vram; quote a value with spaces "
                "or brackets ('key=\"a b\"'), and sweep with -m KEY=A,B."
            ) from exc
        found = too_large_number(override.value())
        if found is not None:
            raise ConfigValueError(
                f"{huge_number_message(override.key_or_group, found[1])} (In the override "
                f"{_short(text)}.)",
                key=override.key_or_group,
            )
        _check_group_choice(text, override)
        root = override.key_or_group.split(".")[0].split("/")[0]
        if override.is_delete() and root in avatar_keys:
            raise ConfigValueError(
                f"The override {text!r} deletes {override.key_or_group!r}, which avatar needs. "
                f"Set a value instead ({override.key_or_group}=VALUE), or leave it out to keep "
                "the default."
            )


def _short(text: str) -> str:
    """An override as a message quotes it: a very long one is cut."""
    return repr(text) if len(text) <= 60 else repr(text[:40] + "...")


def _check_group_choice(text: str, override: Any) -> None:
    """An override needs a key, and a config group (profile, voice, ...) takes an option's
    name: Hydra raises a plain ValueError for `voice=0`, and another for `=0`."""
    key = override.key_or_group
    if not key:
        raise ConfigValueError(
            f"The override {_short(text)} has no key before its '='. An override is KEY=VALUE, "
            "for example steps=30."
        )
    if key not in _GROUPS or override.is_delete():
        return
    value = override.value()
    if type(value).__name__ == "Glob":
        return  # a glob of names is Hydra's to expand
    items = value if isinstance(value, list) else getattr(value, "list", [value])
    if all(isinstance(item, str) for item in items):
        return
    options = sorted(group_files(key, [builtin_conf_dir()]))
    raise ConfigValueError(
        f"The override {_short(text)} gives the config group '{key}' a value that is not an "
        f"option's name. Allowed: {', '.join(options)}"
        + (" (or auto)" if key == PROFILE_GROUP else "")
        + f", for example {key}={options[0]}."
    )


_GROUPS = frozenset({PROFILE_GROUP, *(stage.value for stage in Stage)})
