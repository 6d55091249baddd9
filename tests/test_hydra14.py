"""Forward compatibility: the same behaviour, and no warnings, on hydra-core 1.3.8 with
omegaconf 2.3 and on hydra-core 1.4 with omegaconf 2.4 (CI runs this file on both).

omegaconf 2.4 renames the resolver API and hydra-core 1.4 deprecates `version_base`,
warns when a ConfigStore entry is replaced without `replace=True`, and warns when config
instantiates a `_target_` nobody named as trusted. Each would print a warning on every
`python -m avatar`; these tests make sure none does, whichever version is installed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import hydra
import omegaconf
import pytest
import yaml
from cli_helpers import CPU_MODE_WARNING, run_avatar
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from avatar.config.compat import HYDRA_1_4, OMEGACONF_2_4, hydra_main_options, register_resolver
from avatar.config.compose import TRUSTED_TARGETS, load_config, register_config
from avatar.config.files import builtin_conf_dir
from avatar.config.profiles import AutoProfile


def test_the_version_flags_match_the_installed_libraries() -> None:
    assert hydra.__version__.startswith("1.4") is HYDRA_1_4
    assert omegaconf.__version__.startswith("2.4") is OMEGACONF_2_4


def test_a_resolver_registers_under_the_avatar_namespace_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_resolver("answer", lambda: 41)
        register_resolver("answer", lambda: 42)  # registering again replaces

        assert OmegaConf.create({"x": "${avatar.answer:}"}).x == 42


def test_install_run_twice_stores_its_configs_again_without_a_warning() -> None:
    auto = AutoProfile([builtin_conf_dir()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_config(auto)
        register_config(auto, explicit_profile="rtx3080")

    stored = ConfigStore.instance().load("profile/auto.yaml").node
    assert list(stored.defaults) == ["rtx3080", "_self_"]


def test_load_config_composes_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load_config(["profile=low_vram", "steps=30"])

    assert (cfg.profile.name, cfg.steps) == ("low_vram", 30)


def test_every_target_the_config_instantiates_is_named_as_trusted() -> None:
    config = yaml.safe_load((builtin_conf_dir() / "config.yaml").read_text())
    callbacks = (config.get("hydra") or {}).get("callbacks") or {}
    targets = {entry["_target_"] for entry in callbacks.values()}

    assert targets <= set(TRUSTED_TARGETS)


def test_hydra_main_options_suit_the_installed_hydra() -> None:
    options = hydra_main_options(*TRUSTED_TARGETS)

    if HYDRA_1_4:  # version_base is deprecated there; its defaults are 1.3's
        assert options == {"execution_whitelist": list(TRUSTED_TARGETS)}
    else:  # without it 1.3 falls back to 1.1's defaults (chdir into the output dir)
        assert options == {"version_base": "1.3"}


def stderr_warnings(stderr: str) -> list[str]:
    """stderr lines other than the one CPU-mode line detection logs on this machine."""
    return [line for line in stderr.splitlines() if line.strip() and CPU_MODE_WARNING not in line]


@pytest.mark.parametrize(
    "args", [(), ("--help",), ("-m", "steps=20,30")], ids=["status", "help", "multirun"]
)
def test_the_cli_prints_no_warning(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run_avatar(*args, cwd=tmp_path, env={"PYTHONWARNINGS": "always"})

    assert result.returncode == 0, result.output
    assert stderr_warnings(result.stderr) == []
    assert "avatar " in result.stdout
