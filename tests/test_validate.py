"""Validation of a composed config: keys without a value are named in one paragraph."""

from __future__ import annotations

import pytest
from omegaconf import DictConfig

from avatar import load_config
from avatar.config.schema import validate
from avatar.errors import ConfigValueError


@pytest.fixture(scope="module")
def composed() -> DictConfig:
    return load_config(["profile=rtx3080"])


def test_keys_without_value_are_named(composed: DictConfig) -> None:
    cfg = composed.copy()
    cfg.profile.description = "???"
    cfg.voice.temperature = "???"

    with pytest.raises(ConfigValueError) as raised:
        validate(cfg)

    assert str(raised.value).startswith(
        "These config keys have no value: profile.description, voice.temperature. "
    )
