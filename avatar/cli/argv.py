"""What the command line says before Hydra reads it: config dir and name, and the overrides.

Pre-parsing only reads argv; it never rewrites it (rewriting is fragile in Hydra 1.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    config_dir_at: int | None = None  # the argv index of the argument holding the folder
    config_dir_prefix: str = ""  # "--config-dir=" when the folder was given inline
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
                pre.config_dir, pre.config_dir_at, pre.config_dir_prefix = value, at, prefix
            elif flag in ("--config-path", "-cp"):
                pre.config_path = value
            elif flag in ("--config-name", "-cn"):
                pre.config_name, pre.config_name_at, pre.config_name_prefix = value, at, prefix
        elif not arg.startswith("-"):
            pre.overrides.append(arg)
        i += 1
    return pre
