"""Validation of a composed config: missing values, then ranges, each reported as one
paragraph naming the key."""

from __future__ import annotations

import pytest
from omegaconf import DictConfig, OmegaConf

from avatar import load_config
from avatar.config.schema import _FLOAT_RANGES, _MINIMUMS, _resolved_value, validate
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


@pytest.mark.parametrize("profile", ["cpu", "low_vram", "rtx3080", "rtx4090"])
def test_ranges_are_checked_on_the_values_omegaconf_selects(profile: str) -> None:
    cfg = load_config([f"profile={profile}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)

    for key, *_ in (*_MINIMUMS, *_FLOAT_RANGES):
        assert _resolved_value(resolved, key) == OmegaConf.select(cfg, key, default=None), key


def test_an_out_of_range_value_set_by_interpolation_names_the_key_it_is_read_under(
    composed: DictConfig,
) -> None:
    cfg = composed.copy()
    cfg.profile.steps = 0

    with pytest.raises(ConfigValueError, match=r"Invalid value for 'profile\.steps': 0\."):
        validate(cfg)
