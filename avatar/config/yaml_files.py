"""Reading a user's YAML file: plain data, or one paragraph naming the file and line.

Every user file avatar reads itself (a primary config, a profile, a stage option it
diagnoses) goes through `read_yaml_file`, so each mistake in one is reported the same way.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from avatar.errors import ConfigFileError


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
