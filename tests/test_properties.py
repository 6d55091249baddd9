"""Properties that must hold for every input, checked with hypothesis.

- The auto choice is monotonic in VRAM and agrees with the thresholds the profile files
  declare (read here straight from the YAML), also with a user's own profiles added.
- The command line always wins the config cascade (command line > user YAML > profile).
- `can_load` is monotonic in the size asked for and in the safety margin.
- Any CUDA_VISIBLE_DEVICES value gives a list of real, distinct GPUs, never a crash.

Example counts are modest: composing a config costs a fraction of a second.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

import pytest
import yaml
from fakes import FakeCuda, FakeGPU, FakeNvmlModule, fake_pynvml, fake_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avatar import VRAMManager, detect_gpu, load_config
from avatar.config.files import builtin_conf_dir
from avatar.config.profiles import ProfileSpec, load_profiles, pick_profile
from avatar.hardware.nvml import Nvml
from avatar.hardware.types import GPUDetection, GPUInfo

FakeNvml = Callable[..., FakeNvmlModule]
FIXTURES_PER_EXAMPLE = [HealthCheck.function_scoped_fixture]  # fakes are re-installed per example
MAX_VRAM_MIB = 200_000


@cache
def declared_profiles() -> dict[str, dict]:
    """Every built-in profile file as written: name -> its YAML mapping."""
    folder = builtin_conf_dir() / "profile"
    return {path.stem: yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))}


@cache
def builtin_profiles() -> list[ProfileSpec]:
    """avatar's own profiles as avatar reads them (read once: the files do not change)."""
    return load_profiles([builtin_conf_dir()])


def declared_thresholds(extra: Mapping[str, int] | None = None) -> dict[str, int | None]:
    thresholds = {name: data["vram_min_mib"] for name, data in declared_profiles().items()}
    return {**thresholds, **(extra or {})}


def one_gpu(total_mib: float) -> GPUDetection:
    gpu = GPUInfo(index=0, name="Fake GPU", total_mib=total_mib, used_mib=0, free_mib=total_mib)
    return GPUDetection((gpu,), gpu, "nvml", "test")


def vram_totals() -> st.SearchStrategy[int]:
    """Any size, with each declared threshold and its neighbours drawn often.

    From 1 MiB: a device answering a total of 0 shares its memory with the host, and
    detection asks torch about it instead (tests/test_driver_answers.py).
    """
    edges = [t for t in declared_thresholds().values() if t is not None]
    near_edge = st.sampled_from(edges).flatmap(lambda t: st.integers(max(1, t - 1), t + 1))
    return st.one_of(st.integers(1, MAX_VRAM_MIB), near_edge)


def assert_agrees_with_thresholds(
    chosen: str, total_mib: int, thresholds: Mapping[str, int | None]
) -> None:
    """The chosen profile's threshold is met, and no GPU profile with a larger one is."""
    met = [t for t in thresholds.values() if t is not None and total_mib >= t]
    if not met:
        assert thresholds[chosen] is None, f"{total_mib} MiB meets no threshold: the CPU profile"
        return
    assert thresholds[chosen] is not None and total_mib >= thresholds[chosen]
    assert thresholds[chosen] == max(met)


def rank(name: str, thresholds: Mapping[str, int | None]) -> int:
    threshold = thresholds[name]
    return -1 if threshold is None else threshold


# ------------------------------------------------------------------ the auto choice


@settings(max_examples=150, deadline=None)
@given(a=vram_totals(), b=vram_totals())
def test_auto_choice_is_monotonic_in_vram_and_agrees_with_the_profile_files(a: int, b: int) -> None:
    small, large = sorted((a, b))
    profiles = builtin_profiles()
    thresholds = declared_thresholds()

    choice_small = pick_profile(profiles, one_gpu(small)).name
    choice_large = pick_profile(profiles, one_gpu(large)).name

    assert_agrees_with_thresholds(choice_small, small, thresholds)
    assert_agrees_with_thresholds(choice_large, large, thresholds)
    assert rank(choice_small, thresholds) <= rank(choice_large, thresholds)


