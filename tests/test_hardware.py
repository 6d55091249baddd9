"""GPU detection against a fake NVML: which GPUs are visible, which one is chosen, which
profile that gives, and that every failure ends in CPU mode with exactly one warning."""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes import FakeCuda, FakeGPU, FakeNvmlModule, fake_nvml_env, fake_torch
from omegaconf import OmegaConf

from avatar import detect_gpu, get_hardware_profile
from avatar.config.files import builtin_conf_dir
from avatar.config.profiles import load_profiles, pick_profile
from avatar.errors import GPUSelectionError
from avatar.hardware.detect import choose_gpu
from avatar.hardware.types import GPUDetection, GPUInfo
from avatar.hardware.visible import parse_visible_devices

FakeNvml = Callable[..., FakeNvmlModule]
GIB = 1024  # MiB: the "8 GB" is 8192 MiB

UUIDS = (
    "GPU-1f2e3d4c-0000-1111-2222-333344445555",
    "GPU-9a8b7c6d-0000-1111-2222-333344445555",
)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def two_gpus() -> list[FakeGPU]:
    """A laptop-like box: NVML lists the small card first (PCI order)."""
    return [
        FakeGPU("NVIDIA GeForce RTX 3050 Laptop", total_mib=4 * GIB, used_mib=500, uuid=UUIDS[0]),
        FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10 * GIB, used_mib=1000, uuid=UUIDS[1]),
    ]


# ------------------------------------------------------------- CUDA_VISIBLE_DEVICES


# The rules are CUDA's as torch.cuda._parse_visible_devices mirrors them.


@pytest.mark.parametrize(
    ("value", "nvml_indices"),
    [
        (None, (0, 1)),
        ("0", (0,)),
        ("1", (1,)),
        ("1,0", (1, 0)),  # CUDA order follows the variable
        (" 1 , 0 ", (1, 0)),
        ("1gpu2", (1,)),  # read like strtoul
        (UUIDS[1], (1,)),
        ("GPU-9a8b", (1,)),  # a unique prefix is enough
        (f"GPU-9a8b,{UUIDS[0]}", (1, 0)),
    ],
)
def test_visible_devices_select_and_order_gpus(value: str | None, nvml_indices: tuple) -> None:
    visible = parse_visible_devices(value, UUIDS)

    assert visible.nvml_indices == nvml_indices
    assert visible.problem is None


@pytest.mark.parametrize(
    "value", ["", "  ", "-1", "2", "abc", "GPU-", "GPU-ffff", "²", "-1,0"], ids=repr
)
def test_visible_devices_that_name_no_gpu_hide_every_gpu_and_say_why(value: str) -> None:
    visible = parse_visible_devices(value, UUIDS)

    assert visible.nvml_indices == ()
    assert "CUDA_VISIBLE_DEVICES" in visible.problem


@pytest.mark.parametrize(
    "value",
    ["0,0", "1,0,1", "0,5,0", f"{UUIDS[1]},GPU-9a8b", f"{UUIDS[0]},{UUIDS[0]}"],
)
def test_visible_devices_naming_a_gpu_twice_hide_every_gpu(value: str) -> None:
    visible = parse_visible_devices(value, UUIDS)

    assert visible.nvml_indices == ()
    assert "twice" in visible.problem


@pytest.mark.parametrize(
    ("value", "nvml_indices"),
    [
        ("1,7,0", (1,)),
        ("0,garbage,1", (0,)),
        ("1,-1,0", (1,)),
        (f"1,{UUIDS[0]}", (1,)),  # the first entry decides: indices, or UUIDs
        (f"{UUIDS[1]},0", (1,)),
        (f"{UUIDS[1]},GPU-ffff,{UUIDS[0]}", (1,)),
    ],
)
def test_visible_devices_stop_at_the_first_entry_that_names_no_gpu(
    value: str, nvml_indices: tuple
) -> None:
    visible = parse_visible_devices(value, UUIDS)

    assert visible.nvml_indices == nvml_indices
    assert "later entries are ignored" in visible.problem


