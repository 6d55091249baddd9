"""Setting Hydra's and OmegaConf's global state aside and restoring it (the autouse fixture
in conftest.py uses it; the fuzz suite uses it per example). A module of its own, since
tests/ and tests/voice/ both have a conftest.py and `from conftest import` could find either."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from omegaconf.basecontainer import BaseContainer


@contextlib.contextmanager
def hydra_state_restored() -> Iterator[None]:
    """Restore Hydra's singletons (ConfigStore, GlobalHydra) and OmegaConf's resolvers.

    Like hydra's own `hydra_restore_singletons` fixture, but keeps the discovered
    plugins instead of scanning for them again after every test.
    """
    # Discover plugins before the snapshot: discovery also fills ConfigStore (hydra/sweeper/
    # basic, ...) and SourcesRegistry (pkg://, file://), which a restore must not drop.
    Plugins.instance()
    state = Singleton.get_state()  # deep copies already
    try:
        yield
    finally:
        plugins = Singleton._instances.get(Plugins)
        Singleton._instances = state["instances"]
        if plugins is not None:
            Singleton._instances[Plugins] = plugins
        BaseContainer._resolvers = state["omegaconf_resolvers"]
