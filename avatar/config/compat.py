"""The one place that knows hydra-core / omegaconf versions and Hydra internals.

hydra-core 1.4 and omegaconf 2.4 rename or deprecate APIs avatar uses, and
`load_config()` needs Hydra's internal search-path and global-state objects to compose
outside a running app. Everything version-dependent or internal is fenced in here,
so an upgrade touches one file (CI runs the suite on 1.4.0rc3 too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import omegaconf
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


def _major_minor(version: str) -> tuple[int, ...]:
    """(2, 4) for "2.4.1rc1": enough to tell the API generations apart."""
    return tuple(int(part) for part in version.split(".")[:2])


# hydra-core 1.4 and omegaconf 2.4 rename or deprecate APIs avatar uses. Code for both
# branches on these, never on hasattr (in 2.3 `register_resolver` exists with other semantics).
OMEGACONF_2_4 = _major_minor(omegaconf.__version__) >= (2, 4)
HYDRA_1_4 = _major_minor(hydra.__version__) >= (1, 4)


def register_resolver(name: str, fn: Callable[..., Any], *, use_cache: bool = False) -> None:
    """Register under the `avatar.` namespace on omegaconf 2.3 and 2.4.

    `use_cache`: the value is computed once per config and travels with it (to a
    launcher's worker processes too), as Hydra's `${now:}` does.

    2.4 renames the API: `register_resolver` is the new one there, while in 2.3 it
    is the legacy API with other semantics, so this branches on the version.
    """
    register = (
        OmegaConf.register_resolver  # type: ignore[attr-defined]
        if OMEGACONF_2_4
        else OmegaConf.register_new_resolver
    )
    extra = {"use_cache": True} if use_cache else {}
    register(f"avatar.{name}", fn, replace=True, **extra)


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


def stored_option(group: str | None, name: str) -> Any:
    """The ConfigStore entry `group/name` (a root entry for group None; None if absent):
    Hydra offers no public getter."""
    repo = ConfigStore.instance().repo
    return (repo if group is None else repo.get(group, {})).get(f"{name}.yaml")


def restore_option(group: str, name: str, entry: Any) -> None:
    """Put back an entry `stored_option` returned, exactly as it was."""
    ConfigStore.instance().repo.setdefault(group, {})[f"{name}.yaml"] = entry


@contextmanager
def isolated_hydra(builtin_dir: Path, user_dir: Path | None) -> Iterator[None]:
    """Hydra's global state for one composition outside (or inside) a running app.

    The search path is the one the CLI builds for `--config-dir DIR`: the user's dir
    before avatar's configs (so a user's `profile/NAME.yaml` shadows avatar's), then
    structured configs. A running app's GlobalHydra is set aside and restored afterwards.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    search_path = create_config_search_path(f"file://{builtin_dir}")
    if user_dir is not None:
        search_path.prepend(
            provider="command-line",
            path=f"file://{user_dir}",
            anchor=SearchPathQuery(provider="main"),
        )
    global_hydra = GlobalHydra.instance()
    saved = global_hydra.hydra
    global_hydra.clear()
    try:
        Hydra.create_main_hydra2(task_name="avatar", config_search_path=search_path)
        yield
    finally:
        global_hydra.clear()
        global_hydra.hydra = saved


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """`hydra.compose` inside `isolated_hydra`."""
    from hydra import compose as hydra_compose

    return hydra_compose(config_name=config_name, overrides=overrides)
