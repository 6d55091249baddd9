"""Reference clips: reading any audio file, the checks a clip must pass, and its normalised copy.

A voice keeps a normalised copy of each clip (mono, 22,050 Hz, 16-bit PCM WAV), because
XTTS-v2 computes its GPT conditioning latents at 22,050 Hz and reading one format is
simpler and faster for every later use. The user's own file is only ever read.

The checks are pure functions of the samples (`check_clip`); soundfile (reading,
writing) and soxr (resampling) sit in the thin adapters around them.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avatar.config.files import builtin_conf_dir
from avatar.errors import AvatarUserError, ConfigValueError

if TYPE_CHECKING:  # numpy is imported where samples are handled: `voice list` never needs it
    import numpy as np

NORMALISED_SAMPLE_RATE_HZ = 22_050
# A sample whose magnitude reaches this counts as clipped (at full scale): int16's largest
# positive value reads as 32767/32768 = 0.99997, so the bound sits just below it.
FULL_SCALE = 0.999
# Formats libsndfile (through soundfile) reads; named in the "not audio" message.
READABLE_FORMATS = "WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF"


@dataclass(frozen=True)
class ClipRules:
    """What a reference clip must be (values from conf/voice/xtts_v2.yaml, `voice.clips`).

    min_s: shorter clips are refused (coqui's own hard minimum is 0.33 s).
    max_used_s: longer clips are kept with a warning: XTTS-v2 uses only this much of each.
    silence_dbfs: a clip whose RMS level is below this is silent and refused.
    clipped_warn_fraction: more samples than this fraction at full scale gives a warning.
    """

    min_s: float
    max_used_s: float
    silence_dbfs: float
    clipped_warn_fraction: float


def clip_rules_from_config(cfg: Any) -> ClipRules:
    """The clip rules of a config holding a voice option with a `clips:` block (`cfg.voice.clips`).

    The one place that maps the YAML keys (conf/voice/xtts_v2.yaml) onto ClipRules.
    """
    voice = cfg.get("voice") if hasattr(cfg, "get") else None
    clips = voice.get("clips") if voice is not None and hasattr(voice, "get") else None
    if clips is None:
        name = voice.get("name", "?") if voice is not None and hasattr(voice, "get") else "?"
        raise ConfigValueError(
            f"The voice option {name!r} has no clip rules (voice.clips): only a voice that "
            "clones from clips (voice=xtts_v2) has them.",
            key="voice.clips",
        )
    return ClipRules(
        min_s=float(clips["min_s"]),
        max_used_s=float(clips["max_used_s"]),
        silence_dbfs=float(clips["silence_dbfs"]),
        clipped_warn_fraction=float(clips["clipped_warn_fraction"]),
    )


def xtts_clip_rules() -> ClipRules:
    """The clip rules in avatar's own conf/voice/xtts_v2.yaml, read without composing a config.

    The voice store's default: `python -m avatar.voice add` and the Python API need only
    this block, and composing (Hydra, GPU detection) would cost seconds for it.
    """
    import yaml

    path = builtin_conf_dir() / "voice" / "xtts_v2.yaml"
    with open(path, encoding="utf-8") as file:
        return clip_rules_from_config({"voice": yaml.safe_load(file)})


class ClipError(AvatarUserError, ValueError):
    """One or more clips cannot be used; the message has one paragraph per clip."""

    def __init__(self, paragraphs: Sequence[str]) -> None:
        super().__init__("\n\n".join(paragraphs))
        self.paragraphs = tuple(paragraphs)


@dataclass(frozen=True)
class PreparedClip:
    """A clip that passed the checks, normalised and ready to be stored."""

    source: Path
    wav_bytes: bytes  # the normalised copy: mono, 22,050 Hz, PCM_16 WAV
    duration_s: float
    original_sample_rate_hz: int
    original_channels: int
    checks: tuple[str, ...]  # the warnings it passed with

    @property
    def original_name(self) -> str:
        return self.source.name


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of all samples (all channels) in dB relative to full scale; -inf for silence."""
    import numpy as np

    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0.0 else -math.inf


def clipped_fraction(samples: np.ndarray) -> float:
    """The fraction of samples at full scale (|x| >= FULL_SCALE)."""
    import numpy as np

    if samples.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(samples) >= FULL_SCALE)) / samples.size


