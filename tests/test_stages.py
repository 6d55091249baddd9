"""Sequential loading through VRAMManager.stage(), against the fake NVML and a fake torch.cuda.

The fake GPU's used memory moves as torch's fake allocator reserves and frees, as the
real one does, so "free VRAM came back" is seen through NVML exactly as on a GPU.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import MIB, FakeCuda, FakeGPU, FakeNvmlModule, fake_torch

from avatar import InsufficientVRAMError, VRAMManager, load_config, stage_need_mib
from avatar.cli.status_view import render_records
from avatar.errors import AvatarUserError
from avatar.vram.stage import RETURN_TOLERANCE_MIB

RTX_3080 = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)
GTX_1650 = FakeGPU("NVIDIA GeForce GTX 1650", total_mib=4096, used_mib=300)


@dataclass
class PeakCuda(FakeCuda):
    """FakeCuda with torch's peak counter, and a model load / drop that moves the GPU's memory."""

    peak_mib: float = 0.0
    peak_resets: int = 0

    def reset_peak_memory_stats(self, device: int | None = None) -> None:
        self.peak_resets += 1
        self.peak_mib = self.allocated_mib

    def max_memory_allocated(self, device: int | None = None) -> int:
        return round(self.peak_mib * MIB)

    def load(self, mib: float) -> None:
        """Allocate `mib` (the caching allocator reserves it from the GPU)."""
        assert self.gpu is not None
        self.allocated_mib += mib
        grow = max(0.0, self.allocated_mib - self.reserved_mib)
        self.reserved_mib += grow
        self.gpu.used_mib += grow
        self.peak_mib = max(self.peak_mib, self.allocated_mib)

    def drop(self, mib: float) -> None:
        """Free `mib` to torch's cache (the GPU sees it only after empty_cache)."""
        self.allocated_mib -= mib


@pytest.fixture
def gpu(fake_nvml: Callable[..., FakeNvmlModule]) -> FakeGPU:
    card = FakeGPU(RTX_3080.name, RTX_3080.total_mib, RTX_3080.used_mib)
    fake_nvml([card])
    return card


@pytest.fixture
def cuda(gpu: FakeGPU, monkeypatch: pytest.MonkeyPatch) -> PeakCuda:
    """torch imported, CUDA initialised, nothing allocated yet."""
    fake = PeakCuda(gpu=gpu)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(fake))
    return fake


@pytest.fixture
def manager(gpu: FakeGPU) -> Iterator[VRAMManager]:
    m = VRAMManager()
    yield m
    m.close()


# -------------------------------------------------------------------- before


def test_a_stage_that_does_not_fit_is_refused_before_its_body_runs(
    manager: VRAMManager, cuda: PeakCuda, gpu: FakeGPU
) -> None:
    margin = 512
    required = gpu.free_mib - margin + 1
    ran = False

    with (
        pytest.raises(InsufficientVRAMError) as refused,
        manager.stage("lipsync", required, safety_margin_mb=margin),
    ):
        ran = True

    assert not ran
    assert cuda.allocated_mib == 0 and cuda.peak_resets == 0
    message = str(refused.value)
    assert "Stage 'lipsync'" in message
    assert f"{required:.0f} MiB" in message and f"{margin} MiB safety margin" in message
    assert f"{gpu.free_mib:.0f} MiB is free on cuda:0" in message
    assert "1 MiB short" in message
    assert manager.records == []  # nothing ran, so there is nothing to record


def test_exactly_enough_vram_is_not_refused(manager: VRAMManager, cuda: PeakCuda) -> None:
    margin = 512
    with manager.stage("voice", RTX_3080.free_mib - margin, safety_margin_mb=margin) as record:
        pass

    assert record.returned is True


