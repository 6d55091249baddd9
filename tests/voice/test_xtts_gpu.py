"""XTTS-v2 on a real NVIDIA GPU, with the tiny checkpoint (skipped without one).

The stage guard must give the model's VRAM back (within 64 MiB) and its recorded peak must
agree with what NVML reports for this process, not only with torch's own counter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("TTS")

from tiny_xtts import session_tiny_xtts  # noqa: E402

from avatar.config import load_config  # noqa: E402
from avatar.stages.voice.store import VoiceStore  # noqa: E402
from avatar.stages.voice.synthesizer import Synthesizer  # noqa: E402
from avatar.vram.stage import RETURN_TOLERANCE_MIB  # noqa: E402

ClipMaker = Callable[..., Path]  # the make_clip fixture (tests/voice/conftest.py)

MIB = 1024 * 1024


def nvml_process_mib() -> float:
    import pynvml

    pynvml.nvmlInit()
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return float(proc.usedGpuMemory) / MIB
    finally:
        pynvml.nvmlShutdown()
    pytest.skip("NVML does not report per-process memory here (MIG, WSL, WDDM)")


@pytest.mark.gpu
def test_the_voice_stage_gives_its_vram_back_and_its_peak_agrees_with_nvml(
    tmp_path: Path, make_clip: ClipMaker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    checkpoint = session_tiny_xtts(tmp_path_factory.getbasetemp())
    store = VoiceStore(tmp_path / "voices")
    store.add("alice", [make_clip("alice.wav", seconds=3.0)], "en")
    cfg = load_config(
        ["voice=xtts_v2", f"voice.checkpoint_dir={checkpoint}", f"voices_dir={store.root}"]
    )
    torch.zeros(1, device="cuda")  # the CUDA context before the stage, as README advises
    context_mib = nvml_process_mib()
    reserved_before_mib = torch.cuda.memory_reserved() / MIB

    with Synthesizer(cfg, store=store, id_cache_file=tmp_path / "ids.json") as synth:
        result = synth.speak("Hello there. This is a test.", speaker="alice")
        inside_mib = nvml_process_mib()
        reserved_peak_mib = torch.cuda.max_memory_reserved() / MIB

    record = synth.record
    assert record is not None and record.device.startswith("cuda")
    assert result.audio_s > 0
    assert record.stayed_mib is not None and record.stayed_mib <= RETURN_TOLERANCE_MIB
    assert record.peak_mib is not None and record.peak_mib > 0
    # What NVML saw this process gain equals what torch's allocator reserved (+ library
    # workspaces such as cuBLAS's), and the recorded peak fits inside it.
    gained_mib = inside_mib - context_mib
    reserved_gained_mib = reserved_peak_mib - reserved_before_mib
    assert record.peak_mib <= reserved_peak_mib
    assert reserved_gained_mib <= gained_mib + 1  # NVML saw at least what torch reserved
    assert gained_mib - reserved_gained_mib <= 256  # ... and not much more (workspaces)
