"""The speaker encoder on a real NVIDIA GPU: it runs under the VRAM stage guard, stays within
its configured need (`voice.speaker_check.vram_mib`), gives VRAM back, and embeds the same
as on the CPU.

Marked `gpu`: skipped without an NVIDIA driver and GPU (conftest) or without a CUDA build of
torch. Run with `pytest -m gpu tests/voice/test_speaker_gpu.py -s` to see the measured peak.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from avatar.stages.voice.speaker import (
    SpeakerEncoder,
    similarity,
    speaker_check_settings,
    speaker_encoder,
)
from avatar.vram import VRAMManager

pytestmark = pytest.mark.gpu


@pytest.fixture
def torch() -> Any:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device (a CPU build, or no GPU visible to CUDA)")
    pytest.importorskip("resemblyzer")
    return torch


def speechlike(seconds: float = 20.0, rate_hz: int = 22_050) -> Any:
    """A voiced, syllable-paced signal long enough to make the encoder batch many windows."""
    import numpy as np

    t = np.arange(int(seconds * rate_hz)) / rate_hz
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate_hz
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * voiced * syllables / np.max(np.abs(voiced))).astype(np.float32)


def test_the_encoder_fits_its_configured_need_and_gives_vram_back(torch: Any) -> None:
    settings = dataclasses.replace(speaker_check_settings(), device="gpu")
    audio = speechlike()
    manager = VRAMManager()
    if manager.gpu is None:
        pytest.skip("avatar found no GPU")
    with speaker_encoder(settings, manager=manager) as (encoder, record):
        on_gpu = encoder.embed(audio, 22_050)
    assert record is not None
    assert record.device.startswith("cuda")
    assert record.peak_mib is not None
    print(
        f"\nspeaker encoder on {record.device}: torch peak {record.peak_mib:.0f} MiB "
        f"({record.peak_note}); available before {record.available_before_mib} MiB, after "
        f"{record.available_after_mib} MiB; configured need {settings.vram_mib:.0f} MiB"
    )
    assert record.peak_mib <= settings.vram_mib
    assert record.returned is not False, f"{record.stayed_mib} MiB stayed behind"
    with SpeakerEncoder("cpu") as cpu:
        assert similarity(cpu.embed(audio, 22_050), on_gpu) > 0.999
