"""The speaker check as users meet it: `voice add` names another speaker's clip (or refuses it
with --strict), `voice show` / `list` read the stored scores without the encoder, and `speak`
reports how close its speech is to the voice.

Real speech from Debian's Festival voices (kal and ked: two American English men, the hard
case), made with `text2wave` as in test_speaker_speech.py; without Festival these tests skip,
under CI=true they fail. The pure parts (scores from stored embeddings, the speech statement)
are tested first, without any model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_speaker_speech import FESTIVAL_PACKAGES, SENTENCES, festival_wav, missing

from avatar.cli.voice import main as voice_main
from avatar.stages.voice.speaker import (
    NOT_RELEASED,
    AddSpeakerCheck,
    SpeakerEncoder,
    SpeechSimilarity,
    embeddings_to_json,
    is_released_checkpoint,
    speaker_check_settings,
    speaker_encoder,
    stored_voice_scores,
)
from avatar.stages.voice.store import SPEAKER_FILE, VoiceStore

# ---------------------------------------------------------------- pure: no model


def _unit(seed: int, base: np.ndarray | None = None, spread: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(256) if base is None else base + spread * rng.standard_normal(256)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_stored_scores_name_the_clip_of_another_speaker_without_an_encoder() -> None:
    host = _unit(1)
    embeddings = {f"h{i}": _unit(10 + i, host, 0.03) for i in range(3)} | {"x": _unit(99)}
    data = embeddings_to_json("resemblyzer-test", embeddings)
    clips = [("a.wav", "h0"), ("b.wav", "h1"), ("c.wav", "h2"), ("other.wav", "x")]

    scores = stored_voice_scores(clips, json.loads(json.dumps(data)), 0.84)

    assert scores is not None
    assert [c.name for c in scores.verdict.odd] == ["other.wav"]
    assert all(s is not None and s > 0.84 for s in scores.scores[:3])
    assert scores.to_json()["odd_clips"][0]["clip"] == "other.wav"


def test_a_voice_stored_before_the_check_has_no_scores_and_a_missing_clip_is_unscored() -> None:
    host = _unit(1)
    data = embeddings_to_json("enc", {"h0": _unit(2, host, 0.03), "h1": _unit(3, host, 0.03)})

    assert stored_voice_scores([("a.wav", "zz")], data, 0.84) is None
    assert stored_voice_scores([("a.wav", "h0")], None, 0.84) is None
    scores = stored_voice_scores([("a.wav", "h0"), ("b.wav", "h1"), ("new.wav", "zz")], data, 0.84)
    assert scores is not None and scores.unscored == ("new.wav",)


def test_speech_from_another_checkpoint_is_said_to_be_meaningless() -> None:
    released = "ab" * 32

    assert not is_released_checkpoint("cd" * 32, released)
    assert not is_released_checkpoint("cd" * 32, None)  # unknown: never "the released one"
    assert is_released_checkpoint(released.upper(), released)
    assert NOT_RELEASED in SpeechSimilarity(0.91, False, 0.84).describe()
    assert NOT_RELEASED in SpeechSimilarity(None, False, 0.84, "no speech").describe()
    assert NOT_RELEASED not in SpeechSimilarity(0.91, True, 0.84).describe()
    assert "below the threshold" in SpeechSimilarity(0.5, True, 0.84).describe()


# ---------------------------------------------------------------- real speech


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kal_1..kal_4 (one man) and ked_1 (another man), as audio files to add."""
    if shutil.which("text2wave") is None:
        missing(f"Festival's text2wave is not installed: apt-get install -y {FESTIVAL_PACKAGES}")
    folder = tmp_path_factory.mktemp("speaker-speech")
    made = {
        f"kal_{i + 1}": festival_wav("kal_diphone", text, folder / f"kal_{i + 1}.wav")
        for i, text in enumerate(SENTENCES)
    }
    made["ked_1"] = festival_wav("ked_diphone", SENTENCES[3], folder / "ked_1.wav")
    return made