def test_ambiguous_uuid_prefix_names_no_gpu() -> None:
    assert parse_visible_devices("GPU-", ["GPU-aa", "GPU-ab"]).nvml_indices == ()
    assert parse_visible_devices("GPU-a", ["GPU-aa", "GPU-ab"]).nvml_indices == ()
    assert parse_visible_devices("GPU-ab", ["GPU-aa", "GPU-ab"]).nvml_indices == (1,)


# ------------------------------------------------------------------- choosing a GPU


def gpu(index: int, free_mib: float, total_mib: float = 10 * GIB) -> GPUInfo:
    return GPUInfo(index, f"GPU{index}", total_mib, total_mib - free_mib, free_mib)


def test_choose_gpu_takes_the_one_with_most_free_memory() -> None:
    assert choose_gpu([gpu(0, 1000), gpu(1, 3000), gpu(2, 2000)], None).index == 1


def test_choose_gpu_breaks_a_tie_by_lowest_index() -> None:
    assert choose_gpu([gpu(0, 2000), gpu(1, 2000)], None).index == 0


def test_choose_gpu_takes_the_gpu_index_asked_for() -> None:
    assert choose_gpu([gpu(0, 1000), gpu(1, 3000)], 0).index == 0


@pytest.mark.parametrize("bad_index", [2, -1])
def test_choose_gpu_rejects_an_index_that_is_not_visible(bad_index: int) -> None:
    with pytest.raises(GPUSelectionError, match=rf"gpu_index={bad_index}.*0, 1"):
        choose_gpu([gpu(0, 1000), gpu(1, 3000)], bad_index)


def test_choose_gpu_without_gpus_is_cpu_mode() -> None:
    assert choose_gpu([], None) is None


# ------------------------------------------------------------------ detect_gpu + NVML


def test_no_driver_gives_cpu_mode_with_one_warning(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml(library_missing=True)

    detection = detect_gpu(other_gpu_may_exist=lambda: False)

    assert detection.cpu_mode and detection.device == "cpu"
    assert detection.gpus == ()
    assert len(warnings_logged(caplog)) == 1
    assert "no NVIDIA driver" in warnings_logged(caplog)[0]


def test_missing_bindings_give_cpu_mode_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)

    detection = detect_gpu(other_gpu_may_exist=lambda: False)

    assert detection.cpu_mode
    assert len(warnings_logged(caplog)) == 1


