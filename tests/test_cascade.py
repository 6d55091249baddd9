"""The config cascade (the note's DEC-I2): command line > user YAML > profile > built-in defaults.

Each rule is shown twice: through `load_config(config_file=...)` in-process, and
through the real CLI (`--config-dir DIR --config-name mine`) in a subprocess. A user
YAML extends avatar's config by listing `config` in its defaults; it chooses a
profile with `override profile: NAME` in the same defaults list (on hydra-core
1.3.8 a plain `profile: NAME` there is "Multiple values for profile", and
`profile: NAME` as a value is a merge error; check_user_config says so itself).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import (
    MINE_YAML_HEAD,
    run_avatar,
    status_profile,
    status_settings,
    write_user_config,
)
from fakes import FakeGPU, FakeNvmlModule
from omegaconf import DictConfig, OmegaConf

from avatar import load_config
from avatar.config.files import builtin_conf_dir
from avatar.config.origin import value_origin

RTX_3080 = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)
RTX_4090 = FakeGPU("NVIDIA GeForce RTX 4090", total_mib=24564, used_mib=500)
SELECTS_LOW_VRAM = "defaults:\n  - config\n  - override profile: low_vram\n  - _self_\n"


def profile_file(name: str) -> DictConfig:
    loaded = OmegaConf.load(builtin_conf_dir() / "profile" / f"{name}.yaml")
    assert isinstance(loaded, DictConfig)
    return loaded


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "myconf"
    folder.mkdir()
    return folder


# ------------------------------------------------------------------ load_config


def test_user_yaml_beats_profile(user_dir: Path, fake_nvml: Callable[..., FakeNvmlModule]) -> None:
    fake_nvml([RTX_3080])  # auto picks rtx3080
    mine = write_user_config(user_dir, "mine.yaml", MINE_YAML_HEAD + "steps: 33\n")

    cfg = load_config(config_file=mine)

    assert cfg.profile.name == "rtx3080"
    assert cfg.steps == 33
    assert cfg.batch_size == profile_file("rtx3080").batch_size  # untouched knobs still follow


def test_command_line_beats_user_yaml(user_dir: Path) -> None:
    mine = write_user_config(user_dir, "mine.yaml", MINE_YAML_HEAD + "steps: 33\n")

    assert load_config(["steps=12"], config_file=mine).steps == 12


def test_profile_beats_built_in_defaults() -> None:
    """config.yaml gives the knobs no values of their own: each comes from the profile."""
    for name in ("rtx4090", "cpu"):
        cfg = load_config([f"profile={name}"])
        profile = profile_file(name)
        assert (cfg.steps, cfg.batch_size, cfg.safety_margin_mib) == (
            profile.steps,
            profile.batch_size,
            profile.safety_margin_mib,
        )


def test_user_yaml_value_inside_the_profile_beats_the_profile_file(user_dir: Path) -> None:
    mine = write_user_config(user_dir, "mine.yaml", MINE_YAML_HEAD + "profile:\n  steps: 31\n")

    cfg = load_config(["profile=rtx3080"], config_file=mine)

    assert (cfg.profile.steps, cfg.steps) == (31, 31)


def test_user_yaml_selects_a_profile_with_override_in_its_defaults(
    user_dir: Path, fake_nvml: Callable[..., FakeNvmlModule]
) -> None:
    fake_nvml([RTX_4090])  # auto would pick rtx4090
    mine = write_user_config(user_dir, "mine.yaml", SELECTS_LOW_VRAM + "steps: 33\n")

    cfg = load_config(config_file=mine)

    assert cfg.profile.name == "low_vram"
    assert cfg.steps == 33  # the file's value still beats the profile it selects
    assert cfg.batch_size == profile_file("low_vram").batch_size


def test_command_line_profile_beats_the_profile_a_user_yaml_selects(user_dir: Path) -> None:
    mine = write_user_config(user_dir, "mine.yaml", SELECTS_LOW_VRAM)

    assert load_config(["profile=rtx3080"], config_file=mine).profile.name == "rtx3080"


def test_user_yaml_profile_choice_beats_avatar_profile(
    user_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AVATAR_PROFILE only forces the auto choice; a file that names a profile wins."""
    monkeypatch.setenv("AVATAR_PROFILE", "rtx4090")
    mine = write_user_config(user_dir, "mine.yaml", SELECTS_LOW_VRAM)

    assert load_config(config_file=mine).profile.name == "low_vram"