def test_the_refusal_is_a_user_error_naming_a_lighter_option_that_fits(
    fake_nvml: Callable[..., FakeNvmlModule],
) -> None:
    fake_nvml([FakeGPU(GTX_1650.name, GTX_1650.total_mib, GTX_1650.used_mib)])
    cfg = load_config(["profile=rtx3080"])  # MuseTalk + margin do not fit on 4 GB
    manager = VRAMManager()

    with pytest.raises(InsufficientVRAMError) as refused, manager.stage("lipsync", config=cfg):
        pytest.fail("the body of a refused stage ran")

    assert isinstance(refused.value, AvatarUserError)  # the CLI prints it as "Error: ..."
    assert refused.value.required_mib == stage_need_mib(cfg.lipsync)
    assert refused.value.safety_margin_mib == cfg.safety_margin_mib
    assert "lipsync=wav2lip" in str(refused.value)
    assert "profile=low_vram" in str(refused.value)


def test_unused_torch_cache_counts_as_room_for_the_next_model(
    manager: VRAMManager, cuda: PeakCuda, gpu: FakeGPU
) -> None:
    cuda.load(4000)
    cuda.drop(4000)  # reserved by torch, unused: reclaimable
    assert gpu.free_mib < 8000

    with manager.stage("lipsync", 8000, safety_margin_mb=512) as record:
        cuda.load(8000)
        cuda.drop(8000)

    assert record.required_mib == 8000


# -------------------------------------------------------------------- during


def test_a_stage_records_what_it_needed_peaked_at_and_gave_back(
    manager: VRAMManager, cuda: PeakCuda, gpu: FakeGPU
) -> None:
    cuda.peak_mib = 9999  # a peak from before the stage must not count
    free_before = gpu.free_mib

    with manager.stage("voice", 2150) as record:
        cuda.load(1800)
        cuda.load(300)  # activations on top of the weights
        cuda.drop(2100)

    assert cuda.peak_resets == 1
    assert record.peak_mib == pytest.approx(2100)
    assert record.peak_note == "torch.cuda.max_memory_allocated"
    assert record.required_mib == 2150
    assert record.stayed_mib == pytest.approx(0)
    assert record.returned is True
    assert gpu.free_mib == pytest.approx(free_before)
    assert manager.records == [record]


def test_every_stage_leaves_a_record_in_order(manager: VRAMManager, cuda: PeakCuda) -> None:
    for name, mib in (("voice", 2000), ("lipsync", 3000), ("enhance", 1500)):
        with manager.stage(name, mib):
            cuda.load(mib)
            cuda.drop(mib)

    assert [(r.name, r.peak_mib) for r in manager.records] == [
        ("voice", 2000),
        ("lipsync", 3000),
        ("enhance", 1500),
    ]


def test_a_peak_above_the_declared_need_is_warned(
    manager: VRAMManager, cuda: PeakCuda, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="avatar.stage"), manager.stage("lipsync", 2000):
        cuda.load(2600)
        cuda.drop(2600)

    assert "Stage 'lipsync' peaked at 2600 MiB, above the 2000 MiB it declared" in caplog.text


def test_without_cuda_initialised_the_stage_creates_no_context_and_says_the_peak_is_unknown(
    manager: VRAMManager, gpu: FakeGPU, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = PeakCuda(gpu=gpu, initialized=False)  # torch imported, CUDA never touched
    monkeypatch.setitem(sys.modules, "torch", fake_torch(idle))

    with manager.stage("voice", 2150) as record:
        pass

    assert idle.initialized is False
    assert (idle.mem_get_info_calls, idle.peak_resets, idle.empty_cache_calls) == (0, 0, 0)
    assert record.peak_mib is None
    assert "not measured" in record.peak_note
    assert record.returned is True  # measured through NVML all the same


# --------------------------------------------------------------------- after


def test_vram_that_stays_behind_is_warned_with_how_much(
    manager: VRAMManager, cuda: PeakCuda, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="avatar.stage"),
        manager.stage("lipsync", 3000) as record,
    ):
        cuda.load(3000)
        cuda.drop(2500)  # 500 MiB still referenced: a leak

    assert record.stayed_mib == pytest.approx(500)
    assert record.returned is False
    assert "Stage 'lipsync' did not give all its VRAM back: 500 MiB stayed" in caplog.text
    assert "del model" in caplog.text


