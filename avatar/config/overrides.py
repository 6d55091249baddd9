"""Reading command-line overrides before Hydra does: the one home for `key=value` parsing.

avatar must know a few overrides before composition (the profile, the GPU, the
launcher), and must say in its own words when one is malformed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from avatar.config.schema import AvatarConfig
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


def explicit_profile(overrides: Sequence[str]) -> str | None:
    """The profile the overrides choose themselves (the first of a sweep), else None.

    When they choose one, no detection is needed for composition.
    """
    options = override_values(overrides, PROFILE_GROUP)
    return None if options is None or AUTO in options or not options[0] else options[0]


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
