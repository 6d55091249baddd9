"""Shared fixtures of the voice tests: real audio files made on the spot, and a voice store.

`make_clip("alice.wav", seconds=2, sample_rate_hz=48000, channels=2)` writes a real audio
file (the format follows the suffix: .wav, .flac, .ogg) with numpy + soundfile, so every
test reads audio through the same libsndfile path a user's clip takes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

ClipMaker = Callable[..., Path]


def clip_samples(
    kind: str,
    seconds: float,
    sample_rate_hz: int,
    channels: int,
    *,
    amplitude: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """frames x channels float samples of a kind of clip.

    tone: a voice-like mix of harmonics with a slow loudness wobble; noise: white noise;
    silent: zeros; clipped: a tone driven far past full scale and cut at +-1.
    """
    frames = round(seconds * sample_rate_hz)
    t = np.arange(frames) / sample_rate_hz
    rng = np.random.default_rng(seed)
    if kind == "silent":
        mono = np.zeros(frames)
    elif kind == "noise":
        mono = amplitude * rng.standard_normal(frames).clip(-3, 3) / 3
    else:
        pitch_hz = 100 + 0.5 * seed  # a different clip (sha256) for every seed
        mono = sum(np.sin(2 * np.pi * pitch_hz * k * t) / k for k in (1, 2, 3))
        mono = amplitude * mono / np.max(np.abs(mono)) * (0.75 + 0.25 * np.sin(2 * np.pi * 3 * t))
        if kind == "clipped":
            mono = np.clip(mono * 20, -1.0, 1.0)
        elif kind != "tone":
            raise ValueError(f"unknown clip kind {kind!r}")
    # Channels differ slightly, as in a real stereo recording.
    return np.stack([mono * (1.0 - 0.1 * c) for c in range(channels)], axis=1)


@pytest.fixture
def make_clip(tmp_path: Path) -> ClipMaker:
    """Factory: write a real audio file under tmp_path/clips and return its path."""
    import soundfile

    folder = tmp_path / "clips"
    folder.mkdir(exist_ok=True)

    def make(
        name: str,
        *,
        seconds: float = 1.5,
        sample_rate_hz: int = 22_050,
        channels: int = 1,
        kind: str = "tone",
        amplitude: float = 0.3,
        seed: int | None = None,
    ) -> Path:
        path = folder / name
        samples = clip_samples(
            kind,
            seconds,
            sample_rate_hz,
            channels,
            amplitude=amplitude,
            seed=seed if seed is not None else zlib.crc32(name.encode()) % 1000,
        )
        soundfile.write(path, samples, sample_rate_hz)
        return path

    return make


@pytest.fixture
def voices_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty store folder, also set as $AVATAR_VOICES_DIR (so the CLI finds it)."""
    root = tmp_path / "voices"
    monkeypatch.setenv("AVATAR_VOICES_DIR", str(root))
    return root


@pytest.fixture
def store(voices_dir: Path) -> Iterator[object]:
    """A VoiceStore on `voices_dir` that gives up waiting for its lock after 5 s."""
    from avatar.stages.voice.store import VoiceStore

    yield VoiceStore(voices_dir, lock_timeout_s=5.0)