def test_a_few_mib_left_in_the_cache_are_within_tolerance(
    manager: VRAMManager, cuda: PeakCuda, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="avatar.stage"),
        manager.stage("voice", 2000) as record,
    ):
        cuda.load(2000)
        cuda.drop(2000 - RETURN_TOLERANCE_MIB / 2)

    assert record.returned is True
    assert "did not give all its VRAM back" not in caplog.text


def test_cleanup_gives_torchs_cache_back_to_the_gpu_after_the_stage(
    manager: VRAMManager, cuda: PeakCuda, gpu: FakeGPU
) -> None:
    with manager.stage("enhance", 2048) as record:
        cuda.load(2048)
        cuda.drop(2048)
        reserved_inside = cuda.reserved_mib

    assert reserved_inside == 2048 and cuda.reserved_mib == 0
    assert cuda.empty_cache_calls == 1
    assert record.cleanup_freed_mib == pytest.approx(2048)


def test_a_stage_that_raises_is_still_cleaned_up_and_recorded(
    manager: VRAMManager, cuda: PeakCuda
) -> None:
    with pytest.raises(RuntimeError, match="CUDA out of memory"), manager.stage("lipsync", 3000):
        cuda.load(2500)
        cuda.drop(2500)  # the model is gone with the exception's frame
        raise RuntimeError("CUDA out of memory")

    (record,) = manager.records
    assert record.error == "RuntimeError: CUDA out of memory"
    assert record.returned is True and cuda.reserved_mib == 0


def test_in_cpu_mode_a_stage_runs_without_a_vram_check(
    fake_nvml: Callable[..., FakeNvmlModule],
) -> None:
    fake_nvml(library_missing=True)
    manager = VRAMManager()

    with manager.stage("voice", 10**9) as record:
        pass

    assert record.device == "cpu"
    assert (record.available_before_mib, record.returned, record.peak_mib) == (None, None, None)


# -------------------------------------------------------------- from a config


def test_a_config_gives_the_stage_its_need_and_margin(manager: VRAMManager, cuda: PeakCuda) -> None:
    cfg = load_config(["profile=rtx3080"])

    with manager.stage("lipsync", config=cfg) as record:
        pass

    assert record.required_mib == stage_need_mib(cfg.lipsync)
    assert record.safety_margin_mib == cfg.safety_margin_mib
    assert record.device == "cuda:0"


def test_a_cpu_only_stage_of_the_config_is_not_checked_against_vram(
    manager: VRAMManager, cuda: PeakCuda
) -> None:
    cfg = load_config(["profile=rtx3080", "voice=hibari"])

    with manager.stage("voice", config=cfg) as record:
        pass

    assert (record.device, record.required_mib) == ("cpu", 0)


def test_the_records_table_lists_the_stages_a_script_ran(
    manager: VRAMManager, cuda: PeakCuda
) -> None:
    cfg = load_config(["profile=rtx3080"])
    with manager.stage("voice", config=cfg):
        cuda.load(2000)
        cuda.drop(1000)  # 1000 MiB left behind

    lines = render_records(manager.records)

    start = -1
    assert lines[start + 1].split()[:6] == [
        "stage",
        "device",
        "required",
        "peak",
        "stayed",
        "returned",
    ]
    row = lines[start + 2].split()
    assert row[0] == "voice" and row[-1] == "NO" and "1000" in row


def test_the_stage_example_runs_its_pipeline_on_the_cpu(
    no_torch: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "stage_example.py"
    spec = importlib.util.spec_from_file_location("stage_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    assert example.main(["profile=cpu"]) == 0

    out = capsys.readouterr().out
    cfg = load_config(["profile=cpu"])
    for entry in cfg.pipeline.stages:
        assert f"{entry.value}: {cfg[entry.value].model} ran on cpu" in out
