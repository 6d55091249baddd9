"""Mistakes in a user's config folder that only show while Hydra composes, in avatar's words.

Two of them end in a bare Python exception naming no file:
- a defaults list that includes its own file again, directly or through other files and
  config groups (`lipsync/x.yaml` listing `x`): Hydra recurses until RecursionError;
- an integer too large for any float in a float field of a user's stage option
  (`fixed_share: 1000…` with 400 digits): OmegaConf's `float()` raises OverflowError.

Checking every file of the folder before each run would refuse broken files the command
never reads, and cost every run; so the folder is searched after composition failed
that way (`failures_explained`). An exception whose cause is not found there is left
as it is: a bug, reported as one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from avatar.config.files import builtin_conf_dir
from avatar.config.schema import huge_number_message, too_large_number
from avatar.config.yaml_files import read_yaml_file
from avatar.errors import ConfigFileError

# A user's folder is small; a search that found this many files has been pointed at
# something else (a home directory), and stops rather than reading all of it.
_MAX_FILES = 2000
_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)
_DIAGNOSED = (RecursionError, OverflowError)


@dataclass(frozen=True)
class Include:
    """One defaults-list entry of a config file, as the config path it names."""

    entry: str  # as written, for the message
    target: str  # config path, e.g. "lipsync/x"


def defaults_includes(config_path: str, data: Any) -> list[Include]:
    """The configs a file's defaults list includes, resolved as Hydra does.

    In `lipsync/x.yaml`, `- y` names `lipsync/y` and `- sub: y` names `lipsync/sub/y`; a
    leading `/` starts from the top. `@package`, `override ` and `optional ` are not part
    of the path; `_self_`, unset (`???`, null) and interpolated options include nothing.
    """
    defaults = data.get("defaults") if isinstance(data, dict) else None
    if not isinstance(defaults, list):
        return []
    parent = PurePosixPath(config_path).parent
    found: list[Include] = []
    for entry in defaults:
        if isinstance(entry, str) and entry != "_self_":
            found.append(Include(entry, _resolve(parent, entry)))
        elif isinstance(entry, dict):
            for key, value in entry.items():
                group = str(key).split()[-1] if str(key).split() else ""
                options = value if isinstance(value, list) else [value]
                for option in options:
                    if not isinstance(option, str) or option in ("???", "_self_"):
                        continue
                    if "${" in option:
                        continue
                    target = f"{_resolve(parent, group)}/{option}"
                    found.append(Include(f"{key}: {option}", target))
    return found


def _resolve(parent: PurePosixPath, name: str) -> str:
    path = name.split("@", 1)[0].strip()
    if path.startswith("/"):
        return path.lstrip("/")
    return str(parent / path) if str(parent) != "." else path


def config_file(config_path: str, conf_dirs: Sequence[Path]) -> Path | None:
    """The file a config path names, the first dir of the search path winning."""
    for conf_dir in conf_dirs:
        path = Path(conf_dir) / f"{config_path}.yaml"
        if path.is_file():
            return path
    return None


def find_defaults_cycle(start: Sequence[str], conf_dirs: Sequence[Path]) -> ConfigFileError | None:
    """The first defaults list, reached from the configs in `start`, that includes its own
    file again (directly or through others), as an error naming the file, the entry and the
    loop; None when there is none. Files that cannot be read are skipped: Hydra reports
    those itself when it reads them."""
    done: set[str] = set()

    def visit(node: str, chain: list[str]) -> ConfigFileError | None:
        path = config_file(node, conf_dirs)
        if path is None or node in done:
            return None
        try:
            data = read_yaml_file(path, what="Config file")
        except ConfigFileError:
            return None
        for include in defaults_includes(node, data):
            if include.target in chain:
                loop = " -> ".join(f"{name}.yaml" for name in [*chain, include.target])
                again = config_file(include.target, conf_dirs)
                return ConfigFileError(
                    f"Config file {path} lists {include.entry!r} in its defaults, which "
                    f"includes {again} again ({loop}): a defaults list must not include "
                    f"itself. Remove {include.entry!r} from the defaults of {path}."
                )
            found = visit(include.target, [*chain, include.target])
            if found is not None:
                return found
        done.add(node)
        return None

    for node in start:
        found = visit(node, [node])
        if found is not None:
            return found
    return None


def _user_configs(conf_dirs: Sequence[Path]) -> Iterator[tuple[str, Path]]:
    """(config path, file) of each YAML file in the user's folders (not avatar's own)."""
    builtin = builtin_conf_dir().resolve()
    count = 0
    for conf_dir in conf_dirs:
        root = Path(conf_dir).resolve()
        if root == builtin or not root.is_dir():
            continue
        for path in sorted(root.rglob("*.yaml")):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts):
                continue
            count += 1
            if count > _MAX_FILES:
                return
            yield relative.with_suffix("").as_posix(), path


def _package(config_path: str, path: Path) -> str:
    """The dotted key a file's values land under: its group (`lipsync/x` -> `lipsync`),
    or what its `# @package` header says."""
    group = ".".join(PurePosixPath(config_path).parent.parts)
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:2048]
    except OSError:
        return group
    match = _PACKAGE_HEADER.search(head)
    if match is None:
        return group
    package = match.group(1)
    if package == "_global_":
        return ""
    return package.replace("_group_", group).removeprefix("_global_.")


def _huge_number(conf_dirs: Sequence[Path]) -> ConfigFileError | None:
    for config_path, path in _user_configs(conf_dirs):
        try:
            data = read_yaml_file(path, what="Config file")
        except ConfigFileError:
            continue
        if not isinstance(data, dict):
            continue
        values = {k: v for k, v in data.items() if k != "defaults"}
        error = huge_number_error(path, values, _package(config_path, path))
        if error is not None:
            return error
    return None


def huge_number_error(path: Path, data: Any, key: str = "") -> ConfigFileError | None:
    """The error for a number in a file's `data` too large for any float (the values land
    under `key`), naming the file, the key and its range; None when there is none."""
    found = too_large_number(data, key)
    if found is None:
        return None
    return ConfigFileError(
        f"Config file {path}: {huge_number_message(*found)} Fix the file; nothing was run."
    )


def explain_failure(exc: BaseException, conf_dirs: Sequence[Path]) -> ConfigFileError | None:
    """The mistake in the user's folder behind a RecursionError or OverflowError that
    composition raised, as one paragraph; None when the folder holds no such mistake."""
    if isinstance(exc, OverflowError):
        return _huge_number(conf_dirs)
    if isinstance(exc, RecursionError):
        return find_defaults_cycle([name for name, _ in _user_configs(conf_dirs)], conf_dirs)
    return None


@contextlib.contextmanager
def failures_explained(conf_dirs: Sequence[Path]) -> Iterator[None]:
    """Around a composition: a RecursionError or OverflowError caused by a file in the
    user's folder becomes that file's ConfigFileError; any other stays as it is."""
    try:
        yield
    except _DIAGNOSED as exc:
        found = explain_failure(exc, conf_dirs)
        if found is None:
            raise
        raise found from exc
