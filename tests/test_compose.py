"""Composition: every profile through `load_config` and through Hydra's compose API,
the knobs that follow the profile, the auto choice, and AVATAR_PROFILE.

In-process, against the fake NVML from conftest (no driver unless a test gives GPUs).
Expected values are read from the profile YAMLs, the one place they live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeGPU, FakeNvmlModule
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from avatar import load_config
from avatar.config.compose import register_config
from avatar.config.files import PRIMARY_CONFIG, builtin_conf_dir
from avatar.config.overrides import AUTO, explicit_profile
from avatar.config.profiles import AutoProfile, profile_files
from avatar.config.schema import validate
from avatar.errors import ProfileError
from avatar.hardware.detect import detect_gpu
from avatar.hardware.types import GPUDetection

CONF_DIR = builtin_conf_dir()
PROFILE_FILES = {n: p for n, p in profile_files([CONF_DIR]).items() if n != AUTO}
PROFILES = sorted(PROFILE_FILES)
KNOBS = ("steps", "batch_size", "precision", "quality", "safety_margin_mib")

RTX_2060 = FakeGPU("NVIDIA GeForce RTX 2060", total_mib=6144, used_mib=400)
RTX_3080 = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)
RTX_4090 = FakeGPU("NVIDIA GeForce RTX 4090", total_mib=24564, used_mib=500)


def profile_file(name: str) -> DictConfig:
    loaded = OmegaConf.load(PROFILE_FILES[name])
    assert isinstance(loaded, DictConfig)
    return loaded


def plain(value: Any) -> Any:
    """An enum node's value as the YAML spells it."""
    return getattr(value, "name", value)


def knobs(cfg: DictConfig) -> dict[str, Any]:
    return {key: plain(cfg[key]) for key in KNOBS}


