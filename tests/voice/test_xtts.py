"""XTTS-v2 through coqui-tts's real code path, with a tiny random checkpoint built here.

Loading, cloning, the latent cache, splitting long text, writing the WAV and the stage
guard all run for real (torch on one thread); only the weights are random, so what is
checked is the plumbing a user relies on, not how the voice sounds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeGPU, FakeNvmlModule

torch = pytest.importorskip("torch")
pytest.importorskip("TTS")

from tiny_xtts import session_tiny_xtts  # noqa: E402

from avatar.config import load_config  # noqa: E402
from avatar.errors import AvatarUserError  # noqa: E402
from avatar.stages.voice import checkpoint as checkpoint_module  # noqa: E402
from avatar.stages.voice import cloner  # noqa: E402
from avatar.stages.voice.checkpoint import (  # noqa: E402
    CheckpointError,
    check_checkpoint_dir,
    checkpoint_identity,
    resolve_checkpoint_dir,
)
from avatar.stages.voice.store import VoiceStore  # noqa: E402
from avatar.stages.voice.synthesizer import SpeakInputError, Synthesizer  # noqa: E402
from avatar.vram import InsufficientVRAMError  # noqa: E402

ClipMaker = Callable[..., Path]  # the make_clip fixture (tests/voice/conftest.py)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per test session (about 90 MB, a few seconds)."""
    torch.set_num_threads(1)
    return session_tiny_xtts(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def store(tmp_path: Path, make_clip: ClipMaker) -> VoiceStore:
    voices = VoiceStore(tmp_path / "voices")
    voices.add("alice", [make_clip("alice_1.wav", seconds=2.0)], "en")
    return voices


@pytest.fixture
def xtts_config(tiny_checkpoint: Path, store: VoiceStore) -> Callable[..., Any]:
    def compose(*overrides: str) -> Any:
        return load_config(
            [
                "voice=xtts_v2",
                f"voice.checkpoint_dir={tiny_checkpoint}",
                f"voices_dir={store.root}",
                *overrides,
            ]
        )

    return compose


@pytest.fixture
def synth(
    xtts_config: Callable[..., Any], store: VoiceStore, tmp_path: Path
) -> Iterator[Synthesizer]:
    with Synthesizer(xtts_config(), store=store, id_cache_file=tmp_path / "ids.json") as loaded:
        yield loaded


def _wav_info(path: Path) -> tuple[int, float]:
    import soundfile

    info = soundfile.info(str(path))
    return info.samplerate, info.frames / info.samplerate


# ---------------------------------------------------------------- speaking


def test_speaking_writes_a_24khz_wav_as_long_as_reported(
    synth: Synthesizer, tmp_path: Path
) -> None:
    out = tmp_path / "hello.wav"

    result = synth.speak("Hello there.", speaker="alice", out=out)

    rate_hz, seconds = _wav_info(out)
    assert rate_hz == 24_000
    assert seconds == pytest.approx(result.audio_s, abs=1e-3) and seconds > 0
    assert result.latents == "computed" and result.language == "en"
    assert result.real_time_factor == pytest.approx(result.wall_s / result.audio_s)


def test_the_stage_record_is_filled_in_when_the_synthesizer_closes(
    xtts_config: Callable[..., Any], store: VoiceStore, tmp_path: Path
) -> None:
    synth = Synthesizer(xtts_config(), store=store, id_cache_file=tmp_path / "ids.json")
    with synth:
        synth.speak("Hi.", speaker="alice")

    assert synth.record is not None
    assert (synth.record.name, synth.record.device, synth.record.error) == ("voice", "cpu", None)
    with pytest.raises(RuntimeError, match="inside `with`"):
        synth.speak("Hi again.", speaker="alice")  # the model is gone after the block


def test_long_text_is_spoken_in_pieces_of_at_most_max_chars_joined_by_pauses(
    xtts_config: Callable[..., Any], store: VoiceStore, tmp_path: Path
) -> None:
    text = "The first sentence is here. A second one follows it. And a third ends it."
    spoken: list[str] = []
    cfg = xtts_config("voice.max_chars.en=30", "voice.pause_s=0.5")
    with Synthesizer(cfg, store=store, id_cache_file=tmp_path / "ids.json") as synth:
        model = synth._model
        real_inference = model.inference

        def recording(piece: str, *args: Any, **kwargs: Any) -> Any:
            spoken.append(piece)
            return real_inference(piece, *args, **kwargs)

        model.inference = recording
        result = synth.speak(text, speaker="alice")

    assert result.pieces == len(spoken) >= 3
    assert all(len(piece) <= 30 for piece in spoken)
    assert "".join(spoken).replace(" ", "") == text.replace(" ", "")
    assert result.audio_s >= (len(spoken) - 1) * 0.5  # the pauses between pieces


def test_zh_cn_and_zh_underscore_cn_name_the_same_language(
    xtts_config: Callable[..., Any], store: VoiceStore, tmp_path: Path
) -> None:
    with Synthesizer(
        xtts_config("voice.language=zh_cn"), store=store, id_cache_file=tmp_path / "ids.json"
    ) as synth:
        result = synth.speak("你好。今天天气很好。", speaker="alice")

    assert result.language == "zh-cn" and result.audio_s > 0


def test_an_existing_output_is_kept_unless_overwrite(synth: Synthesizer, tmp_path: Path) -> None:
    out = tmp_path / "taken.wav"
    out.write_bytes(b"mine")

    with pytest.raises(SpeakInputError, match="overwrite=true"):
        synth.speak("Hello.", speaker="alice", out=out)
    assert out.read_bytes() == b"mine"

    synth.speak("Hello.", speaker="alice", out=out, overwrite=True)
    assert _wav_info(out)[0] == 24_000


# ---------------------------------------------------------------- the latent cache


def test_the_second_use_of_a_voice_computes_no_latents(
    xtts_config: Callable[..., Any],
    store: VoiceStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = tmp_path / "ids.json"
    with Synthesizer(xtts_config(), store=store, id_cache_file=ids) as synth:
        first = synth.speak("One.", speaker="alice")

    def no_computing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("latents computed again")

    monkeypatch.setattr(cloner, "compute_latents", no_computing)
    with Synthesizer(xtts_config(), store=store, id_cache_file=ids) as synth:
        second = synth.speak("Two.", speaker="alice")

    assert (first.latents, second.latents) == ("computed", "reused")
    entries = store.cache_entries(store.get("alice"))
    assert len(entries) == 1 and entries[0].current and entries[0].has_latents
    assert entries[0].model == "xtts_v2" and len(entries[0].checkpoint_id) == 64


def test_a_changed_clip_recomputes_the_latents(
    synth: Synthesizer, store: VoiceStore, make_clip: ClipMaker
) -> None:
    synth.speak("Before.", speaker="alice")
    store.add("alice", [make_clip("alice_2.wav", seconds=1.5)], None, append=True)

    after = synth.speak("After.", speaker="alice")

    assert after.latents == "computed"
    current = [e for e in store.cache_entries(store.get("alice")) if e.current]
    assert len(current) == 1


def test_a_damaged_cache_entry_is_computed_again(synth: Synthesizer, store: VoiceStore) -> None:
    synth.speak("First.", speaker="alice")
    (tensor_file,) = store.get("alice").cache_dir.glob("*.pt")
    tensor_file.write_bytes(b"torn")

    again = synth.speak("Second.", speaker="alice")

    assert again.latents == "computed"
    assert torch.load(tensor_file, weights_only=True)["speaker_embedding"].shape == (1, 512, 1)


def test_concurrent_writers_of_one_cache_entry_never_leave_a_torn_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    latents = [
        cloner.Latents(torch.full((1, 32, 64), float(i)), torch.full((1, 512, 1), float(i)))
        for i in range(4)
    ]
    failures: list[BaseException] = []
    stop = threading.Event()

    def write(i: int) -> None:
        for _ in range(15):
            cloner.save_cached(
                cache, "key", latents[i], checkpoint_id="c" * 64, clips_sha256="d" * 64, seconds=1
            )

    def read() -> None:
        while not stop.is_set():
            got = cloner.load_cached(cache, "key", "c" * 64, "d" * 64)
            if got is not None and not torch.equal(
                got.gpt_cond_latent[0, 0, :1].expand(32, 64), got.gpt_cond_latent[0]
            ):
                failures.append(AssertionError("mixed tensor"))

    writers = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    reader = threading.Thread(target=read)
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()

    assert not failures
    assert cloner.load_cached(cache, "key", "c" * 64, "d" * 64) is not None
    assert sorted(p.name for p in cache.iterdir()) == ["key.json", "key.pt"]  # no temp files


# ---------------------------------------------------------------- the checkpoint


def test_the_checkpoint_identity_is_hashed_once_and_remembered(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = tmp_path / "ids.json"
    first = checkpoint_identity(tiny_checkpoint, cache_file=ids)

    def no_hashing(paths: list[Path]) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(checkpoint_module, "_sha256_of_files", no_hashing)
    assert checkpoint_identity(tiny_checkpoint, cache_file=ids) == first
    assert len(first) == 64


def test_a_changed_checkpoint_file_gets_a_new_identity(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("config.json", "model.pth", "vocab.json"):
        (folder / name).write_text(name)
    ids = tmp_path / "ids.json"
    before = checkpoint_identity(folder, cache_file=ids)

    (folder / "model.pth").write_text("other weights")

    assert checkpoint_identity(folder, cache_file=ids) != before


def test_a_checkpoint_folder_missing_a_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "xtts"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.pth").write_bytes(b"")

    with pytest.raises(CheckpointError) as raised:
        check_checkpoint_dir(folder)

    assert "no vocab.json" in str(raised.value) and "config.json" not in str(raised.value)[:60]
    assert "voice.checkpoint_dir=" in str(raised.value)


def test_without_a_checkpoint_or_the_licence_agreed_nothing_is_downloaded(tmp_path: Path) -> None:
    downloads: list[int] = []

    def download() -> Path:
        downloads.append(1)
        return tmp_path

    with pytest.raises(CheckpointError) as raised:
        resolve_checkpoint_dir(None, env={}, coqui_dir=lambda: tmp_path / "none", download=download)

    message = str(raised.value)
    assert not downloads
    assert "COQUI_TOS_AGREED=1" in message and "voice.checkpoint_dir=" in message
    assert "huggingface.co/coqui/XTTS-v2" in message and "CPML" in message


def test_with_the_licence_agreed_coquis_manager_downloads(tiny_checkpoint: Path) -> None:
    folder = resolve_checkpoint_dir(
        None,
        env={"COQUI_TOS_AGREED": "1"},
        coqui_dir=lambda: tiny_checkpoint / "not-there",
        download=lambda: tiny_checkpoint,
    )

    assert folder == tiny_checkpoint


# ---------------------------------------------------------------- refusals before loading


def test_a_model_that_does_not_fit_is_refused_naming_a_lighter_option(
    fake_nvml: Callable[..., FakeNvmlModule],
    xtts_config: Callable[..., Any],
    store: VoiceStore,
    tmp_path: Path,
) -> None:
    fake_nvml([FakeGPU("NVIDIA GeForce GTX 1650", total_mib=4096, used_mib=3000)])
    cfg = xtts_config("profile=low_vram")

    with pytest.raises(InsufficientVRAMError) as raised:
        Synthesizer(cfg, store=store, id_cache_file=tmp_path / "ids.json").__enter__()

    assert "voice=hibari" in str(raised.value)
    assert isinstance(raised.value, AvatarUserError)


def test_the_light_voice_refuses_a_stored_speaker_naming_xtts(
    store: VoiceStore, tiny_checkpoint: Path
) -> None:
    synth = Synthesizer(load_config(["profile=cpu", f"voices_dir={store.root}"]), store=store)

    with pytest.raises(AvatarUserError, match="voice=xtts_v2"):
        synth.check_speaker("alice")


def test_an_unknown_speaker_lists_the_stored_ones(synth: Synthesizer) -> None:
    with pytest.raises(AvatarUserError, match="alice"):
        synth.speak("Hello.", speaker="bob")


def test_the_cache_json_matches_the_store_interface(synth: Synthesizer, store: VoiceStore) -> None:
    synth.speak("Hello.", speaker="alice")
    voice = store.get("alice")
    (meta_file,) = voice.cache_dir.glob("*.json")

    meta = json.loads(meta_file.read_text())

    assert set(meta) == {"model", "checkpoint_id", "clips_sha256", "created", "seconds"}
    assert meta["clips_sha256"] == voice.clips_sha256
    assert meta_file.stem == f"xtts_v2-{meta['checkpoint_id'][:12]}-{voice.clips_sha256[:12]}"


def test_an_error_inside_the_block_is_recorded_by_the_stage(
    xtts_config: Callable[..., Any], store: VoiceStore, tmp_path: Path
) -> None:
    synth = Synthesizer(xtts_config(), store=store, id_cache_file=tmp_path / "ids.json")

    with pytest.raises(SpeakInputError), synth:
        synth.speak("   ", speaker="alice")

    assert synth.record is not None and "SpeakInputError" in (synth.record.error or "")


def test_coquis_model_folder_is_where_its_own_manager_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by hand: the helper once imported a function coqui-tts 0.28 no longer has."""
    from avatar.stages.voice.checkpoint import coqui_model_dir

    monkeypatch.setenv("TTS_HOME", str(tmp_path))

    assert (
        coqui_model_dir() == tmp_path / "tts" / "tts_models--multilingual--multi-dataset--xtts_v2"
    )