PROFILE_NAMES = st.from_regex(r"[a-z][a-z0-9_]{1,8}", fullmatch=True).filter(
    lambda name: name not in declared_profiles() and name != "auto"
)


def write_profile(folder: Path, name: str, vram_min_mib: int) -> None:
    data = {**declared_profiles()["rtx3080"], "name": name, "vram_min_mib": vram_min_mib}
    data.pop("defaults", None)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))


@settings(max_examples=20, deadline=None)
@given(
    # Each threshold its own: two GPU profiles with one threshold are an error (issue 10).
    extra=st.dictionaries(
        PROFILE_NAMES, st.integers(0, MAX_VRAM_MIB), min_size=1, max_size=3
    ).filter(
        lambda d: (
            len(set(d.values())) == len(d)
            and not set(d.values()) & {p.get("vram_min_mib") for p in declared_profiles().values()}
        )
    ),
    totals=st.lists(vram_totals(), min_size=2, max_size=4),
)
def test_auto_choice_agrees_with_a_users_own_profile_files(
    extra: dict[str, int], totals: list[int]
) -> None:
    thresholds = declared_thresholds(extra)
    with tempfile.TemporaryDirectory() as tmp:
        user_dir = Path(tmp)
        (user_dir / "profile").mkdir()
        for name, vram_min_mib in extra.items():
            write_profile(user_dir / "profile", name, vram_min_mib)
        profiles = load_profiles([builtin_conf_dir(), user_dir])

        choices = [pick_profile(profiles, one_gpu(total)).name for total in sorted(totals)]

    for total, chosen in zip(sorted(totals), choices, strict=True):
        assert_agrees_with_thresholds(chosen, total, thresholds)
    ranks = [rank(chosen, thresholds) for chosen in choices]
    assert ranks == sorted(ranks)


# ------------------------------------------------------------------ the cascade

KNOBS = st.fixed_dictionaries(
    {}, optional={"steps": st.integers(1, 500), "batch_size": st.integers(1, 64)}
)
BUILTIN_PROFILES = sorted(declared_profiles())


@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURES_PER_EXAMPLE)
@given(
    total_mib=vram_totals(),
    cli_profile=st.none() | st.sampled_from(BUILTIN_PROFILES),
    env_profile=st.none() | st.sampled_from(BUILTIN_PROFILES),
    cli=KNOBS,
    user=KNOBS,
)
def test_the_command_line_always_wins_the_cascade(
    fake_nvml: FakeNvml,
    monkeypatch: pytest.MonkeyPatch,
    total_mib: int,
    cli_profile: str | None,
    env_profile: str | None,
    cli: dict[str, int],
    user: dict[str, int],
) -> None:
    fake_nvml([FakeGPU("Fake GPU", total_mib=total_mib)])
    if env_profile is None:
        monkeypatch.delenv("AVATAR_PROFILE", raising=False)
    else:
        monkeypatch.setenv("AVATAR_PROFILE", env_profile)
    overrides = [f"{key}={value}" for key, value in cli.items()]
    if cli_profile is not None:
        overrides.append(f"profile={cli_profile}")

    with tempfile.TemporaryDirectory() as tmp:
        config_file = None
        if user:
            config_file = Path(tmp) / "mine.yaml"
            config_file.write_text(yaml.safe_dump({"defaults": ["config", "_self_"], **user}))
        cfg = load_config(overrides, config_file=config_file)

    active = str(cfg.profile.name)
    if cli_profile is not None:
        assert active == cli_profile
    elif env_profile is not None:
        assert active == env_profile
    else:
        assert_agrees_with_thresholds(active, total_mib, declared_thresholds())
    for key in ("steps", "batch_size"):
        expected = cli.get(key, user.get(key, declared_profiles()[active][key]))
        assert cfg[key] == expected, f"{key}: command line {cli}, user YAML {user}, {active}"


