"""Profiles are files: a new one is auto-pickable with no code change, a bad one is a clear
error naming the file, and the first config dir wins as in Hydra's search path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fakes import FakeGPU, FakeNvmlModule
from omegaconf import OmegaConf

from avatar import get_hardware_profile, load_config
from avatar.config.files import builtin_conf_dir
from avatar.config.profiles import load_profiles, pick_profile, profile_files, read_profile
from avatar.errors import ConfigFileError, ProfileError
from avatar.hardware.types import GPUDetection, GPUInfo

FakeNvml = Callable[..., FakeNvmlModule]
BUILTIN = builtin_conf_dir()


def write_profile(conf_dir: Path, option: str, **changes: object) -> Path:
    """A profile file like the built-in rtx4090.yaml for option `option`, with `changes`."""
    data = OmegaConf.to_container(OmegaConf.load(BUILTIN / "profile" / "rtx4090.yaml"))
    data.update({"name": option, "description": f"test profile {option}", **changes})
    path = conf_dir / "profile" / f"{option}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(data))
    return path


def detection_with(total_mib: float, name: str = "test card") -> GPUDetection:
    card = GPUInfo(0, name, total_mib, 0.0, total_mib)
    return GPUDetection((card,), card, "nvml", "test")


def test_builtin_profiles_are_the_four_of_the_issue() -> None:
    assert sorted(p.name for p in load_profiles([BUILTIN])) == [
        "cpu",
        "low_vram",
        "rtx3080",
        "rtx4090",
    ]


def test_auto_reason_names_the_memory_gpu_threshold_and_profile() -> None:
    threshold = read_profile(BUILTIN / "profile" / "rtx3080.yaml").vram_min_mib
    choice = pick_profile(load_profiles([BUILTIN]), detection_with(10240, "RTX 3080"))

    assert choice.name == "rtx3080"
    assert choice.reason == f"auto: 10240 MiB on GPU 0 (RTX 3080) >= {threshold} -> rtx3080"


def test_no_usable_gpu_picks_the_cpu_profile_and_says_why() -> None:
    detection = GPUDetection((), None, "none", "no NVIDIA driver found")

    choice = pick_profile(load_profiles([BUILTIN]), detection)

    assert choice.name == "cpu"
    assert "no NVIDIA driver found" in choice.reason


# ------------------------------------------------------------------ a user's a100.yaml


@pytest.fixture
def a100_dir(tmp_path: Path) -> Path:
    write_profile(tmp_path, "a100", vram_min_mib=40960)
    return tmp_path


@pytest.mark.parametrize(("total_mib", "expected"), [(40960, "a100"), (40959, "rtx4090")])
def test_a_user_profile_file_is_auto_pickable(
    a100_dir: Path, total_mib: int, expected: str
) -> None:
    profiles = load_profiles([BUILTIN, a100_dir])

    assert pick_profile(profiles, detection_with(total_mib)).name == expected


def test_get_hardware_profile_picks_a_user_profile_from_a_detected_gpu(
    a100_dir: Path, fake_nvml: FakeNvml
) -> None:
    fake_nvml([FakeGPU("NVIDIA A100-SXM4-40GB", total_mib=40960, used_mib=4)])

    assert get_hardware_profile(conf_dirs=[BUILTIN, a100_dir]) == "a100"
    assert get_hardware_profile() == "rtx4090"  # avatar's own dir alone


def test_a_gpu_below_every_threshold_falls_back_to_cpu(tmp_path: Path) -> None:
    write_profile(tmp_path, "big", vram_min_mib=16384)
    write_profile(tmp_path, "cpu", accelerator="cpu", vram_min_mib=None)

    choice = pick_profile(load_profiles([tmp_path]), detection_with(8192))

    assert choice.name == "cpu"
    assert "8192 MiB on GPU 0 (test card) < 16384" in choice.reason


def test_without_a_cpu_profile_cpu_mode_is_a_clear_error(tmp_path: Path) -> None:
    write_profile(tmp_path, "big", vram_min_mib=16384)
    no_gpu = GPUDetection((), None, "none", "no NVIDIA driver found")

    with pytest.raises(ProfileError, match=r"cpu\.yaml"):
        pick_profile(load_profiles([tmp_path]), no_gpu)


# --------------------------------------------------------------------- bad profile files


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vram_min_mib": "lots"}, "vram_min_mib"),
        ({"vram_min_mib": None}, "gpu profile without vram_min_mib"),
        ({"steps": "many"}, "steps"),
        ({"accelerator": "tpu"}, "accelerator"),
        ({"name": "rtx4090"}, "set name: broken"),  # a copied file that kept the old name
    ],
    ids=[
        "threshold not a number",
        "gpu without threshold",
        "steps not a number",
        "accelerator",
        "name",
    ],
)
def test_a_profile_with_a_bad_value_is_an_error_naming_the_file(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = write_profile(tmp_path, "broken", **changes)

    with pytest.raises(ConfigFileError, match=message) as raised:
        load_profiles([BUILTIN, tmp_path])

    assert str(path) in str(raised.value)


def test_a_profile_without_vram_min_mib_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "broken")
    path.write_text(
        "\n".join(line for line in path.read_text().splitlines() if "vram_min" not in line)
    )

    with pytest.raises(ConfigFileError, match="does not set vram_min_mib") as raised:
        read_profile(path)

    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: broken\nsteps: [1, 2\n", "is not valid YAML at line 3"),
        ("name: broken\nname: again\n", "the key 'name' is given twice"),
        ("- a\n- b\n", "not a mapping"),
        ("", "empty"),
    ],
    ids=["invalid YAML", "duplicate key", "a list", "empty"],
)
def test_an_unreadable_profile_file_is_an_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "profile" / "broken.yaml"
    path.parent.mkdir()
    path.write_text(text)

    with pytest.raises(ConfigFileError, match=message) as raised:
        load_profiles([BUILTIN, tmp_path])

    assert str(path) in str(raised.value)


# ------------------------------------------------------------ duplicate names across dirs


def test_the_first_dir_wins_for_a_profile_defined_twice(tmp_path: Path) -> None:
    mine = write_profile(tmp_path, "rtx3080", vram_min_mib=9000, accelerator="gpu")

    assert profile_files([BUILTIN, tmp_path])["rtx3080"] == BUILTIN / "profile" / "rtx3080.yaml"
    assert profile_files([tmp_path, BUILTIN])["rtx3080"] == mine
    assert pick_profile(load_profiles([tmp_path, BUILTIN]), detection_with(8192)).name == (
        "low_vram"
    )


def test_profile_order_matches_what_hydra_composes_for_a_user_config_dir(tmp_path: Path) -> None:
    """load_config searches the user's dir before avatar's (a user's profile shadows the
    built-in one, issue 10), so the thresholds must too."""
    write_profile(tmp_path, "rtx3080", vram_min_mib=9000)
    (tmp_path / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\n")

    composed = load_config(["profile=rtx3080"], config_file=tmp_path / "mine.yaml")
    first = read_profile(profile_files([tmp_path, BUILTIN])["rtx3080"])

    assert composed.profile.vram_min_mib == first.vram_min_mib == 9000


@pytest.mark.parametrize(
    "text",
    [
        "name: p\nvram_min_mib: 1e3\nsteps: 1_000\nwhen: 2001-12-14\nok: yes\n",
        "name: p\nvram_min_mib: null\nnote: ${profile.steps}\n",
        "name: p\nname: q\n",  # a duplicate key
        "name: [unclosed\n",  # not YAML
        "a:\n  b: 1\n  b: 2\n",  # a duplicate key, deeper
        "",
        "- a list\n",
    ],
)
def test_yaml_files_read_the_same_with_or_without_libyaml(
    tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Profile and config files are parsed by libyaml for speed; what comes out, or the
    error a user reads, is what the pure-Python loader gives."""
    from avatar.config import yaml_files

    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")

    def read() -> object:
        try:
            return yaml_files.read_yaml_file(path, what="Profile file")
        except ConfigFileError as exc:
            return f"error: {exc}"

    fast = read()
    monkeypatch.setattr(yaml_files, "_fast_loader", lambda: None)
    assert fast == read()


def test_an_edited_profile_file_is_read_again(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "mine", vram_min_mib=30000)
    assert read_profile(path).vram_min_mib == 30000
    first = load_profiles([tmp_path])

    write_profile(tmp_path, "mine", vram_min_mib=31000, description="a longer text, new size")

    assert first[0].vram_min_mib == 30000
    assert [p.vram_min_mib for p in load_profiles([tmp_path])] == [31000]