def compose_with_hydra_api(
    overrides: Sequence[str], detector: Callable[[int | None], GPUDetection] = detect_gpu
) -> DictConfig:
    """What an app that uses Hydra's compose API directly does: install, then compose."""
    auto = AutoProfile([CONF_DIR], detector=detector)
    register_config(auto, explicit_profile=explicit_profile(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=PRIMARY_CONFIG, overrides=list(overrides))
    validate(cfg)
    return cfg


class DetectorSpy:
    """A detector that records being called; answers CPU mode."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, gpu_index: int | None) -> GPUDetection:
        self.calls += 1
        return GPUDetection((), None, "none", "spy: no GPU")


def test_the_four_documented_profiles_ship_with_avatar() -> None:
    assert {"rtx4090", "rtx3080", "low_vram", "cpu"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_composes_through_load_config_and_the_knobs_follow_it(name: str) -> None:
    cfg = load_config([f"profile={name}"])

    expected = profile_file(name)
    assert cfg.profile.name == expected.name == name
    assert knobs(cfg) == {key: expected[key] for key in KNOBS}


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_composes_the_same_through_hydra_compose_api(name: str) -> None:
    via_compose = compose_with_hydra_api([f"profile={name}"])
    via_load_config = load_config([f"profile={name}"])

    assert via_compose.profile.name == name
    assert OmegaConf.to_container(via_compose, resolve=True) == OmegaConf.to_container(
        via_load_config, resolve=True
    )


def test_explicit_profile_needs_no_detection_in_load_config(
    fake_nvml: Callable[..., FakeNvmlModule],
) -> None:
    nv = fake_nvml([RTX_3080])

    cfg = load_config(["profile=low_vram"])

    assert cfg.profile.name == "low_vram"
    assert nv.calls == []  # NVML never touched


def test_explicit_profile_needs_no_detection_in_hydra_compose_api() -> None:
    spy = DetectorSpy()

    cfg = compose_with_hydra_api(["profile=rtx4090", "steps=12"], detector=spy)

    assert (cfg.profile.name, cfg.steps) == ("rtx4090", 12)
    assert spy.calls == 0


def test_auto_profile_runs_detection_once_when_no_profile_is_given() -> None:
    spy = DetectorSpy()

    cfg = compose_with_hydra_api([], detector=spy)

    assert cfg.profile.name == "cpu"
    assert spy.calls == 1


def test_a_knob_set_on_the_command_line_beats_the_profile_and_the_others_still_follow_it() -> None:
    cfg = load_config(["profile=rtx3080", "steps=30", "precision=bf16"])

    profile = profile_file("rtx3080")
    assert (cfg.steps, plain(cfg.precision)) == (30, "bf16")
    assert (cfg.batch_size, plain(cfg.quality)) == (profile.batch_size, profile.quality)
    assert cfg.profile.steps == profile.steps  # the profile itself is unchanged


def test_changing_a_profile_value_moves_the_knob_that_follows_it() -> None:
    cfg = load_config(["profile=low_vram", "profile.batch_size=3"])

    assert cfg.batch_size == 3


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [(RTX_2060, "low_vram"), (RTX_3080, "rtx3080"), (RTX_4090, "rtx4090")],
    ids=["6GB", "10GB", "24GB"],
)
def test_auto_picks_the_profile_that_fits_the_fake_gpu(
    fake_nvml: Callable[..., FakeNvmlModule], gpu: FakeGPU, expected: str
) -> None:
    fake_nvml([gpu])

    assert load_config().profile.name == expected
    assert compose_with_hydra_api([]).profile.name == expected


def test_auto_picks_cpu_without_an_nvidia_driver() -> None:
    cfg = load_config()  # conftest's NVML has no driver

    assert cfg.profile.name == "cpu"
    assert cfg.profile.selected_by.startswith("auto: no usable GPU")


def test_auto_picks_cpu_when_the_driver_lists_no_gpu(
    fake_nvml: Callable[..., FakeNvmlModule],
) -> None:
    fake_nvml([])

    assert load_config().profile.name == "cpu"


def test_selected_by_says_which_gpu_and_threshold_chose_the_profile(
    fake_nvml: Callable[..., FakeNvmlModule],
) -> None:
    fake_nvml([RTX_3080])

    cfg = load_config()

    threshold = profile_file("rtx3080").vram_min_mib
    assert cfg.profile.selected_by == (
        f"auto: 10240 MiB on GPU 0 (NVIDIA GeForce RTX 3080) >= {threshold} -> rtx3080"
    )


def test_explicit_auto_override_still_detects(fake_nvml: Callable[..., FakeNvmlModule]) -> None:
    fake_nvml([RTX_4090])

    assert load_config(["profile=auto"]).profile.name == "rtx4090"


def test_avatar_profile_forces_the_auto_choice(
    fake_nvml: Callable[..., FakeNvmlModule], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml([RTX_2060])  # would be low_vram
    monkeypatch.setenv("AVATAR_PROFILE", "rtx3080")

    cfg = load_config()

    assert cfg.profile.name == "rtx3080"
    assert cfg.profile.selected_by == "set by AVATAR_PROFILE=rtx3080"


def test_explicit_profile_beats_avatar_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_PROFILE", "rtx4090")

    assert load_config(["profile=low_vram"]).profile.name == "low_vram"


def test_bad_avatar_profile_is_a_profile_error_naming_the_allowed_profiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AVATAR_PROFILE", "rtx9090")

    with pytest.raises(ProfileError) as raised:
        load_config()

    message = str(raised.value)
    assert "AVATAR_PROFILE='rtx9090'" in message
    assert all(name in message for name in PROFILES)


def test_a_profile_dropped_into_a_user_config_dir_is_selectable_and_auto_picked(
    tmp_path: Path, fake_nvml: Callable[..., FakeNvmlModule]
) -> None:
    a100 = profile_file("rtx4090")
    a100.name, a100.description, a100.vram_min_mib, a100.steps = "a100", "80 GB", 40960, 60
    (tmp_path / "profile").mkdir()
    OmegaConf.save(a100, tmp_path / "profile" / "a100.yaml")
    mine = tmp_path / "mine.yaml"
    mine.write_text("defaults:\n  - config\n  - _self_\n", encoding="utf-8")
    fake_nvml([FakeGPU("NVIDIA A100-SXM4-80GB", total_mib=81920)])

    auto_cfg = load_config(config_file=mine)
    chosen_cfg = load_config(["profile=a100"], config_file=mine)

    assert (auto_cfg.profile.name, auto_cfg.steps) == ("a100", 60)
    assert "-> a100" in auto_cfg.profile.selected_by
    assert chosen_cfg.profile.name == "a100"
