"""Where avatar's config files are: its own config dir and the options of a config group.

The bottom of the config layer: plain file-system lookups that profile choice, the
plan's suggestions and error messages all need.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PRIMARY_CONFIG = "config"


def builtin_conf_dir() -> Path:
    """avatar's own config dir: avatar/conf in an installed wheel, conf/ in a source tree."""
    package = Path(__file__).resolve().parent.parent  # avatar/
    installed = package / "conf"
    return installed if (installed / "config.yaml").is_file() else package.parent / "conf"


def group_files(group: str, conf_dirs: Iterable[Path]) -> dict[str, Path]:
    """Option name -> file for one config group. The first dir wins, as in Hydra's search path."""
    found: dict[str, Path] = {}
    for conf_dir in conf_dirs:
        folder = Path(conf_dir) / group
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found
