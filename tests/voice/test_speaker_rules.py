"""The speaker check's decisions (pure functions on embeddings) and its import cost.

The embeddings here are made-up unit vectors with known angles between them, so each test
knows which clip is the odd one; real speech is in test_speaker_speech.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
from fakes import FakeGPU

from avatar.errors import ConfigValueError
from avatar.stages.voice.speaker import (
    DEFAULT_THRESHOLD,
    EMBEDDING_DIM,
    SpeakerCheckSettings,
    SpeakerEncoder,
    SpeakerEncoderError,
    centroid,
    check_voice,
    consistency,
    embeddings_from_json,
    embeddings_to_json,
    odd_clips,
    similarity,
    speaker_check_settings,
    speaker_encoder,
)
from avatar.vram import InsufficientVRAMError


def voice_like(cos: float, index: int, *, base: int = 0) -> np.ndarray:
    """A unit 256-d vector at cosine `cos` from axis `base`, leaning towards its own axis."""
    v = np.zeros(EMBEDDING_DIM)
    v[base] = cos
    v[1 + base + index] = math.sqrt(1 - cos * cos)
    return v


def test_similarity_is_the_cosine_whatever_the_lengths() -> None:
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([1.0, 1.0, 0.0])
    assert similarity(a, 5 * b) == pytest.approx(math.sqrt(0.5))
    assert similarity(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        similarity(a, np.zeros(3))


def test_centroid_has_unit_length_and_the_clips_direction() -> None:
    clips = [voice_like(0.9, i) for i in range(3)]
    c = centroid(clips)
    assert np.linalg.norm(c) == pytest.approx(1.0)
    assert all(similarity(c, e) > 0.9 for e in clips)


def test_one_clip_has_nothing_to_agree_with() -> None:
    result = consistency([voice_like(0.9, 0)])
    assert result.scores == ()
    assert result.consistency is None
    verdict = odd_clips(result.scores, 0.8, names=["alice_1.wav"])
    assert not verdict.can_single_out
    assert verdict.odd == ()
    assert "one clip" in verdict.note


def test_two_clips_report_their_similarity_but_neither_is_named() -> None:
    a, b = voice_like(0.9, 0), voice_like(0.0, 1, base=100)  # orthogonal: different speakers
    result = consistency([a, b])
    assert result.scores == (pytest.approx(similarity(a, b)),) * 2
    assert result.consistency == pytest.approx(similarity(a, b))
    verdict = odd_clips(result.scores, 0.8, names=["alice_1.wav", "bob.wav"])
    assert not verdict.can_single_out
    assert verdict.odd == ()
    assert f"{similarity(a, b):.2f}" in verdict.note
    assert "neither can be named" in verdict.note


def test_two_agreeing_clips_are_reported_as_agreeing() -> None:
    result = consistency([voice_like(0.95, 0), voice_like(0.95, 1)])
    verdict = odd_clips(result.scores, 0.8, names=["a.wav", "b.wav"])
    assert not verdict.can_single_out
    assert "at or above the threshold" in verdict.note
    assert f"{result.consistency:.2f}" in verdict.note


def test_three_clips_of_one_voice_pass() -> None:
    embeddings = {f"alice_{i}.wav": voice_like(0.95, i) for i in range(3)}
    result, verdict = check_voice(embeddings, 0.8)
    assert verdict.can_single_out
    assert verdict.odd == ()
    assert len(result.scores) == 3
    assert result.consistency == pytest.approx(sum(result.scores) / 3)
    assert "all 3 clips" in verdict.note


def test_the_odd_clip_among_three_is_named_with_its_score() -> None:
    embeddings = {
        "alice_1.wav": voice_like(0.95, 0),
        "bob.wav": voice_like(0.6, 5),
        "alice_2.wav": voice_like(0.95, 1),
    }
    result, verdict = check_voice(embeddings, 0.8)
    assert [c.name for c in verdict.odd] == ["bob.wav"]
    assert verdict.odd[0].score == pytest.approx(result.scores[1])
    assert verdict.odd[0].score < 0.8 <= min(result.scores[0], result.scores[2])
    assert "bob.wav" in verdict.note
    assert f"{verdict.odd[0].score:.2f}" in verdict.note


def test_a_clip_is_scored_against_the_others_not_against_itself() -> None:
    # With itself in the reference the intruder would score higher than leave-one-out.
    clips = [voice_like(0.95, 0), voice_like(0.95, 1), voice_like(0.95, 2), voice_like(0.2, 3)]
    loo = consistency(clips).scores[3]
    assert loo == pytest.approx(similarity(clips[3], centroid(clips[:3])))
    assert loo < similarity(clips[3], centroid(clips))


def test_several_odd_clips_are_listed_lowest_first() -> None:
    scores = [0.9, 0.5, 0.95, 0.7]
    verdict = odd_clips(scores, 0.8, names=["a", "b", "c", "d"])
    assert [(c.name, c.score) for c in verdict.odd] == [("b", 0.5), ("d", 0.7)]


def test_a_score_at_the_threshold_is_not_odd() -> None:
    assert odd_clips([0.8, 0.8, 0.8], 0.8).odd == ()


def test_scores_and_names_must_match() -> None:
    with pytest.raises(ValueError):
        odd_clips([0.9, 0.9], 0.8, names=["a", "b", "c"])


def test_settings_come_from_the_voice_config_block() -> None:
    cfg = {"voice": {"speaker_check": {"threshold": 0.7, "vram_mib": 300, "device": "gpu"}}}
    assert speaker_check_settings(cfg) == SpeakerCheckSettings(0.7, 300.0, "gpu")
    assert speaker_check_settings({"voice": {"name": "hibari"}}) == SpeakerCheckSettings()


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"threshold": 1.5}, "voice.speaker_check.threshold"),
        ({"device": "tpu"}, "voice.speaker_check.device"),
    ],
)
def test_bad_settings_name_their_key(block: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigValueError) as caught:
        speaker_check_settings({"voice": {"speaker_check": block}})
    assert key in str(caught.value)


def test_avatars_own_config_gives_a_usable_threshold() -> None:
    settings = speaker_check_settings()
    assert -1.0 <= settings.threshold <= 1.0
    assert settings.vram_mib > 0
    assert -1.0 <= DEFAULT_THRESHOLD <= 1.0


def test_importing_the_speaker_module_loads_no_model_library() -> None:
    """`voice list` / `show` import it to rescore stored embeddings: it must stay cheap."""
    code = (
        "import sys, avatar.stages.voice.speaker\n"
        "heavy = [m for m in ('torch', 'resemblyzer', 'librosa', 'soxr', 'scipy', 'numba')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_an_intruder_among_three_does_not_get_the_other_two_named() -> None:
    """Half of each host clip's plain reference is the intruder; set aside, only it is named."""
    embeddings = {
        "alice_1.wav": voice_like(0.95, 0),
        "alice_2.wav": voice_like(0.95, 1),
        "bob.wav": voice_like(0.3, 5),
    }
    plain = consistency(list(embeddings.values()))
    assert max(plain.scores[:2]) < 0.8  # without setting bob aside, alice's clips fail too
    result, verdict = check_voice(embeddings, 0.8)
    assert [c.name for c in verdict.odd] == ["bob.wav"]
    assert result.in_reference == (True, True, False)
    assert result.scores[0] == pytest.approx(
        similarity(embeddings["alice_1.wav"], voice_like(0.95, 1))
    )
    assert result.scores[2] == pytest.approx(
        similarity(embeddings["bob.wav"], centroid([voice_like(0.95, 0), voice_like(0.95, 1)]))
    )