def test_empty_user_yaml_warns_and_gives_the_defaults(
    user_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = write_user_config(user_dir, "empty.yaml", "")

    with caplog.at_level(logging.WARNING):
        cfg = load_config(config_file=empty)

    assert any(
        "is empty" in r.getMessage() and str(empty) in r.getMessage() for r in caplog.records
    )
    assert OmegaConf.to_container(cfg, resolve=True) == OmegaConf.to_container(
        load_config(), resolve=True
    )


def test_self_before_config_warns_that_the_defaults_win(
    user_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = write_user_config(
        user_dir, "mine.yaml", "defaults:\n  - _self_\n  - config\nsteps: 33\n"
    )

    with caplog.at_level(logging.WARNING):
        cfg = load_config(["profile=cpu"], config_file=mine)

    assert cfg.steps == profile_file("cpu").steps  # Hydra's order: config came after the file
    assert any("_self_ before config" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ the real CLI

slow = pytest.mark.slow


@slow
def test_cli_user_yaml_beats_profile(tmp_path: Path) -> None:
    write_user_config(tmp_path / "myconf", "mine.yaml", MINE_YAML_HEAD + "steps: 33\n")

    result = run_avatar(
        "--config-dir", "myconf", "--config-name", "mine", cwd=tmp_path, gpus=[RTX_3080]
    )

    assert result.returncode == 0, result.output
    settings = status_settings(result.stdout)
    assert status_profile(result.stdout)[0] == "rtx3080"
    assert settings["steps"] == "33"
    assert settings["batch_size"] == str(profile_file("rtx3080").batch_size)


@slow
def test_cli_command_line_beats_user_yaml(tmp_path: Path) -> None:
    write_user_config(tmp_path / "myconf", "mine.yaml", MINE_YAML_HEAD + "steps: 33\n")

    result = run_avatar("--config-dir", "myconf", "--config-name", "mine", "steps=12", cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert status_settings(result.stdout)["steps"] == "12"


@slow
def test_cli_profile_beats_built_in_defaults(tmp_path: Path) -> None:
    result = run_avatar("profile=rtx4090", cwd=tmp_path)

    assert result.returncode == 0, result.output
    profile = profile_file("rtx4090")
    settings = status_settings(result.stdout)
    assert (settings["steps"], settings["batch_size"], settings["quality"]) == (
        str(profile.steps),
        str(profile.batch_size),
        profile.quality,
    )


@slow
def test_cli_user_yaml_that_selects_a_profile_is_named_as_the_reason(tmp_path: Path) -> None:
    write_user_config(tmp_path / "myconf", "mine.yaml", SELECTS_LOW_VRAM + "steps: 33\n")

    result = run_avatar(
        "--config-dir", "myconf", "--config-name", "mine", cwd=tmp_path, gpus=[RTX_4090]
    )

    assert result.returncode == 0, result.output
    assert status_profile(result.stdout) == ("low_vram", "set in config 'mine'")
    assert status_settings(result.stdout)["steps"] == "33"


@slow
def test_cli_command_line_profile_beats_the_user_yaml_profile(tmp_path: Path) -> None:
    write_user_config(tmp_path / "myconf", "mine.yaml", SELECTS_LOW_VRAM)

    result = run_avatar(
        "--config-dir", "myconf", "--config-name", "mine", "profile=rtx3080", cwd=tmp_path
    )

    assert result.returncode == 0, result.output
    assert status_profile(result.stdout) == ("rtx3080", "set on the command line")


# ------------------------------------------- which file set a value (for error messages)


def test_value_origin_follows_the_cascade(tmp_path: Path) -> None:
    """User file over the chosen profile's file over the schema; command line names none."""
    conf = builtin_conf_dir()
    mine = write_user_config(tmp_path, "mine.yaml", MINE_YAML_HEAD + "profile:\n  steps: 31\n")
    cfg = load_config(["profile=rtx3080"], config_file=mine)

    def origin(key: str, primary: Path | None = mine, overrides: tuple[str, ...] = ()) -> object:
        return value_origin(
            cfg, key, overrides=overrides, primary_file=primary, conf_dirs=[conf, tmp_path]
        )

    assert origin("profile.steps") == mine
    assert origin("profile.steps", primary=None) == conf / "profile" / "rtx3080.yaml"
    assert origin("profile.steps", overrides=("profile.steps=31",)) is None
    assert origin("voice.sample_rate_hz") == conf / "voice" / f"{cfg.voice.name}.yaml"
    assert origin("profile.selected_by") is None  # the schema's default: no file sets it


def test_value_origin_skips_a_file_that_only_interpolates_the_key(tmp_path: Path) -> None:
    """conf/config.yaml says `steps: ${profile.steps}`: the value is the profile's, not its."""
    conf = builtin_conf_dir()
    cfg = load_config(["profile=rtx3080"])

    assert (
        value_origin(
            cfg, "steps", overrides=[], primary_file=conf / "config.yaml", conf_dirs=[conf]
        )
        is None
    )
