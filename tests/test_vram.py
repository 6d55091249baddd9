"""The VRAM manager against a fake NVML and a fake `torch.cuda`: the numbers a stage sees,
whether a model fits, and what a cleanup gives back, without ever creating a CUDA context."""

from __future__ import annotations

import gc
import importlib.abc
import logging
import math
import sys
from collections.abc import Callable

import pytest
from fakes import FakeCuda, FakeGPU, FakeNvmlModule, fake_torch

from avatar import VRAMManager, detect_gpu
from avatar.vram.status import DEFAULT_SAFETY_MARGIN_MIB

FakeNvml = Callable[..., FakeNvmlModule]
FakeTorchCuda = Callable[..., FakeCuda]


@pytest.fixture
def card(fake_nvml: FakeNvml) -> FakeGPU:
    """One RTX 3080 behind the fake NVML: 10240 MiB, 2240 used, 8000 free."""
    gpu = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=2240)
    fake_nvml([gpu])
    return gpu


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def test_default_safety_margin_is_512_mib() -> None:
    assert DEFAULT_SAFETY_MARGIN_MIB == 512


# ------------------------------------------------------------------------- get_status


def test_status_reads_total_used_and_free_from_nvml(card: FakeGPU) -> None:
    status = VRAMManager().get_status()

    assert status.device == "cuda:0"
    assert (status.total_mib, status.used_mib, status.free_mib) == (10240, 2240, 8000)
    assert (status.torch_reserved_mib, status.torch_allocated_mib) == (0, 0)
    assert status.available_mib == 8000
    assert status.ok


def test_status_follows_memory_as_it_changes(card: FakeGPU) -> None:
    manager = VRAMManager()
    card.used_mib += 3000  # another stage loaded a model

    assert manager.get_status().free_mib == 5000


def test_torch_cache_held_but_unused_counts_as_available(
    card: FakeGPU, fake_torch_cuda: FakeTorchCuda
) -> None:
    fake_torch_cuda(reserved_mib=2048, allocated_mib=512, gpu=card)

    status = VRAMManager().get_status()

    assert (status.torch_reserved_mib, status.torch_allocated_mib) == (2048, 512)
    assert status.reclaimable_mib == 1536
    assert status.available_mib == 8000 + 1536


def test_torch_imported_without_cuda_adds_nothing_and_reads_no_context(
    card: FakeGPU, fake_torch_cuda: FakeTorchCuda
) -> None:
    cuda = fake_torch_cuda(initialized=False, reserved_mib=2048, allocated_mib=512, gpu=card)

    status = VRAMManager().get_status()

    assert (status.torch_reserved_mib, status.available_mib) == (0, 8000)
    assert cuda.mem_get_info_calls == 0 and not cuda.initialized


def test_the_gpu_asked_for_is_the_one_reported(fake_nvml: FakeNvml) -> None:
    fake_nvml([FakeGPU("small", total_mib=4096, used_mib=96), FakeGPU("big", total_mib=24576)])

    assert VRAMManager(0).get_status().total_mib == 4096
    assert VRAMManager().get_status().total_mib == 24576  # most free memory
    assert VRAMManager(0, detection=detect_gpu()).get_status().total_mib == 4096


def test_a_mig_instance_is_read_by_uuid(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    mig = FakeGPU("NVIDIA A100 MIG 3g.20gb", total_mib=19968, used_mib=968, uuid="MIG-4a5b-6c7d")
    fake_nvml([FakeGPU("NVIDIA A100", 40960)], mig_devices=[mig])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig.uuid)

    status = VRAMManager().get_status()

    assert (status.total_mib, status.free_mib) == (19968, 19000)


def test_rocm_status_is_read_through_torch_once_it_initialised_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = FakeGPU("AMD Radeon RX 7900 XTX", total_mib=24576, used_mib=1000)
    cuda = FakeCuda(initialized=False, gpu=card, reserved_mib=1024, allocated_mib=256)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda, hip="6.0"))
    detection = detect_gpu(other_gpu_may_exist=lambda: True)  # the probe initialises the device
    card.used_mib += 2000  # a model loaded since

    status = VRAMManager(detection=detection).get_status()

    assert (status.total_mib, status.free_mib, status.reclaimable_mib) == (24576, 21576, 768)