def test_three_different_speakers_are_all_named() -> None:
    embeddings = {f"speaker_{i}.wav": voice_like(0.0, 0, base=10 * i) for i in range(3)}
    _, verdict = check_voice(embeddings, 0.8)
    assert verdict.can_single_out
    assert len(verdict.odd) == 3
    assert "3 of 3 clips" in verdict.note


def test_odd_clips_stay_a_minority() -> None:
    """Two clips of alice and two of bob: no majority to set anyone aside against."""
    embeddings = {
        "alice_1.wav": voice_like(0.95, 0),
        "alice_2.wav": voice_like(0.95, 1),
        "bob_1.wav": voice_like(0.95, 0, base=100),
        "bob_2.wav": voice_like(0.95, 1, base=100),
    }
    result, _ = check_voice(embeddings, 0.8)
    assert result.in_reference.count(False) <= 1


def test_stored_embeddings_round_trip_through_json() -> None:
    import json

    stored = {"ab12": voice_like(0.9, 0).astype(np.float32), "cd34": voice_like(0.5, 3)}
    data = json.loads(json.dumps(embeddings_to_json("resemblyzer-0.1.4", stored)))
    back = embeddings_from_json(data, "resemblyzer-0.1.4")
    assert set(back) == {"ab12", "cd34"}
    assert similarity(back["cd34"], stored["cd34"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"encoder": "resemblyzer-9.9", "dim": 256, "clips": {}},  # another encoder's
        {"encoder": "resemblyzer-0.1.4", "dim": 128, "clips": {}},
        {"encoder": "resemblyzer-0.1.4", "dim": 256, "clips": {"ab12": [0.1, 0.2]}},
        {"encoder": "resemblyzer-0.1.4", "dim": 256, "clips": {"ab12": [0.0] * 256}},
    ],
)
def test_stored_embeddings_that_cannot_be_used_are_recomputed(data: object) -> None:
    assert embeddings_from_json(data, "resemblyzer-0.1.4") == {}


def test_a_gpu_without_room_refuses_the_encoder_before_loading_it(
    fake_nvml: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml([FakeGPU("GeForce GT 710", 1024, used_mib=900)])
    # Were the encoder loaded first, this would fail with SpeakerEncoderError instead.
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    settings = SpeakerCheckSettings(threshold=0.84, vram_mib=512, device="gpu")
    with pytest.raises(InsufficientVRAMError) as caught, speaker_encoder(settings):
        pytest.fail("the encoder must not be opened")
    assert "'speaker'" in str(caught.value)
    assert "512 MiB" in str(caught.value)


def test_without_resemblyzer_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    with pytest.raises(SpeakerEncoderError, match=r"pip install '\.\[voice\]'"):
        SpeakerEncoder("cpu")