def test_driver_without_gpus_gives_cpu_mode_with_one_warning(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml([])

    detection = detect_gpu()

    assert detection.cpu_mode
    assert len(warnings_logged(caplog)) == 1


def test_one_gpu_is_found_with_its_memory_and_chosen(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    card = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)
    nv = fake_nvml([card])

    detection = detect_gpu()

    assert detection.backend == "nvml"
    assert detection.device == "cuda:0"
    chosen = detection.chosen
    assert (chosen.name, chosen.uuid, chosen.nvml_index) == (card.name, card.uuid, 0)
    assert (chosen.total_mib, chosen.used_mib, chosen.free_mib) == (10240, 300, 9940)
    assert warnings_logged(caplog) == []
    assert nv.initialized == 0  # the session was shut down


def test_several_gpus_are_listed_and_the_one_with_most_free_memory_chosen(
    fake_nvml: FakeNvml,
) -> None:
    fake_nvml(two_gpus())

    detection = detect_gpu()

    assert [g.name for g in detection.gpus] == [g.name for g in two_gpus()]
    assert detection.chosen.name == "NVIDIA GeForce RTX 3080"
    assert detection.device == "cuda:1"
    assert "most free memory" in detection.note


def test_gpu_index_chooses_the_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml(two_gpus())

    detection = detect_gpu(0)

    assert detection.chosen.name == "NVIDIA GeForce RTX 3050 Laptop"
    assert "gpu_index" in detection.note


def test_gpu_index_that_is_not_visible_is_a_user_error(fake_nvml: FakeNvml) -> None:
    fake_nvml(two_gpus())

    with pytest.raises(GPUSelectionError, match="gpu_index=2"):
        detect_gpu(2)


def test_visible_devices_renumber_gpus_as_cuda_does(fake_nvml: FakeNvml) -> None:
    fake_nvml(two_gpus())

    detection = detect_gpu(0, env={"CUDA_VISIBLE_DEVICES": "1,0"})

    assert [(g.index, g.nvml_index) for g in detection.gpus] == [(0, 1), (1, 0)]
    assert detection.chosen.name == "NVIDIA GeForce RTX 3080"
    assert detection.device == "cuda:0"


def test_visible_devices_by_uuid_prefix_hide_the_other_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml(two_gpus())

    detection = detect_gpu(env={"CUDA_VISIBLE_DEVICES": UUIDS[0][:12]})

    assert [g.name for g in detection.gpus] == ["NVIDIA GeForce RTX 3050 Laptop"]


def test_visible_devices_are_read_from_the_process_environment(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(two_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")

    assert [g.name for g in detect_gpu().gpus] == ["NVIDIA GeForce RTX 3050 Laptop"]


@pytest.mark.parametrize("value", ["", "-1", "5", "garbage", "0,0"])
def test_visible_devices_that_hide_every_gpu_give_cpu_mode_with_one_warning(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    fake_nvml(two_gpus())

    detection = detect_gpu(env={"CUDA_VISIBLE_DEVICES": value})

    assert detection.cpu_mode
    assert len(warnings_logged(caplog)) == 1
    assert "CUDA_VISIBLE_DEVICES" in warnings_logged(caplog)[0]


def test_visible_devices_that_stop_early_keep_the_gpus_before_with_one_warning(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml(two_gpus())

    detection = detect_gpu(env={"CUDA_VISIBLE_DEVICES": "1,7"})

    assert [g.nvml_index for g in detection.gpus] == [1]
    assert len(warnings_logged(caplog)) == 1
    assert "'7'" in warnings_logged(caplog)[0]


def test_mig_instance_in_visible_devices_is_found_by_uuid(fake_nvml: FakeNvml) -> None:
    mig = FakeGPU("NVIDIA A100 MIG 3g.20gb", total_mib=19968, used_mib=13, uuid="MIG-4a5b-6c7d")
    fake_nvml([FakeGPU("NVIDIA A100", 40960)], mig_devices=[mig])

    detection = detect_gpu(env={"CUDA_VISIBLE_DEVICES": mig.uuid})

    assert [(g.name, g.total_mib, g.uuid) for g in detection.gpus] == [(mig.name, 19968, mig.uuid)]
    assert detection.device == "cuda:0"


@pytest.mark.parametrize(
    ("fail_on", "visible"),
    [
        ("nvmlInit", None),
        ("nvmlDeviceGetCount", None),
        ("nvmlDeviceGetHandleByIndex", None),
        ("nvmlDeviceGetName", None),
        ("nvmlDeviceGetUUID", None),
        ("nvmlDeviceGetMemoryInfo", None),
        ("nvmlDeviceGetHandleByUUID", "MIG-4a5b-6c7d"),
    ],
)
def test_an_nvml_error_mid_query_gives_cpu_mode_with_one_warning(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture, fail_on: str, visible: str | None
) -> None:
    mig = FakeGPU("NVIDIA A100 MIG 3g.20gb", total_mib=19968, uuid="MIG-4a5b-6c7d")
    nv = fake_nvml(two_gpus(), fail_on=fail_on, mig_devices=[mig])
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    probed: list[bool] = []

    detection = detect_gpu(
        env=env, other_gpu_may_exist=lambda: True, torch_probe=lambda: probed.append(True) or []
    )

    assert fail_on in nv.calls
    assert detection.cpu_mode
    assert len(warnings_logged(caplog)) == 1
    assert fail_on in warnings_logged(caplog)[0]
    assert probed == []  # a driver is there: torch would not find more
    assert nv.initialized == 0


def test_old_driver_without_v2_memory_info_still_detects_the_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml(
        [FakeGPU("Tesla T4", total_mib=15360, used_mib=0, reserved_mib=250)], v2_supported=False
    )

    detection = detect_gpu()

    assert detection.chosen.total_mib == 15360
    assert detection.chosen.used_mib == 250  # v1: the driver's share counts as used
    assert detection.chosen.free_mib == 15360 - 250


# ------------------------------------------------------------- torch as a fallback


def test_torch_is_not_tried_on_a_machine_that_cannot_have_another_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml(library_missing=True)

    def probe() -> list[GPUInfo]:
        raise AssertionError("torch must not be imported here")

    assert detect_gpu(other_gpu_may_exist=lambda: False, torch_probe=probe).cpu_mode


def test_torch_missing_on_a_rocm_or_mps_machine_gives_cpu_mode_with_one_warning(
    fake_nvml: FakeNvml, no_torch: None, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml(library_missing=True)

    detection = detect_gpu(other_gpu_may_exist=lambda: True)  # the real probe imports torch

    assert detection.cpu_mode
    assert len(warnings_logged(caplog)) == 1
    assert "torch is not installed" in warnings_logged(caplog)[0]


def test_torch_failing_on_a_rocm_machine_gives_cpu_mode_with_one_warning(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml(library_missing=True)

    def probe() -> list[GPUInfo]:
        raise RuntimeError("HIP error: no ROCm-capable device is detected")

    detection = detect_gpu(other_gpu_may_exist=lambda: True, torch_probe=probe)

    assert detection.cpu_mode
    assert len(warnings_logged(caplog)) == 1
    assert "HIP error" in warnings_logged(caplog)[0]


def test_torch_seeing_no_gpu_gives_cpu_mode_with_one_warning(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(library_missing=True)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(FakeCuda(initialized=False)))

    detection = detect_gpu(other_gpu_may_exist=lambda: True)

    assert detection.cpu_mode
    assert len(warnings_logged(caplog)) == 1


def test_rocm_gpu_is_found_through_torch_without_nvml(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(library_missing=True)
    card = FakeGPU("AMD Radeon RX 7900 XTX", total_mib=24 * GIB, used_mib=1024)
    cuda = FakeCuda(initialized=False, gpu=card)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda, hip="6.0"))

    detection = detect_gpu(other_gpu_may_exist=lambda: True)

    assert detection.backend == "torch"
    assert (detection.chosen.name, detection.chosen.backend) == (card.name, "rocm")
    assert (detection.chosen.total_mib, detection.chosen.free_mib) == (24 * GIB, 23 * GIB)
    assert detection.device == "cuda:0"
    assert warnings_logged(caplog) == []


# ------------------------------------------------- thresholds: detection -> profile


def gpu_thresholds_mib() -> dict[str, int]:
    """vram_min_mib of each built-in GPU profile, read from the YAML files themselves."""
    found = {}
    for path in sorted((builtin_conf_dir() / "profile").glob("*.yaml")):
        data = OmegaConf.load(path)
        if data.accelerator == "gpu":
            found[path.stem] = data.vram_min_mib
    return found


def boundary_cases() -> list[tuple[float, str]]:
    """For each threshold T above 0: 0.01 GB below T picks the next profile down, T picks it."""
    ordered = sorted(gpu_thresholds_mib().items(), key=lambda item: item[1])
    cases = []
    for (lower, _), (name, threshold) in itertools.pairwise(ordered):
        cases += [(threshold - 0.01 * GIB, lower), (threshold, name)]
    return cases


def test_builtin_thresholds_are_8_and_20_gb() -> None:
    assert sorted(gpu_thresholds_mib().values()) == [0, 8 * GIB, 20 * GIB]


@pytest.mark.parametrize(("total_mib", "expected"), boundary_cases())
def test_pick_profile_at_each_threshold_boundary(total_mib: float, expected: str) -> None:
    card = GPUInfo(0, "test card", total_mib, 0.0, total_mib)
    detection = GPUDetection((card,), card, "nvml", "test")

    assert pick_profile(load_profiles([builtin_conf_dir()]), detection).name == expected


@pytest.mark.parametrize(("total_mib", "expected"), boundary_cases())
def test_get_hardware_profile_at_each_threshold_boundary(
    fake_nvml: FakeNvml, total_mib: float, expected: str
) -> None:
    fake_nvml([FakeGPU("test card", total_mib=total_mib, used_mib=total_mib / 2)])

    assert get_hardware_profile() == expected


def test_get_hardware_profile_picks_by_the_chosen_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml(two_gpus())

    assert get_hardware_profile() == "rtx3080"  # the 10 GB card has the most free memory
    assert get_hardware_profile(detect_gpu(0)) == "low_vram"


def test_get_hardware_profile_without_a_gpu_is_the_cpu_profile(fake_nvml: FakeNvml) -> None:
    fake_nvml(library_missing=True)

    assert get_hardware_profile() == "cpu"


# ------------------------------------------------------------------- no torch on status


def test_status_run_never_imports_torch(tmp_path: Path) -> None:
    env = fake_nvml_env([FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)])

    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "avatar"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "rtx3080" in result.stdout  # the fake GPU was seen
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "pynvml" in imported
    assert not [name for name in imported if name.split(".")[0] == "torch"]


# --------------------------------------------------------------- CUDA numbering = NVML's


def test_detection_makes_cuda_number_gpus_in_nvml_order(fake_nvml: FakeNvml) -> None:
    fake_nvml(two_gpus())

    detection = detect_gpu()

    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # else cuda:1 may be another card
    assert detection.device == "cuda:1"


def test_detection_keeps_a_cuda_device_order_the_user_set(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(two_gpus())
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")

    detect_gpu()

    assert os.environ["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"


def test_detection_after_torch_initialised_cuda_warns_that_the_numbers_may_differ(
    fake_nvml: FakeNvml,
    fake_torch_cuda: Callable[..., FakeCuda],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Too late to reorder this process's CUDA: with two different cards, say so once."""
    fake_nvml(two_gpus())
    fake_torch_cuda(initialized=True)

    with caplog.at_level(logging.WARNING):
        detect_gpu()
        detect_gpu()  # the variable is set now: no second warning

    late = [m for m in warnings_logged(caplog) if "fastest-first" in m]
    assert len(late) == 1
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in late[0]


@pytest.mark.parametrize(
    ("cuda_initialized", "gpus"),
    [
        (False, two_gpus()),  # CUDA starts later and reads the variable: nothing to say
        (True, [two_gpus()[1], two_gpus()[1]]),  # identical cards: both orders agree
    ],
    ids=["torch_imported_cuda_not_started", "identical_cards"],
)
def test_detection_after_torch_stays_quiet_when_the_order_cannot_differ(
    fake_nvml: FakeNvml,
    fake_torch_cuda: Callable[..., FakeCuda],
    caplog: pytest.LogCaptureFixture,
    cuda_initialized: bool,
    gpus: list[FakeGPU],
) -> None:
    fake_nvml(gpus)
    fake_torch_cuda(initialized=cuda_initialized)

    with caplog.at_level(logging.WARNING):
        detect_gpu()

    assert warnings_logged(caplog) == []
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_detection_with_an_explicit_env_leaves_the_process_env_alone(fake_nvml: FakeNvml) -> None:
    fake_nvml(two_gpus())

    detect_gpu(env={"CUDA_VISIBLE_DEVICES": "1"})

    assert "CUDA_DEVICE_ORDER" not in os.environ