# ------------------------------------------------------------------ can_load

SIZES_MIB = st.floats(0, 2 * MAX_VRAM_MIB, allow_nan=False, allow_infinity=False)


@st.composite
def gpu_states(draw: st.DrawFn) -> tuple[FakeGPU, FakeCuda | None]:
    """A GPU with some memory in use, and maybe torch holding a cache on it."""
    total = draw(st.integers(1024, MAX_VRAM_MIB))
    gpu = FakeGPU("Fake GPU", total_mib=total, used_mib=draw(st.integers(0, total)))
    if not draw(st.booleans()):
        return gpu, None
    reserved = draw(st.integers(0, int(gpu.used_mib)))
    allocated = draw(st.integers(0, reserved))
    return gpu, FakeCuda(reserved_mib=reserved, allocated_mib=allocated, gpu=gpu)


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES_PER_EXAMPLE)
@given(
    state=gpu_states(),
    sizes=st.lists(SIZES_MIB, min_size=2, max_size=2),
    margins=st.lists(SIZES_MIB, min_size=2, max_size=2),
)
def test_can_load_is_monotonic_in_size_and_margin(
    monkeypatch: pytest.MonkeyPatch,
    state: tuple[FakeGPU, FakeCuda | None],
    sizes: list[float],
    margins: list[float],
) -> None:
    gpu, cuda = state
    if cuda is None:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda))
    nv = fake_pynvml([gpu])
    manager = VRAMManager(
        detection=detect_gpu(nvml_factory=lambda: Nvml(nv)), nvml_factory=lambda: Nvml(nv)
    )
    small, large = sorted(sizes)
    low, high = sorted(margins)

    try:
        for margin in (low, high):  # a smaller model fits wherever a larger one does
            assert manager.can_load(small, margin) or not manager.can_load(large, margin)
        for size in (small, large):  # a smaller margin fits wherever a larger one does
            assert manager.can_load(size, low) or not manager.can_load(size, high)
        available = manager.get_status().available_mib
        assert manager.can_load(max(0.0, available - low), low) == (available >= low)
    finally:
        manager.close()


@settings(max_examples=25, deadline=None)
@given(size=SIZES_MIB, margin=SIZES_MIB)
def test_cpu_mode_can_load_any_size(size: float, margin: float) -> None:
    manager = VRAMManager()  # the autouse fake NVML has no driver: CPU mode
    assert manager.can_load(size, margin)


# ------------------------------------------------------------------ CUDA_VISIBLE_DEVICES

UUIDS = ("GPU-1f2e3d4c-aaaa-bbbb", "GPU-1f9a8b7c-cccc-dddd", "GPU-77665544-eeee-ffff")
BAD_OR_ODD = ("3", "-1", "01", "1gpu", "x", "", " 1 ", "GPU-1f", "GPU-1f2e", "GPU-7", "MIG-1")
ENTRIES = st.sampled_from(("0", "1", "2", *BAD_OR_ODD, *UUIDS))
VISIBLE_VALUES = st.one_of(st.text(max_size=30), st.lists(ENTRIES, max_size=5).map(",".join))


@settings(max_examples=150, deadline=None)
@given(value=VISIBLE_VALUES)
def test_any_cuda_visible_devices_value_gives_real_distinct_gpus(value: str) -> None:
    gpus = [FakeGPU(f"GPU {i}", total_mib=8192 * (i + 1), uuid=u) for i, u in enumerate(UUIDS)]
    nv = fake_pynvml(gpus)

    detection = detect_gpu(env={"CUDA_VISIBLE_DEVICES": value}, nvml_factory=lambda: Nvml(nv))

    uuids = [gpu.uuid for gpu in detection.gpus]
    assert set(uuids) <= set(UUIDS)
    assert len(uuids) == len(set(uuids))
    assert [gpu.index for gpu in detection.gpus] == list(range(len(detection.gpus)))
    assert detection.cpu_mode == (not detection.gpus)
    assert nv.initialized == 0
