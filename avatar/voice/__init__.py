"""The voice API: stored voices and speech, from Python.

```python
from pathlib import Path
from avatar.voice import Synthesizer, VoiceStore, default_voices_dir, load_config

store = VoiceStore(default_voices_dir())
store.add("alice", [Path("clips/alice_1.wav")], "en")
cfg = load_config(["voice=xtts_v2", "voice.checkpoint_dir=~/models/xtts_v2"])
with Synthesizer(cfg, store=store) as synth:  # loads XTTS-v2 once, under the VRAM guard
    result = synth.speak("Hello there.", speaker="alice", out="hello.wav")
print(result.audio_s, result.real_time_factor, result.latents, synth.record.peak_mib)
```

Importing this package is light: `python -m avatar.voice list` goes through it. The
synthesizer and `load_config` (which imports Hydra) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from avatar.stages.voice.languages import XTTS_LANGUAGES, UnsupportedLanguageError
from avatar.stages.voice.store import (
    Clip,
    InvalidVoiceNameError,
    UnknownVoiceError,
    Voice,
    VoiceError,
    VoiceExistsError,
    VoiceStore,
    default_voices_dir,
    resolve_voices_dir,
)

if TYPE_CHECKING:
    from avatar.config import load_config
    from avatar.stages.voice.synthesizer import SpeechResult, Synthesizer

_LAZY = {
    "Synthesizer": "avatar.stages.voice.synthesizer",
    "SpeechResult": "avatar.stages.voice.synthesizer",
    "load_config": "avatar.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'avatar.voice' has no attribute {name!r}")


__all__ = [
    "XTTS_LANGUAGES",
    "Clip",
    "InvalidVoiceNameError",
    "SpeechResult",
    "Synthesizer",
    "UnknownVoiceError",
    "UnsupportedLanguageError",
    "Voice",
    "VoiceError",
    "VoiceExistsError",
    "VoiceStore",
    "default_voices_dir",
    "load_config",
    "resolve_voices_dir",
]
