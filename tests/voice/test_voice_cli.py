"""`python -m avatar.voice` as a user runs it: the issue's walk-through, JSON, errors, imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avatar.cli.voice import main
from avatar.stages.voice.store import VoiceStore


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_cache_entry(voice, *, model: str = "xtts_v2") -> None:
    key = f"{model}-{'c' * 12}-{voice.clips_sha256[:12]}"
    (voice.cache_dir / f"{key}.pt").write_bytes(b"latents")
    meta = {
        "model": model,
        "checkpoint_id": "c" * 64,
        "clips_sha256": voice.clips_sha256,
        "created": "2026-12-01T12:00:00+00:00",
        "seconds": 2.5,
    }
    (voice.cache_dir / f"{key}.json").write_text(json.dumps(meta))


def test_the_issues_walk_through(capsys, voices_dir, make_clip):
    a1 = make_clip("alice_1.wav", seconds=2.0, sample_rate_hz=48_000, channels=2)
    a2 = make_clip("alice_2.flac", seconds=1.5, sample_rate_hz=16_000)
    a3 = make_clip("alice_3.wav", seconds=1.2)

    code, out, err = run_cli(capsys, "add", "alice", str(a1), str(a2), "--language", "en")
    assert code == 0
    # Two synthetic tones are no speaker: the speaker check may say they differ, nothing else.
    assert all(line.startswith("Warning: speaker check") for line in err.splitlines()), err
    assert out.startswith(f"Stored voice 'alice' (en): 2 clips, 3.5 s, in {voices_dir / 'alice'}\n")

    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == [
        f"Voices in {voices_dir}:",
        "  NAME   LANGUAGE  CLIPS  SECONDS  CACHED MODELS  CONSISTENCY",
    ]
    assert (
        lines[2].startswith("  alice  en            2      3.5  -              0.")
        and len(lines) == 3
    )

    code, out, _ = run_cli(capsys, "show", "alice")
    assert code == 0
    assert "01-alice_1.wav  alice_1.wav       2.0  22050 (was 48000)  2         ok" in out
    assert "02-alice_2.wav  alice_2.flac      1.5  22050 (was 16000)  1         ok" in out
    assert "Cache: none yet" in out

    code, out, _ = run_cli(capsys, "add", "alice", str(a3), "--append")
    assert code == 0
    assert out.startswith("Added 1 clip to voice 'alice' (en): 3 clips, 4.7 s")

    code, out, _ = run_cli(capsys, "rm", "alice", "--clip", "alice_3.wav")
    assert (code, out) == (0, "Removed clip alice_3.wav from voice 'alice': 2 clips left, 3.5 s.\n")

    code, out, _ = run_cli(capsys, "rename", "alice", "alicia")
    assert (code, out) == (0, "Renamed voice 'alice' to 'alicia'.\n")

    code, out, _ = run_cli(capsys, "rm", "alicia")
    assert (code, out) == (0, f"Removed voice 'alicia' from {voices_dir}.\n")
    assert VoiceStore(voices_dir).list() == []


def test_list_shows_the_models_with_latents_cached_for_the_present_clips(
    capsys, voices_dir, make_clip
):
    store = VoiceStore(voices_dir)
    write_cache_entry(store.add("alice", [make_clip("a.wav")], "en"))
    store.add("bob", [make_clip("b.wav")], "fr")

    code, out, _ = run_cli(capsys, "list")

    assert code == 0
    lines = out.splitlines()
    assert "  alice  en            1      1.5  xtts_v2        not checked" in lines
    assert "  bob    fr            1      1.5  -              not checked" in lines


def test_show_lists_the_cache_entries(capsys, voices_dir, make_clip):
    write_cache_entry(VoiceStore(voices_dir).add("alice", [make_clip("a.wav")], "en"))

    code, out, _ = run_cli(capsys, "show", "ALICE")

    assert code == 0
    assert "Cache:" in out
    assert "xtts_v2  cccccccccccc  2026-12-01T12:00:00+00:00      2.5  current" in out


def test_clip_warnings_go_to_stderr_and_the_result_to_stdout(capsys, voices_dir, make_clip):
    code, out, err = run_cli(
        capsys, "add", "loud", str(make_clip("loud.wav", kind="clipped")), "--language", "en"
    )

    assert code == 0
    assert out.startswith("Stored voice 'loud'")
    assert err.startswith("Warning: clip loud.wav: mostly clipped: ")


def test_bad_clips_exit_1_with_one_paragraph_each_and_no_traceback(
    capsys, voices_dir, make_clip, tmp_path
):
    silent = make_clip("silent.wav", kind="silent")
    short = make_clip("short.wav", seconds=0.2)
    text = tmp_path / "readme.wav"
    text.write_text("text")

    code, out, err = run_cli(
        capsys, "add", "bob", str(silent), str(short), str(text), "--language", "en"
    )

    assert (code, out) == (1, "")
    assert err.startswith("Error: Clip ")
    assert err.count("\n\n") == 2
    for path in (silent, short, text):
        assert f"Clip {path} " in err
    assert "Traceback" not in err
    assert not (voices_dir / "bob").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "nobody"], "Error: There is no voice named 'nobody'. Stored voices"),
        (["rm", "nobody"], "Error: There is no voice named 'nobody'."),
        (["rename", "alice", "a/b"], "Error: Voice name 'a/b' contains one of"),
        (["rename", "alice", "ALICE2"], "Error: A voice named 'alice2' is already stored"),
        (["rm", "alice", "--clip", "zzz.wav"], "Error: Voice 'alice' has no clip named 'zzz.wav'"),
        (["add", "alice", "CLIP", "--language", "en"], "Error: A voice named 'alice' is already"),
        (["add", "carol", "CLIP", "--language", "xx"], "Error: Language 'xx' is not one XTTS-v2"),
        (["add", "carol", "CLIP"], "Error: A new voice needs a language"),
    ],
)
def test_bad_input_exits_1_with_one_paragraph(capsys, voices_dir, make_clip, argv, message):
    clip = make_clip("c.wav")
    store = VoiceStore(voices_dir)
    store.add("alice", [make_clip("a.wav")], "en")
    store.add("alice2", [make_clip("b.wav")], "en")
    before = sorted(str(p) for p in voices_dir.rglob("*"))

    code, out, err = run_cli(capsys, *[str(clip) if a == "CLIP" else a for a in argv])

    assert (code, out) == (1, "")
    assert err.startswith(message)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(str(p) for p in voices_dir.rglob("*")) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Error: The following arguments are required: COMMAND."),
        (["add", "alice"], "Error: The following arguments are required: CLIP."),
        (["play", "alice"], "Error: Argument COMMAND: invalid choice: 'play'"),
    ],
)
def test_a_usage_mistake_exits_1_with_the_usage(capsys, voices_dir, argv, message):
    with pytest.raises(SystemExit) as exited:
        main(argv)

    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert err.startswith("usage: python -m avatar.voice")
    assert err.splitlines()[-1].startswith(message)


def test_list_json_is_machine_readable(capsys, voices_dir, make_clip):
    store = VoiceStore(voices_dir)
    write_cache_entry(store.add("Alice", [make_clip("a.wav"), make_clip("b.wav")], "zh_cn"))

    code, out, _ = run_cli(capsys, "--json", "list")

    assert code == 0
    assert json.loads(out) == {
        "schema_version": 1,
        "voices_dir": str(voices_dir),
        "voices": [
            {
                "name": "Alice",
                "language": "zh-cn",
                "created": store.get("alice").created,
                "clips": 2,
                "total_s": 3.0,
                "cached_models": ["xtts_v2"],
                "dir": str(voices_dir / "alice"),
                "speaker_check": None,  # stored through the API without the speaker check
            }
        ],
        "errors": [],
    }


def test_show_json_has_every_clip_and_cache_entry(capsys, voices_dir, make_clip):
    voice = VoiceStore(voices_dir).add(
        "alice", [make_clip("a.wav", sample_rate_hz=44_100, channels=2)], "en"
    )
    write_cache_entry(voice)

    code, out, _ = run_cli(capsys, "show", "alice", "--json")  # --json after the command too

    assert code == 0
    shown = json.loads(out)["voice"]
    assert shown["name"] == "alice"
    assert shown["clips_sha256"] == voice.clips_sha256
    assert shown["clips"] == [
        {
            "file": "clips/01-a.wav",
            "original_name": "a.wav",
            "sha256": voice.clips[0].sha256,
            "duration_s": 1.5,
            "sample_rate_hz": 22050,
            "original_sample_rate_hz": 44100,
            "original_channels": 2,
            "checks": [],
        }
    ]
    (entry,) = shown["cache"]
    assert (entry["model"], entry["current"], entry["has_latents"]) == ("xtts_v2", True, True)


def test_a_damaged_voice_is_reported_while_the_others_are_listed(capsys, voices_dir, make_clip):
    store = VoiceStore(voices_dir)
    store.add("alice", [make_clip("a.wav")], "en")
    bob = store.add("bob", [make_clip("b.wav")], "en")
    (bob.dir / "manifest.json").write_text("{not json")

    code, out, err = run_cli(capsys, "list")
    assert code == 1
    assert "  alice  en" in out
    assert "  bob    ?" in out
    assert err.startswith(f"Error: The voice in {bob.dir} is damaged: its manifest ")
    assert str(bob.dir / "manifest.json") in err

    code, out, _ = run_cli(capsys, "list", "--json")
    listed = json.loads(out)
    assert code == 1
    assert [v["name"] for v in listed["voices"]] == ["alice"]
    assert listed["errors"][0]["dir"] == str(bob.dir)
    assert "manifest.json" in listed["errors"][0]["error"]


def test_voices_dir_option_wins_over_the_environment(capsys, voices_dir, make_clip, tmp_path):
    other = tmp_path / "other"

    code, _, _ = run_cli(
        capsys, "--voices-dir", str(other), "add", "a", str(make_clip("a.wav")), "--language", "en"
    )

    assert code == 0
    assert [v.name for v in VoiceStore(other).list()] == ["a"]
    assert not voices_dir.exists()


def test_an_empty_store_says_how_to_add_a_voice(capsys, voices_dir):
    code, out, _ = run_cli(capsys, "list")

    assert code == 0
    assert out == (
        f"No voices in {voices_dir} yet. Store one: "
        "python -m avatar.voice add NAME CLIP... --language en\n"
    )


def test_an_internal_error_exits_2(capsys, voices_dir, monkeypatch):
    def broken(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(VoiceStore, "list", broken)

    code, _, err = run_cli(capsys, "list")

    assert code == 2
    assert "RuntimeError: a bug" in err
    assert "Internal error in avatar" in err


# ---------------------------------------------------------------- as a separate process

# Runs `python -m avatar.voice` several times in one process while recording every
# attempt to import torch or coqui-tts (TTS), even one that would fail or be caught.
IMPORT_WATCH = """
import json, runpy, sys