def check_clip(
    samples: np.ndarray, sample_rate_hz: int, rules: ClipRules, name: str
) -> tuple[str, ...]:
    """The warnings a clip passes with; raises ClipError (one paragraph) if it is refused.

    `samples` is float (frames x channels, or frames) in [-1, 1] as read from the file.
    """
    duration_s = samples.shape[0] / sample_rate_hz if sample_rate_hz > 0 else 0.0
    if duration_s < rules.min_s:
        raise ClipError(
            [
                f"Clip {name} is too short: {duration_s:.2f} s, and a voice needs clips of at "
                f"least {rules.min_s:g} s (voice.clips.min_s; XTTS-v2 cannot use less than "
                "0.33 s, and about 6 s of clear speech clones best). Use a longer recording."
            ]
        )
    dbfs = level_dbfs(samples)
    if dbfs < rules.silence_dbfs:
        level = "no sound at all" if dbfs == -math.inf else f"an RMS level of {dbfs:.1f} dBFS"
        raise ClipError(
            [
                f"Clip {name} is silent: it has {level}, below the {rules.silence_dbfs:g} dBFS "
                "that counts as silence (voice.clips.silence_dbfs). Use a recording of the "
                "voice speaking, or check the recording level."
            ]
        )
    warnings: list[str] = []
    fraction = clipped_fraction(samples)
    if fraction > rules.clipped_warn_fraction:
        warnings.append(
            f"mostly clipped: {100 * fraction:.1f} % of samples at full scale "
            f"(more than {100 * rules.clipped_warn_fraction:g} %); the distortion may carry "
            "into the cloned voice"
        )
    if duration_s > rules.max_used_s:
        warnings.append(
            f"longer than XTTS-v2 uses: {duration_s:.1f} s, of which only the first "
            f"{rules.max_used_s:g} s (0:00 to {_minutes(rules.max_used_s)}) is used"
        )
    return tuple(warnings)


def _minutes(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def to_normalised(samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Mono (the channels' mean) at 22,050 Hz, float32 in [-1, 1]."""
    import numpy as np
    import soxr

    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.asarray(mono, dtype=np.float32)
    if sample_rate_hz != NORMALISED_SAMPLE_RATE_HZ:
        mono = soxr.resample(mono, sample_rate_hz, NORMALISED_SAMPLE_RATE_HZ)
    # Resampling can overshoot a full-scale signal slightly; PCM_16 would wrap it.
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def wav_bytes(samples: np.ndarray, sample_rate_hz: int = NORMALISED_SAMPLE_RATE_HZ) -> bytes:
    """The bytes of a 16-bit PCM WAV file of these mono samples."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate_hz, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(float32 samples, frames x channels; sample rate); ClipError if not readable audio."""
    import soundfile

    if not path.exists():
        raise ClipError([f"Clip {path} does not exist. Check the path and the file name."])
    if path.is_dir():
        raise ClipError([f"Clip {path} is a folder, not an audio file. Name the files in it."])
    if not os.access(path, os.R_OK):
        raise ClipError([f"Clip {path} cannot be read: permission denied."])
    try:
        samples, sample_rate_hz = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        reason = str(exc).rstrip(".")
        raise ClipError(
            [
                f"Clip {path} is unreadable or not audio: {reason}. Use an audio file in a "
                f"format libsndfile reads ({READABLE_FORMATS}); any sample rate and number "
                "of channels is fine."
            ]
        ) from None
    return samples, int(sample_rate_hz)


def prepare_clip(path: Path, rules: ClipRules) -> PreparedClip:
    """Read, check and normalise one clip; ClipError (one paragraph naming it) if refused."""
    samples, sample_rate_hz = read_audio(path)
    checks = check_clip(samples, sample_rate_hz, rules, str(path))
    normalised = to_normalised(samples, sample_rate_hz)
    return PreparedClip(
        source=path,
        wav_bytes=wav_bytes(normalised),
        duration_s=round(normalised.shape[0] / NORMALISED_SAMPLE_RATE_HZ, 3),
        original_sample_rate_hz=sample_rate_hz,
        original_channels=int(samples.shape[1]),
        checks=checks,
    )


def prepare_clips(paths: Iterable[Path], rules: ClipRules) -> list[PreparedClip]:
    """Every clip prepared; if any is refused, one ClipError with a paragraph per refused clip."""
    prepared: list[PreparedClip] = []
    refused: list[str] = []
    for path in paths:
        try:
            prepared.append(prepare_clip(Path(path), rules))
        except ClipError as exc:
            refused.extend(exc.paragraphs)
    if refused:
        raise ClipError(refused)
    return prepared
