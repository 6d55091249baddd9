"""The fixtures other tests lean on: if isolation leaked, tests would pass or fail by order."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra_state import hydra_state_restored
from omegaconf import OmegaConf

from avatar.config.compose import load_config


def test_hydra_state_is_restored_after_a_composition_that_changes_it() -> None:
    resolvers_before = OmegaConf.has_resolver("avatar.auto_profile")
    plugins_before = Plugins.instance()

    with hydra_state_restored():
        load_config(["profile=cpu"])  # registers resolvers, stores schema and profile/auto
        OmegaConf.register_new_resolver("leaky", lambda: 1)
        ConfigStore.instance().store(group="leaky_group", name="x", node={"a": 1})
        assert OmegaConf.has_resolver("leaky")

    assert not OmegaConf.has_resolver("leaky")
    assert OmegaConf.has_resolver("avatar.auto_profile") == resolvers_before
    assert "leaky_group" not in ConfigStore.instance().repo
    assert not GlobalHydra.instance().is_initialized()
    assert Plugins.instance() is plugins_before  # discovered plugins are kept, not rescanned


def test_the_restore_also_runs_when_the_block_raises() -> None:
    try:
        with hydra_state_restored():
            OmegaConf.register_new_resolver("leaky_on_error", lambda: 1)
            raise RuntimeError("boom")
    except RuntimeError:
        pass

    assert not OmegaConf.has_resolver("leaky_on_error")
