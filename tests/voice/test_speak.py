"""`python -m avatar.speak` as a user runs it: a subprocess in a temp dir, fake NVML (no GPU).

Every bad input is one paragraph on stderr, exit status 1, no traceback and no file
written; good input writes a 24 kHz WAV; a sweep writes one file per job.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import CPU_MODE_WARNING, HYDRA_TRAILER, CliResult, run_avatar
from fakes import fake_nvml_env

pytest.importorskip("TTS")

from tiny_xtts import session_tiny_xtts

from avatar.stages.voice.store import VoiceStore

ClipMaker = Callable[..., Path]  # the make_clip fixture (tests/voice/conftest.py)

pytestmark = pytest.mark.slow
SPEAK_TIMEOUT_S = 300


def run_speak(*args: str, cwd: Path, voices: Path) -> CliResult:
    """`python -m avatar.speak ARGS` in `cwd`, its store `voices`, and its caches (the
    checkpoint identities) beside the store, never in the user's home."""
    env = {
        "AVATAR_VOICES_DIR": str(voices),
        "XDG_CACHE_HOME": str(voices.parent / "cache"),
        "TTS_HOME": str(voices.parent / "tts"),  # coqui-tts's model folder: empty, never the user's
        "OMP_NUM_THREADS": "1",
    }
    return run_avatar(*args, cwd=cwd, env=env, module="avatar.speak", timeout_s=SPEAK_TIMEOUT_S)


def error_lines(result: CliResult) -> list[str]:
    return [
        line
        for line in result.stderr.splitlines()
        if line.strip()
        and CPU_MODE_WARNING not in line
        and line.strip() != HYDRA_TRAILER
        and "[transformers]" not in line
    ]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    return session_tiny_xtts(tmp_path_factory.getbasetemp())


@pytest.fixture
def voices(tmp_path: Path, make_clip: ClipMaker) -> Path:
    root = tmp_path / "voices"
    VoiceStore(root).add("alice", [make_clip("alice_1.wav", seconds=2.0)], "en")
    return root


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "taken.wav").write_bytes(b"mine")
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    return folder


def _bad_inputs(checkpoint: Path, incomplete: Path) -> list[tuple[list[str], str]]:
    xtts = ["voice=xtts_v2", f"voice.checkpoint_dir={checkpoint}"]
    return [
        ([*xtts, "speaker=bob", "text=Hi."], "Stored voices"),
        ([*xtts, "speaker=alice", "text=   "], "text to speak is empty"),
        ([*xtts, "speaker=alice", "text_file=missing.txt"], "missing.txt"),
        ([*xtts, "speaker=alice", "text_file=latin1.txt"], "UTF-8"),
        ([*xtts, "speaker=alice", "text=Hi.", "text_file=latin1.txt"], "Both text= and text_file="),
        ([*xtts, "speaker=alice", "text=Hi.", "voice.language=xx"], "zh-cn"),
        (
            ["voice=xtts_v2", f"voice.checkpoint_dir={incomplete}", "speaker=alice", "text=Hi."],
            "no vocab.json",
        ),
        (["voice=xtts_v2", "speaker=alice", "text=Hi."], "COQUI_TOS_AGREED=1"),  # no weights
        ([*xtts, "speaker=alice", "text=Hi.", "out=nowhere/x.wav"], "does not exist"),
        ([*xtts, "speaker=alice", "text=Hi.", "out=taken.wav"], "overwrite=true"),
        (["profile=cpu", "speaker=alice", "text=Hi."], "voice=xtts_v2"),
        (["profile=cpu", "text=Bonjour.", "voice.language=fr"], "voice=xtts_v2"),
    ]


def test_each_bad_input_is_one_paragraph_exit_1_and_writes_nothing(
    tiny_checkpoint: Path, voices: Path, work: Path, tmp_path: Path
) -> None:
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in ("config.json", "model.pth"):
        (incomplete / name).write_bytes((tiny_checkpoint / name).read_bytes()[:100])
    before = sorted(p.name for p in work.iterdir())
    for args, expected in _bad_inputs(tiny_checkpoint, incomplete):
        result = run_speak(*args, cwd=work, voices=voices)

        lines = error_lines(result)
        assert result.returncode == 1, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.stderr)
        assert expected in lines[0], (args, lines[0])
        assert "Traceback" not in result.output
        assert sorted(p.name for p in work.iterdir()) == before, args
    assert (work / "taken.wav").read_bytes() == b"mine"


def test_avatar_status_does_not_take_the_speak_keys(tmp_path: Path) -> None:
    env = fake_nvml_env(None)
    proc = subprocess.run(
        [sys.executable, "-m", "avatar", "speaker=alice"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SPEAK_TIMEOUT_S,
        check=False,
    )

    assert proc.returncode == 1 and "speaker" in proc.stderr


def test_the_light_voice_speaks_offline_on_the_cpu_profile(work: Path, voices: Path) -> None:
    import soundfile

    result = run_speak("profile=cpu", "text=Hello there.", "out=hello.wav", cwd=work, voices=voices)

    assert result.returncode == 0, result.output
    info = soundfile.info(str(work / "hello.wav"))
    assert info.samplerate == 24_000 and info.frames / info.samplerate > 0.3
    assert "real-time factor" in result.stdout and "hibari" in result.stdout


def test_a_stored_voice_speaks_from_a_text_file(
    tiny_checkpoint: Path, voices: Path, work: Path
) -> None:
    import soundfile

    (work / "chapter.txt").write_text("A first sentence. And a second one.", encoding="utf-8")
    result = run_speak(
        "voice=xtts_v2",
        f"voice.checkpoint_dir={tiny_checkpoint}",
        "speaker=alice",
        "text_file=chapter.txt",
        "out=chapter.wav",
        cwd=work,
        voices=voices,
    )

    assert result.returncode == 0, result.output
    assert soundfile.info(str(work / "chapter.wav")).samplerate == 24_000
    assert "latents: computed" in result.stdout and "2 piece(s)" in result.stdout


def test_a_sweep_writes_one_file_per_job_inside_its_job_dir(
    tiny_checkpoint: Path, voices: Path, work: Path
) -> None:
    result = run_speak(
        "-m",
        "voice=xtts_v2",
        f"voice.checkpoint_dir={tiny_checkpoint}",
        "speaker=alice",
        "text=Hi.",
        "voice.temperature=0.5,0.75",
        "hydra.sweep.dir=sweep",
        cwd=work,
        voices=voices,
    )

    assert result.returncode == 0, result.output
    written = sorted(p.relative_to(work).as_posix() for p in work.rglob("speech.wav"))
    assert written == ["sweep/0/speech.wav", "sweep/1/speech.wav"]
    assert "2 jobs, 2 ok, 0 failed" in result.stdout
    assert "latents: computed" in result.stdout and "latents: reused" in result.stdout


def test_the_speak_command_imports_no_model_library_before_it_loads_one(tmp_path: Path) -> None:
    """Bad input is answered without importing torch, coqui-tts or onnxruntime."""
    code = (
        "import sys, avatar.speak, avatar.cli.speak, avatar.voice; "
        "print(sorted(m for m in ('torch', 'TTS', 'onnxruntime', 'hibari') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=fake_nvml_env(None),
        capture_output=True,
        text=True,
        timeout=SPEAK_TIMEOUT_S,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
