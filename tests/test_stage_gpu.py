"""Proof on a real NVIDIA GPU: three synthetic torch stages, sized from the stage configs,
run one after another through VRAMManager.stage().

After each stage free VRAM (NVML) is back within 64 MiB of where it started; the
recorded peak matches torch.cuda.max_memory_allocated() within 1 %; and a stage
larger than the card is refused before anything is allocated.

Marked `gpu`: skipped without an NVIDIA driver and GPU (conftest) or without a CUDA
build of torch. Run with `pytest -m gpu`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from avatar import InsufficientVRAMError, VRAMManager, load_config, stage_need_mib
from avatar.vram.stage import RETURN_TOLERANCE_MIB

pytestmark = pytest.mark.gpu

MIB = 1024 * 1024
WIDTH = 2048  # synthetic layers are WIDTH x WIDTH (16 MiB in fp32)
WEIGHT_SHARE = 0.6  # of a stage's need: weights; activations take part of the rest
HEADROOM_MIB = 2048  # kept free beyond the margin when the stages must be scaled down


@pytest.fixture
def torch() -> Any:
    """torch with CUDA. Function-scoped, so conftest's GPU check skips first on a machine
    without one, and torch is never imported into a test run that has no GPU."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device (a CPU build, or no GPU visible to CUDA)")
    return torch


@pytest.fixture
def manager(torch: Any) -> Iterator[VRAMManager]:
    m = VRAMManager()
    if m.gpu is None or m.gpu.backend != "nvml":
        pytest.skip("avatar found no NVML GPU")
    # CUDA context and cuBLAS workspaces are the process's, not a stage's: create them first.
    device = m.device
    for dtype in (torch.float32, torch.float16):
        a = torch.ones(WIDTH, WIDTH, device=device, dtype=dtype)
        (a @ a).sum().item()
        torch.nn.functional.linear(a[:8], a).sum().item()
        del a
    torch.cuda.synchronize(device)
    m.force_cleanup()
    yield m
    m.close()


def synthetic_stage(torch: Any, device: str, need_mib: float, precision: str) -> float:
    """Load weights of about WEIGHT_SHARE * need_mib, run a forward pass, drop everything.

    Returns the MiB of weights it held, for the test's own sanity check.
    """
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    layer_mib = WIDTH * WIDTH * torch.finfo(dtype).bits / 8 / MIB
    layers = max(1, int(need_mib * WEIGHT_SHARE / layer_mib))
    model = torch.nn.Sequential(
        *[
            torch.nn.Linear(WIDTH, WIDTH, bias=False, device=device, dtype=dtype)
            for _ in range(layers)
        ]
    )
    rows = max(1, int(need_mib * 0.1 * MIB / (WIDTH * torch.finfo(dtype).bits / 8)))
    with torch.no_grad():
        out = model(torch.ones(rows, WIDTH, device=device, dtype=dtype))
        out.sum().item()
    del model, out
    torch.cuda.synchronize(device)
    return layers * layer_mib


def test_three_stages_sized_from_their_configs_give_vram_back_and_record_their_peak(
    torch: Any, manager: VRAMManager
) -> None:
    cfg = load_config(["profile=rtx3080"])  # a fixed profile: the same sizes on every card
    margin = float(cfg.safety_margin_mib)
    stages = [entry.value for entry in cfg.pipeline.stages]
    needs = {name: float(stage_need_mib(cfg[name])) for name in stages}
    assert len(stages) == 3 and all(needs.values())
    available = manager.get_status().available_mib
    scale = min(1.0, (available - margin - HEADROOM_MIB) / max(needs.values()))
    assert scale > 0.05, f"only {available:.0f} MiB available: too little for a meaningful run"
    index = manager.gpu.index

    for name in stages:
        required = needs[name] * scale
        free_before = manager.get_status().free_mib
        with manager.stage(name, required, safety_margin_mb=margin) as record:
            weights = synthetic_stage(torch, manager.device, required, cfg[name].precision.value)
        peak_now = torch.cuda.max_memory_allocated(index) / MIB
        free_after = manager.get_status().free_mib

        assert weights > 0.5 * required  # the stage really held about its size
        assert record.peak_mib == pytest.approx(peak_now, rel=0.01), name
        assert record.peak_mib >= weights
        assert free_after >= free_before - RETURN_TOLERANCE_MIB, (name, free_before, free_after)
        assert record.returned is True, record
        print(
            f"{name}: required {required:.0f} MiB, peak {record.peak_mib:.0f} MiB, "
            f"free before {free_before:.0f}, after {free_after:.0f} MiB"
        )

    assert [r.name for r in manager.records] == stages


def test_a_stage_larger_than_the_card_is_refused_before_anything_is_allocated(
    torch: Any, manager: VRAMManager
) -> None:
    index = manager.gpu.index
    total = manager.get_status().total_mib
    allocated_before = torch.cuda.memory_allocated(index)
    reserved_before = torch.cuda.memory_reserved(index)
    ran = False

    with (
        pytest.raises(InsufficientVRAMError, match="Stage 'oversized'"),
        manager.stage("oversized", total + 1),
    ):
        ran = True
        torch.empty(int((total + 1) * MIB), dtype=torch.uint8, device=manager.device)

    assert not ran
    assert torch.cuda.memory_allocated(index) == allocated_before
    assert torch.cuda.memory_reserved(index) == reserved_before
    assert manager.records == []