attempts = []

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "TTS", "torchaudio"):
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
def test_list_show_rename_and_rm_never_import_torch_or_coqui(voices_dir, make_clip):
    VoiceStore(voices_dir).add("alice", [make_clip("a.wav"), make_clip("b.wav")], "en")
    commands = [
        ["list"],
        ["--json", "list"],
        ["show", "alice"],
        ["rename", "alice", "bob"],
        ["rm", "bob", "--clip", "a.wav"],
        ["rm", "bob"],
    ]

    done = subprocess.run(
        [sys.executable, "-c", IMPORT_WATCH, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AVATAR_VOICES_DIR": str(voices_dir)},
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0, 0, 0], "attempts": []}


@pytest.mark.slow
def test_python_m_avatar_voice_as_a_user_types_it(voices_dir, make_clip, tmp_path):
    clip = make_clip("alice_1.wav", sample_rate_hz=48_000, channels=2)
    env = {**os.environ, "AVATAR_VOICES_DIR": str(voices_dir)}

    def voice(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "avatar.voice", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )

    added = voice("add", "alice", str(clip.relative_to(tmp_path)), "--language", "en")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("Stored voice 'alice' (en): 1 clip, 1.5 s")
    missing = voice("show", "nobody")
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error: There is no voice named 'nobody'.")
    assert "Traceback" not in missing.stderr
    assert Path(voices_dir / "alice" / "manifest.json").is_file()
