"""The light CPU voice: real English speech from the model inside the hibari-tts wheel, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from avatar.errors import AvatarUserError, ConfigValueError
from avatar.stages.voice.light import (
    LightEngine,
    LightLanguageError,
    LightTextError,
    LightVoiceError,
    check_language,
)

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs away."
WORDS = len(SENTENCE.split())


def rms_dbfs(audio: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64))) + 1e-12))


def duration_s(audio: np.ndarray, engine: LightEngine) -> float:
    return len(audio) / engine.sample_rate_hz


@pytest.fixture(scope="module")
def engine() -> Iterator[LightEngine]:
    with LightEngine() as loaded:
        yield loaded


def test_speaks_english_as_audible_24khz_float32_mono(engine: LightEngine) -> None:
    audio = engine.synthesize(SENTENCE, seed=0)
    assert engine.sample_rate_hz == 24_000
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert rms_dbfs(audio) > -35.0  # speech level, not silence or a click
    assert np.abs(audio).max() <= 1.0
    # 13 words at a speaking pace of 1.5 to 5 words per second
    assert WORDS / 5 < duration_s(audio, engine) < WORDS / 1.5


def test_audio_has_the_pauses_and_bursts_of_speech_not_a_steady_tone(engine: LightEngine) -> None:
    audio = engine.synthesize("Hello. This is a test. Goodbye.", seed=0)
    frame = engine.sample_rate_hz // 50  # 20 ms frames
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    levels_db = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)
    loud = levels_db > levels_db.max() - 30
    # sound most of the time (not a click in silence), with near-silent gaps between sentences
    # and words (not a steady tone or noise)
    assert 0.25 < loud.mean() < 0.9


def test_longer_text_gives_proportionally_longer_audio(engine: LightEngine) -> None:
    one = duration_s(engine.synthesize(SENTENCE, seed=0), engine)
    three = duration_s(engine.synthesize(" ".join([SENTENCE] * 3), seed=0), engine)
    assert 2.5 * one < three < 3.5 * one


def test_speed_changes_the_duration(engine: LightEngine) -> None:
    normal = duration_s(engine.synthesize(SENTENCE, speed=1.0, seed=0), engine)
    fast = duration_s(engine.synthesize(SENTENCE, speed=1.5, seed=0), engine)
    slow = duration_s(engine.synthesize(SENTENCE, speed=0.75, seed=0), engine)
    assert fast < 0.8 * normal
    assert slow > 1.2 * normal


def test_same_seed_gives_the_same_samples(engine: LightEngine) -> None:
    first = engine.synthesize("Same text, same audio.", seed=7)
    again = engine.synthesize("Same text, same audio.", seed=7)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("language", ["en", "EN", "en_US", "en-gb", None])
def test_english_codes_and_no_language_are_accepted(
    engine: LightEngine, language: str | None
) -> None:
    if language is not None:
        assert check_language(language) == "en"
    assert engine.synthesize("Yes.", language=language).size > 0


@pytest.mark.parametrize("language", ["de", "zh_cn", "ja", "klingon"])
def test_another_language_is_one_paragraph_naming_xtts(engine: LightEngine, language: str) -> None:
    with pytest.raises(LightLanguageError) as caught:
        engine.synthesize("Guten Tag.", language=language)
    message = str(caught.value)
    assert isinstance(caught.value, AvatarUserError)
    assert "voice=xtts_v2" in message
    assert repr(language) in message
    assert "\n" not in message


def test_text_with_nothing_english_in_it_names_xtts(engine: LightEngine) -> None:
    with pytest.raises(LightTextError, match=r"voice=xtts_v2"):
        engine.synthesize("你好世界")


@pytest.mark.parametrize("text", ["", "  \n\t"])
def test_empty_text_is_refused(engine: LightEngine, text: str) -> None:
    with pytest.raises(LightTextError, match="empty"):
        engine.synthesize(text)


@pytest.mark.parametrize("speed", [0.2, 2.5])
def test_speed_outside_hibaris_range_names_the_key_and_the_range(
    engine: LightEngine, speed: float
) -> None:
    with pytest.raises(ConfigValueError, match=r"voice\.speed=.*0\.5 .*2\.0") as caught:
        engine.synthesize("Hello.", speed=speed)
    assert caught.value.key == "voice.speed"


def test_unknown_voice_lists_the_voices() -> None:
    with pytest.raises(LightVoiceError, match=r"'alice'.*emma.*heart.*voice=xtts_v2"):
        LightEngine("alice")


def test_voice_not_in_the_package_is_never_downloaded(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """emma is a download in hibari; avatar says how to get it instead of fetching it."""
    import socket

    attempts: list[object] = []

    def no_network(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setenv("HIBARI_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(LightVoiceError, match=r"'emma'.*not on this machine.*HIBARI_HOME"):
        LightEngine("emma")
    assert attempts == []


def test_closed_engine_refuses_to_speak() -> None:
    engine = LightEngine()
    engine.close()
    with pytest.raises(RuntimeError, match="close"):
        engine.synthesize("Hello.")


# A fresh interpreter with every way out to the network blocked and hub libraries told to stay
# offline: the packaged model must load and speak anyway.
OFFLINE_SCRIPT = """
import json, socket, sys
def no_network(*args, **kwargs):
    raise SystemExit("tried the network: %r" % (args,))
socket.socket.connect = socket.create_connection = socket.getaddrinfo = no_network
import avatar.stages.voice.light as light
after_import = sorted(m for m in ("hibari", "onnxruntime", "numpy") if m in sys.modules)
engine = light.LightEngine()
audio = engine.synthesize("Hello from a machine without a network.", seed=0)
print(json.dumps({"after_import": after_import, "samples": int(audio.size),
                  "rate": engine.sample_rate_hz}))
"""


def test_speaks_in_a_fresh_process_with_no_network_and_imports_lazily(tmp_path: object) -> None:
    env = {
        "HF_HUB_OFFLINE": "1",
        "HIBARI_HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["after_import"] == []  # importing light.py loads neither model nor numpy
    assert result["rate"] == 24_000
    assert result["samples"] > 24_000  # over a second of speech