@pytest.fixture(scope="module")
def encoder_ready() -> None:
    """The encoder can run here (torch and resemblyzer); one thread, as other jobs run too."""
    try:
        import torch
    except ImportError:
        missing("torch is not installed (pip install '.[torch,voice]')")
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            SpeakerEncoder("cpu").close()
        except Exception as e:  # SpeakerEncoderError: resemblyzer missing
            missing(str(e))


def voice_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = voice_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.mark.slow
@pytest.mark.usefixtures("encoder_ready")
def test_another_speakers_clip_is_named_with_its_score_on_add(
    speech: dict[str, Path], voices_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clips = [speech["kal_1"], speech["kal_2"], speech["kal_3"], speech["ked_1"]]

    code, out, err = voice_cli(capsys, "add", "sam", *map(str, clips), "--language", "en")

    assert code == 0, err
    warned = [line for line in err.splitlines() if "does not sound like" in line]
    assert len(warned) == 1 and "clip ked_1.wav" in warned[0], err
    assert "similarity 0." in warned[0] and "below the threshold 0.84" in warned[0]
    assert "Stored voice 'sam'" in out
    assert (voices_dir / "sam" / SPEAKER_FILE).is_file()


@pytest.mark.slow
@pytest.mark.usefixtures("encoder_ready")
def test_strict_refuses_the_whole_add_and_changes_nothing(
    speech: dict[str, Path], voices_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kal = [str(speech[f"kal_{i}"]) for i in (1, 2, 3)]
    code, _, err = voice_cli(
        capsys, "add", "new", *kal, str(speech["ked_1"]), "--language", "en", "--strict"
    )
    assert code == 1 and "Error: --strict: ked_1.wav" in err, err
    assert not (voices_dir / "new").exists()
    assert [p.name for p in voices_dir.iterdir() if p.name != ".lock"] == []

    assert voice_cli(capsys, "add", "sam", *kal, "--language", "en")[0] == 0
    before = snapshot(voices_dir)
    code, _, err = voice_cli(capsys, "add", "sam", str(speech["ked_1"]), "--append", "--strict")

    assert code == 1 and "nothing was added or changed" in err, err
    assert snapshot(voices_dir) == before


@pytest.mark.slow
@pytest.mark.usefixtures("encoder_ready")
def test_clips_of_one_speaker_are_not_flagged(
    speech: dict[str, Path], voices_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kal = [str(speech[f"kal_{i}"]) for i in (1, 2, 3, 4)]

    code, out, err = voice_cli(capsys, "add", "kal", *kal, "--language", "en", "--strict")

    assert code == 0, err
    assert "Warning" not in err
    assert "all 4 clips sound like one speaker" in out


@pytest.mark.slow
@pytest.mark.usefixtures("encoder_ready")
def test_one_or_two_clips_cannot_single_one_out(
    speech: dict[str, Path], voices_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = voice_cli(capsys, "add", "one", str(speech["kal_1"]), "--language", "en")
    assert code == 0 and "no clip can be singled out" in out

    two = [str(speech["kal_1"]), str(speech["ked_1"])]
    code, out, err = voice_cli(capsys, "add", "two", *two, "--language", "en", "--strict")

    assert code == 0  # with two clips neither is odd, so --strict has nothing to refuse
    assert "two clips: their similarity is 0." in err and "neither can be named" in err


@pytest.mark.slow
@pytest.mark.usefixtures("encoder_ready")
def test_append_embeds_only_the_new_clip(speech: dict[str, Path], voices_dir: Path) -> None:
    store = VoiceStore(voices_dir)
    settings = speaker_check_settings()
    store.add("kal", [speech[f"kal_{i}"] for i in (1, 2, 3)], "en", check=AddSpeakerCheck())
    stored = json.loads((voices_dir / "kal" / SPEAKER_FILE).read_text())
    embedded: list[str] = []

    class Counting:
        def __init__(self, encoder: SpeakerEncoder) -> None:
            self.encoder, self.encoder_id = encoder, encoder.encoder_id

        def embed_file(self, path: Path) -> Any:
            embedded.append(Path(path).name)
            return self.encoder.embed_file(path)

    from contextlib import contextmanager

    @contextmanager
    def counting_encoder() -> Any:
        with speaker_encoder(settings) as (encoder, record):
            yield Counting(encoder), record

    check = AddSpeakerCheck(settings, open_encoder=counting_encoder)
    voice = store.add("kal", [speech["kal_4"]], None, append=True, check=check)

    assert embedded == ["04-kal_4.wav"] and check.computed == 1
    after = json.loads((voices_dir / "kal" / SPEAKER_FILE).read_text())
    assert set(after["clips"]) == {clip.sha256 for clip in voice.clips}
    assert all(after["clips"][key] == vector for key, vector in stored["clips"].items())


@pytest.mark.slow
@pytest.mark.usefixtures("encoder_ready")
def test_show_and_list_carry_the_scores(
    speech: dict[str, Path], voices_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clips = [str(speech[name]) for name in ("kal_1", "kal_2", "kal_3", "ked_1")]
    assert voice_cli(capsys, "add", "sam", *clips, "--language", "en")[0] == 0

    _, shown, _ = voice_cli(capsys, "--json", "show", "sam")
    _, listed, _ = voice_cli(capsys, "--json", "list")
    _, table, _ = voice_cli(capsys, "show", "sam")

    check = json.loads(shown)["voice"]["speaker_check"]
    assert [c["clip"] for c in check["odd_clips"]] == ["ked_1.wav"]
    scores = {c["clip"]: c["score"] for c in check["clips"]}
    assert scores["ked_1.wav"] < 0.84 < min(scores[f"kal_{i}.wav"] for i in (1, 2, 3))
    summary = json.loads(listed)["voices"][0]["speaker_check"]
    assert summary["consistency"] == check["consistency"]
    assert "SIMILARITY" in table and "ked_1.wav (0." in table


# Runs `python -m avatar.voice` commands in one process, recording every attempt to import
# torch or the speaker encoder's libraries (even one that would fail or be caught).
IMPORT_WATCH = """
import json, runpy, sys

attempts = []

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "resemblyzer", "librosa", "webrtcvad", "TTS"):
            attempts.append(name)
        return None

sys.meta_path.insert(0, Watch())
codes = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["avatar.voice", *argv]
    try:
        runpy.run_module("avatar.voice", run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        codes.append(exit.code)
print(json.dumps({"codes": codes, "attempts": attempts}))
"""


@pytest.mark.slow
@pytest.mark.usefixtures("encoder_ready")
def test_list_and_show_read_stored_scores_without_the_encoder(
    speech: dict[str, Path], voices_dir: Path
) -> None:
    store = VoiceStore(voices_dir)
    store.add("sam", [speech["kal_1"], speech["kal_2"]], "en", check=AddSpeakerCheck())
    commands = [["list"], ["--json", "list"], ["show", "sam"], ["--json", "show", "sam"]]

    done = subprocess.run(
        [sys.executable, "-c", IMPORT_WATCH, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AVATAR_VOICES_DIR": str(voices_dir)},
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0], "attempts": []}
    assert "Speaker check: consistency 0." in done.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("encoder_ready")
def test_speak_reports_similarity_and_says_a_test_checkpoint_is_not_the_released_one(
    speech: dict[str, Path],
    voices_dir: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    pytest.importorskip("TTS")
    from fakes import fake_nvml_env
    from tiny_xtts import session_tiny_xtts

    checkpoint = session_tiny_xtts(tmp_path_factory.getbasetemp())
    VoiceStore(voices_dir).add("kal", [speech["kal_1"], speech["kal_2"]], "en")  # no check yet
    work = tmp_path / "work"
    work.mkdir()
    env = fake_nvml_env(
        None,
        AVATAR_VOICES_DIR=str(voices_dir),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        OMP_NUM_THREADS="1",
    )

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "avatar.speak",
            "-m",
            "voice=xtts_v2",
            f"voice.checkpoint_dir={checkpoint}",
            "speaker=kal",
            "text=Hello there.",
            "voice.temperature=0.75",
            "hydra.sweep.dir=sweep",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert NOT_RELEASED in done.stdout
    status = json.loads((work / "sweep" / "0" / "status.json").read_text())
    assert NOT_RELEASED in json.dumps(status)
    # The voice was stored before the check: its embeddings were computed and kept.
    assert (voices_dir / "kal" / SPEAKER_FILE).is_file()
