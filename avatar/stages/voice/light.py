"""The light voice: real English speech on a CPU, offline, right after install.

It wraps `hibari` (PyPI `hibari-tts`, Apache-2.0): a 7.9 MB ONNX model distilled from
Kokoro-82M that ships inside the wheel together with its phonemizer, so nothing is downloaded
and no GPU is needed. It cannot clone a voice and speaks English only; everything else is
XTTS-v2's job (`voice=xtts_v2`), and the errors here say so.

hibari and onnxruntime are imported inside `LightEngine.__init__`, so importing this module
(for `LIGHT_LANGUAGES`, the errors, or a `--help`) costs nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from avatar.errors import AvatarUserError, ConfigValueError
from avatar.stages.voice.languages import XTTS_LANGUAGES

if TYPE_CHECKING:
    import numpy as np

LIGHT_LANGUAGES: tuple[str, ...] = ("en",)
# The voice inside the hibari-tts wheel (American English, female). hibari's other voices
# (emma and fable: British; fenrir and kore: American) are fetched from a model hub on first
# use; avatar never starts that download, it only uses them once they are in hibari's cache.
BUNDLED_VOICE = "heart"
# hibari's documented speed range ("0.5 slow .. 2.0 fast"; 1.0 is the teacher's pace).
MIN_SPEED = 0.5
MAX_SPEED = 2.0


class LightLanguageError(AvatarUserError, ValueError):
    """The light voice was asked for a language it does not speak."""


class LightVoiceError(AvatarUserError, ValueError):
    """A light voice id that is unknown, or known but not on this machine."""


class LightTextError(AvatarUserError, ValueError):
    """Text in which the light voice finds nothing to say (empty, or no English in it)."""


def normalize_language(language: str) -> str:
    """`EN`, `en_US` and `en-gb` all mean the light voice's `en`; other codes come back
    lower-case with `-` (so `zh_CN` reads `zh-cn`), for the error to name them."""
    code = language.strip().lower().replace("_", "-")
    return "en" if code == "en" or code.startswith("en-") else code


def check_language(language: str) -> str:
    """The language code the light voice uses for `language`; `LightLanguageError` if it
    does not speak it. The message names the engine that does (`voice=xtts_v2`)."""
    code = normalize_language(language)
    if code in LIGHT_LANGUAGES:
        return code
    raise LightLanguageError(
        f"The light CPU voice (hibari) speaks only English ({', '.join(LIGHT_LANGUAGES)}), "
        f"not {language!r}. For other languages use XTTS-v2: add voice=xtts_v2 (on a machine "
        f"with its weights; it speaks {' '.join(XTTS_LANGUAGES)}), or set voice.language=en "
        "for English text."
    )


def check_speed(speed: float) -> float:
    """`speed` as a float if hibari's documented range allows it, else `ConfigValueError`."""
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ConfigValueError(
            f"voice.speed={speed} is outside what the light CPU voice (hibari) accepts: "
            f"{MIN_SPEED} (slow) to {MAX_SPEED} (fast), 1.0 being its normal pace.",
            key="voice.speed",
        )
    return float(speed)


def _voice_model_path(voice_id: str) -> str:
    """Path of the ONNX file for `voice_id`, never downloading (hibari's own lookup would)."""
    from hibari.voices import VOICES, cache_dir, voice_path

    if voice_id not in VOICES:
        raise LightVoiceError(
            f"The light CPU voice has no voice {voice_id!r}; its voices are "
            f"{', '.join(sorted(VOICES))} ({BUNDLED_VOICE!r}, the default, is installed with "
            "it). It cannot clone: for a stored speaker use voice=xtts_v2."
        )
    try:
        return str(voice_path(voice_id, download_missing=False))
    except FileNotFoundError:
        info = VOICES[voice_id]
        raise LightVoiceError(
            f"The light CPU voice {voice_id!r} ({info['accent']} English, {info['gender']}) is "
            f"not on this machine: only {BUNDLED_VOICE!r} is installed with the package, the "
            f"others are a {info['bytes'] / 1e6:.1f} MB download that avatar does not start. "
            f"Fetch it once where there is a network (`hibari --voice {voice_id} Hello`), or copy "
            f"{info['file']} to {os.path.join(cache_dir(), info['file'])} (the folder is "
            f"$HIBARI_HOME if set), or use the installed voice {BUNDLED_VOICE!r}."
        ) from None


class LightEngine:
    """hibari's model, loaded once; `synthesize` turns English text into 24 kHz speech.

    `voice_id` is a hibari voice name (default: the one in the package). `threads` is
    onnxruntime's intra-op thread count: one core already runs far faster than real time,
    and one thread keeps a sweep's parallel jobs from fighting over cores.
    """

    languages: tuple[str, ...] = LIGHT_LANGUAGES

    def __init__(self, voice_id: str | None = None, *, threads: int = 1) -> None:
        try:
            from hibari import SAMPLE_RATE, Hibari
        except ImportError as e:
            raise LightVoiceError(
                f"The light CPU voice needs the hibari-tts package, which is not installed ({e}). "
                "Install avatar's voice extra (pip install '.[voice]' in avatar's folder)."
            ) from None

        self.voice_id = voice_id or BUNDLED_VOICE
        model_path = _voice_model_path(self.voice_id)
        self.sample_rate_hz: int = int(SAMPLE_RATE)
        self._tts: Any = Hibari(voice=self.voice_id, model=model_path, threads=threads)

    def synthesize(
        self,
        text: str,
        *,
        speed: float = 1.0,
        language: str | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """Speech for `text`: float32 mono samples at `sample_rate_hz`, in [-1, 1].

        `language` None means English (the config's `language: null`). hibari splits the
        text into sentences itself. `seed` fixes the noise component (the same seed gives the
        same samples); None draws fresh noise, as hibari does.
        """
        if language is not None:
            check_language(language)
        speed = check_speed(speed)
        if self._tts is None:
            raise RuntimeError("LightEngine.synthesize called after close()")
        if not text.strip():
            raise LightTextError("The text to speak is empty: give some English text.")
        audio = self._tts(text, speed=speed, seed=seed)
        if audio.size == 0:
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise LightTextError(
                f"The light CPU voice (hibari, English only) found nothing it can read in "
                f"{shown!r}. For text in another language use voice=xtts_v2."
            )
        return audio.astype("float32", copy=False)

    def close(self) -> None:
        """Drop the model (its onnxruntime session frees its memory when collected)."""
        self._tts = None

    def __enter__(self) -> LightEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