def test_rocm_status_without_an_initialised_device_creates_no_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = FakeGPU("AMD Radeon RX 7900 XTX", total_mib=24576, used_mib=1000)
    cuda = FakeCuda(initialized=False, gpu=card)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda, hip="6.0"))
    detection = detect_gpu(other_gpu_may_exist=lambda: True)
    cuda.initialized, cuda.mem_get_info_calls = False, 0  # as in a fresh process

    status = VRAMManager(detection=detection).get_status()

    assert (status.total_mib, status.free_mib) == (24576, 23576)  # detection's snapshot
    assert cuda.mem_get_info_calls == 0 and not cuda.initialized


def test_a_failed_query_reports_zeros_and_one_warning(
    card: FakeGPU, fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    detection = detect_gpu()
    fake_nvml([card], fail_on="nvmlDeviceGetMemoryInfo")  # the driver fails after detection

    status = VRAMManager(detection=detection).get_status()

    assert not status.ok
    assert (status.total_mib, status.used_mib, status.free_mib) == (0, 0, 0)
    assert len(records(caplog, logging.WARNING)) == 1
    assert "cuda:0" in records(caplog, logging.WARNING)[0]


def test_a_query_that_fails_once_recovers_on_the_next_call(
    card: FakeGPU, fake_nvml: FakeNvml
) -> None:
    detection = detect_gpu()
    nv = fake_nvml([card], fail_on="nvmlDeviceGetHandleByIndex")
    manager = VRAMManager(detection=detection)
    assert not manager.get_status().ok

    nv.fail_on = None

    assert manager.get_status().free_mib == 8000


def test_cpu_mode_reports_zeros_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    manager = VRAMManager()  # the autouse fake NVML has no driver
    caplog.clear()

    status = manager.get_status()

    assert manager.cpu_mode and status.device == "cpu"
    assert (status.total_mib, status.free_mib, status.ok) == (0, 0, True)
    assert records(caplog, logging.WARNING) == []


# ---------------------------------------------------------------------------- can_load


def test_can_load_keeps_the_default_512_mib_margin(card: FakeGPU) -> None:
    manager = VRAMManager()  # 8000 MiB free

    assert manager.can_load(8000 - 512)
    assert not manager.can_load(8000 - 511)


@pytest.mark.parametrize(("margin", "fits_mib"), [(0, 8000), (1024, 6976), (100.5, 7899.5)])
def test_can_load_boundary_with_a_given_margin(
    card: FakeGPU, margin: float, fits_mib: float
) -> None:
    manager = VRAMManager()

    assert manager.can_load(fits_mib, safety_margin_mb=margin)
    assert not manager.can_load(fits_mib + 0.5, safety_margin_mb=margin)


def test_can_load_counts_torch_cache_as_free(card: FakeGPU, fake_torch_cuda: FakeTorchCuda) -> None:
    fake_torch_cuda(reserved_mib=3000, allocated_mib=1000, gpu=card)
    manager = VRAMManager()  # 8000 free + 2000 reclaimable

    assert manager.can_load(10000 - 512)
    assert not manager.can_load(10000 - 511)


def test_can_load_says_no_when_the_query_fails(card: FakeGPU, fake_nvml: FakeNvml) -> None:
    detection = detect_gpu()
    fake_nvml([card], fail_on="nvmlDeviceGetMemoryInfo")

    assert not VRAMManager(detection=detection).can_load(1)


def test_cpu_mode_can_load_anything() -> None:
    assert VRAMManager().can_load(10**9, safety_margin_mb=10**9)


@pytest.mark.parametrize(
    ("required", "margin"),
    [
        (-1, 512),
        (100, -0.5),
        (math.nan, 512),
        (100, math.nan),
        ("100", 512),
        (True, 512),
        (None, 512),
    ],
)
@pytest.mark.parametrize("gpu_present", [True, False], ids=["gpu", "cpu"])
def test_nonsense_sizes_raise_value_error(
    fake_nvml: FakeNvml, gpu_present: bool, required: object, margin: object
) -> None:
    fake_nvml([FakeGPU("RTX 3080", 10240)] if gpu_present else [])
    manager = VRAMManager()

    with pytest.raises(ValueError, match="_mb"):
        manager.can_load(required, safety_margin_mb=margin)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- force_cleanup


def test_cleanup_empties_torch_cache_and_returns_what_it_freed(
    card: FakeGPU, fake_torch_cuda: FakeTorchCuda
) -> None:
    cuda = fake_torch_cuda(reserved_mib=3000, allocated_mib=1000, gpu=card)
    manager = VRAMManager()

    freed_mib = manager.force_cleanup()

    assert cuda.empty_cache_calls == 1
    assert freed_mib == 2000
    assert manager.get_status().free_mib == 10000


def test_cleanup_collects_a_dropped_model_caught_in_a_reference_cycle(card: FakeGPU) -> None:
    class Model:
        """Gives its VRAM back when collected, as a torch module's tensors do."""

        def __init__(self) -> None:
            card.used_mib += 4000
            self.me = self  # a cycle: only the garbage collector frees it

        def __del__(self) -> None:
            card.used_mib -= 4000

    manager = VRAMManager()
    gc.disable()
    try:
        model = Model()
        del model
        assert manager.get_status().free_mib == 4000  # still held

        assert manager.force_cleanup() == 4000
    finally:
        gc.enable()


def test_cleanup_never_touches_torch_that_did_not_initialise_cuda(
    card: FakeGPU, fake_torch_cuda: FakeTorchCuda
) -> None:
    cuda = fake_torch_cuda(initialized=False, reserved_mib=3000, allocated_mib=1000, gpu=card)

    assert VRAMManager().force_cleanup() == 0
    assert cuda.empty_cache_calls == 0
    assert not cuda.initialized


def test_cleanup_and_status_never_import_torch(
    card: FakeGPU, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    class RecordTorchImports(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *_args: object) -> None:
            if name.split(".")[0] == "torch":
                attempts.append(name)

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(sys, "meta_path", [RecordTorchImports(), *sys.meta_path])
    manager = VRAMManager()

    manager.get_status()
    manager.can_load(1000)
    manager.force_cleanup()
    manager.log_status()

    assert attempts == []


def test_a_failing_cleanup_is_logged_and_work_goes_on(
    card: FakeGPU, fake_torch_cuda: FakeTorchCuda, caplog: pytest.LogCaptureFixture
) -> None:
    fake_torch_cuda(
        reserved_mib=3000,
        allocated_mib=1000,
        gpu=card,
        empty_cache_error=RuntimeError("CUDA error"),
    )

    assert VRAMManager().force_cleanup() == 0
    assert len(records(caplog, logging.WARNING)) == 1
    assert "CUDA error" in records(caplog, logging.WARNING)[0]


def test_cleanup_in_cpu_mode_frees_nothing() -> None:
    assert VRAMManager().force_cleanup() == 0


# -------------------------------------------------------------------------- log_status


def test_log_status_logs_one_line_with_the_numbers(
    card: FakeGPU, fake_torch_cuda: FakeTorchCuda, caplog: pytest.LogCaptureFixture
) -> None:
    fake_torch_cuda(reserved_mib=2048, allocated_mib=512, gpu=card)
    manager = VRAMManager()
    caplog.set_level(logging.INFO, logger="avatar.vram")

    status = manager.log_status()

    lines = records(caplog, logging.INFO)
    assert len(lines) == 1 and "\n" not in lines[0]
    for number in ("cuda:0", "2240", "10240", "8000", "2048", "512"):
        assert number in lines[0]
    assert status.free_mib == 8000


def test_log_status_in_cpu_mode_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    manager = VRAMManager()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="avatar.vram")

    manager.log_status()

    assert len(records(caplog, logging.INFO)) == 1
    assert "CPU" in records(caplog, logging.INFO)[0]


def test_close_shuts_the_nvml_session_down(fake_nvml: FakeNvml) -> None:
    nv = fake_nvml([FakeGPU("RTX 3080", 10240)])
    manager = VRAMManager()
    manager.get_status()

    manager.close()

    assert nv.initialized == 0


def test_a_manager_used_as_a_context_manager_releases_nvml_on_exit(fake_nvml: FakeNvml) -> None:
    nv = fake_nvml([FakeGPU("RTX 3080", 10240, 300)])

    with VRAMManager() as manager:
        assert manager.get_status().total_mib == 10240
        assert nv.initialized > 0  # the status session is held while the block runs

    assert nv.initialized == 0


def test_the_context_manager_releases_nvml_when_the_block_raises(fake_nvml: FakeNvml) -> None:
    nv = fake_nvml([FakeGPU("RTX 3080", 10240, 300)])

    with pytest.raises(RuntimeError), VRAMManager() as manager:
        manager.get_status()
        raise RuntimeError("a stage failed")

    assert nv.initialized == 0
