"""The voice store from Python: add, list, get, rename, remove, clip checks, names, cache."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from avatar.errors import AvatarUserError, ConfigValueError
from avatar.stages.voice.audio import (
    ClipError,
    ClipRules,
    clip_rules_from_config,
    xtts_clip_rules,
)
from avatar.stages.voice.languages import XTTS_LANGUAGES, UnsupportedLanguageError
from avatar.stages.voice.locking import StoreBusyError, store_lock
from avatar.stages.voice.store import (
    SPEAKER_FILE,
    InvalidVoiceNameError,
    UnknownVoiceError,
    Voice,
    VoiceError,
    VoiceExistsError,
    VoiceStore,
    VoiceStoreError,
    atomic_write_bytes,
    default_voices_dir,
    resolve_voices_dir,
    voice_key,
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_entries(root: Path) -> list[str]:
    """What the store folder holds besides its lock file (nothing, if it does not exist)."""
    return sorted(p.name for p in root.iterdir() if p.name != ".lock") if root.exists() else []


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------- adding


def test_add_stores_mono_22050_hz_copies_of_any_rate_and_channel_count(store, make_clip):
    stereo = make_clip("alice_1.wav", seconds=2.0, sample_rate_hz=48_000, channels=2)
    flac = make_clip("alice_2.flac", seconds=1.5, sample_rate_hz=16_000)

    voice = store.add("alice", [stereo, flac], "en")

    assert [c.original_name for c in voice.clips] == ["alice_1.wav", "alice_2.flac"]
    assert [c.original_sample_rate_hz for c in voice.clips] == [48_000, 16_000]
    assert [c.original_channels for c in voice.clips] == [2, 1]
    assert [c.duration_s for c in voice.clips] == [pytest.approx(2.0), pytest.approx(1.5)]
    for clip, path in zip(voice.clips, voice.clip_paths(), strict=True):
        info = soundfile.info(path)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (
            22_050,
            1,
            "WAV",
            "PCM_16",
        )
        assert info.duration == pytest.approx(clip.duration_s, abs=1e-3)
        assert clip.sha256 == sha256_of(path)
    assert voice.total_s == pytest.approx(3.5)


def test_the_users_clips_are_never_changed(store, make_clip):
    clips = [make_clip("a.wav", sample_rate_hz=44_100, channels=2), make_clip("b.flac")]
    before = [(sha256_of(p), p.stat().st_mtime_ns) for p in clips]

    voice = store.add("alice", clips, "en")
    store.add("alice", [make_clip("c.wav", seed=5)], None, append=True)
    store.remove("alice", clip="a.wav")
    store.rename("alice", "alicia")
    store.remove("alicia")

    assert [(sha256_of(p), p.stat().st_mtime_ns) for p in clips] == before
    assert not voice.dir.exists()


def test_manifest_records_name_language_created_and_each_clips_facts(store, make_clip):
    voice = store.add("Alice", [make_clip("take one.wav", sample_rate_hz=48_000)], "en")

    manifest = json.loads((voice.dir / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert (manifest["name"], manifest["language"]) == ("Alice", "en")
    assert manifest["created"].startswith(voice.created[:10])
    (clip,) = manifest["clips"]
    assert clip["original_name"] == "take one.wav"
    assert clip["file"] == "clips/01-take_one.wav"
    assert clip["sha256"] == sha256_of(voice.dir / clip["file"])
    assert clip["sample_rate_hz"] == 22_050
    assert clip["original_sample_rate_hz"] == 48_000
    assert clip["original_channels"] == 1
    assert clip["checks"] == []
    assert sorted(p.name for p in voice.dir.iterdir()) == ["cache", "clips", "manifest.json"]


def test_a_voice_is_found_by_its_name_in_any_letter_case(store, make_clip):
    store.add("Alice", [make_clip("a.wav")], "en")

    assert store.get("ALICE").name == "Alice"
    assert store.get("alice").dir == store.root / "alice"


def test_adding_a_name_that_differs_only_in_case_is_refused(store, make_clip):
    first = store.add("Alice", [make_clip("a.wav")], "en")
    before = files_under(store.root)

    with pytest.raises(VoiceExistsError, match=r"'Alice' is already stored.*--append"):
        store.add("ALICE", [make_clip("b.wav", seed=3)], "en")

    assert files_under(store.root) == before
    assert store.get("alice") == first


def test_append_adds_clips_after_the_stored_ones(store, make_clip):
    store.add("alice", [make_clip("a.wav"), make_clip("b.wav", seed=2)], "en")

    voice = store.add("Alice", [make_clip("c.wav", seed=3)], None, append=True)

    assert [c.file for c in voice.clips] == ["clips/01-a.wav", "clips/02-b.wav", "clips/03-c.wav"]
    assert voice.name == "alice"  # the stored name stays
    assert files_under(voice.dir / "clips") == ["01-a.wav", "02-b.wav", "03-c.wav"]


def test_append_to_a_missing_voice_is_refused_and_lists_the_stored_ones(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")

    with pytest.raises(UnknownVoiceError, match=r"no voice named 'bob'.*: alice\."):
        store.add("bob", [make_clip("b.wav", seed=2)], "en", append=True)
    assert not (store.root / "bob").exists()


def test_append_in_another_language_is_refused(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")

    with pytest.raises(AvatarUserError, match="stored with language en, not fr"):
        store.add("alice", [make_clip("b.wav", seed=2)], "fr", append=True)
    assert len(store.get("alice").clips) == 1


def test_the_same_recording_twice_is_refused(store, make_clip):
    clip = make_clip("a.wav")
    copy = clip.with_name("a_copy.wav")
    copy.write_bytes(clip.read_bytes())
    store.add("alice", [clip], "en")

    with pytest.raises(ClipError, match=r"a_copy.wav is the same audio as one already in"):
        store.add("alice", [copy], None, append=True)
    with pytest.raises(ClipError, match=r"a_copy.wav is the same audio as one given before"):
        store.add("bob", [clip, copy], "en")
    assert [v.name for v in store.list()] == ["alice"]


# ---------------------------------------------------------------- languages


def test_a_new_voice_needs_a_language(store, make_clip):
    with pytest.raises(AvatarUserError, match=r"needs a language.*en, es, fr"):
        store.add("alice", [make_clip("a.wav")], None)
    assert stored_entries(store.root) == []


@pytest.mark.parametrize(
    ("given", "stored"), [("zh_cn", "zh-cn"), ("ZH-CN", "zh-cn"), ("EN", "en")]
)
def test_language_codes_are_accepted_in_either_spelling(store, make_clip, given, stored):
    assert store.add("v", [make_clip("a.wav")], given).language == stored


def test_an_unknown_language_lists_the_17(store, make_clip):
    with pytest.raises(UnsupportedLanguageError) as caught:
        store.add("alice", [make_clip("a.wav")], "klingon")
    message = str(caught.value)
    assert "'klingon'" in message
    assert all(code in message for code in XTTS_LANGUAGES)
    assert len(XTTS_LANGUAGES) == 17
    assert not (store.root / "alice").exists()


# ---------------------------------------------------------------- clip checks


def test_each_refused_clip_gets_one_paragraph_naming_it_and_nothing_is_written(
    store, make_clip, tmp_path
):
    good = make_clip("good.wav")
    silent = make_clip("silent.wav", kind="silent")
    short = make_clip("short.wav", seconds=0.2)
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    missing = tmp_path / "missing.flac"

    with pytest.raises(ClipError) as caught:
        store.add("alice", [good, silent, short, text, missing], "en")

    paragraphs = str(caught.value).split("\n\n")
    assert len(paragraphs) == 4
    assert f"Clip {silent} is silent" in paragraphs[0]
    assert f"Clip {short} is too short: 0.20 s" in paragraphs[1]
    assert "at least 1 s" in paragraphs[1]
    assert f"Clip {text} is unreadable or not audio" in paragraphs[2]
    assert f"Clip {missing} does not exist" in paragraphs[3]
    assert not any("\n" in p for p in paragraphs)
    assert stored_entries(store.root) == []


def test_a_folder_given_as_a_clip_is_refused(store, tmp_path):
    with pytest.raises(ClipError, match=r"is a folder, not an audio file"):
        store.add("alice", [tmp_path], "en")


def test_quiet_speech_is_kept_and_near_silence_is_refused(store, make_clip):
    # RMS of this noise: amplitude / 3 -> about -50 dBFS at amplitude 0.0095.
    quiet = make_clip("quiet.wav", kind="noise", amplitude=0.03)  # about -40 dBFS
    hiss = make_clip("hiss.wav", kind="noise", amplitude=0.003)  # about -60 dBFS

    store.add("quiet", [quiet], "en")
    with pytest.raises(
        ClipError, match=r"hiss.wav is silent: it has an RMS level of -6\d\.\d dBFS"
    ):
        store.add("hiss", [hiss], "en")


def test_a_clipped_clip_is_kept_with_a_warning(store, make_clip):
    voice = store.add("loud", [make_clip("loud.wav", kind="clipped")], "en")

    (check,) = voice.clips[0].checks
    assert check.startswith("mostly clipped: ")
    assert "% of samples at full scale" in check


def test_a_clip_longer_than_the_model_uses_is_kept_with_a_warning_on_the_part_used(
    store, make_clip
):
    rules = ClipRules(min_s=1.0, max_used_s=2.0, silence_dbfs=-50.0, clipped_warn_fraction=0.01)

    voice = store.add("long", [make_clip("long.wav", seconds=3.0)], "en", rules=rules)

    assert voice.clips[0].checks == (
        "longer than XTTS-v2 uses: 3.0 s, of which only the first 2 s (0:00 to 0:02) is used",
    )
    assert voice.clips[0].duration_s == pytest.approx(3.0)  # the whole clip is kept


def test_clip_rules_come_from_the_voice_config():
    cfg = {
        "voice": {
            "clips": {
                "min_s": 2,
                "max_used_s": 20,
                "silence_dbfs": -45,
                "clipped_warn_fraction": 0.1,
            }
        }
    }

    assert clip_rules_from_config(cfg) == ClipRules(2.0, 20.0, -45.0, 0.1)
    with pytest.raises(ConfigValueError, match=r"'hibari' has no clip rules \(voice.clips\)"):
        clip_rules_from_config({"voice": {"name": "hibari"}})


def test_the_stores_default_clip_rules_are_the_composed_xtts_config():
    from avatar.config import load_config

    composed = clip_rules_from_config(load_config(["voice=xtts_v2", "profile=cpu"]))

    assert xtts_clip_rules() == composed
    assert composed.min_s >= 0.33  # coqui-tts cannot use less


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "cannot be empty"),
        (".hidden", "starts with '.'"),
        ("..", "starts with '.'"),
        ("a..b", "contains '..'"),
        ("a/b", "path separators"),
        ("a\\b", "path separators"),
        ("what?", "path separators"),
        ("tab\there", "control character"),
        ("line\nbreak", "control character"),
        (" alice", "starts or ends with a space"),
        ("x" * 65, "longer than 64 characters"),
    ],
)
def test_bad_names_are_refused_with_the_reason(store, make_clip, name, problem):
    with pytest.raises(InvalidVoiceNameError, match=problem):
        store.add(name, [make_clip("a.wav")], "en")
    assert stored_entries(store.root) == []


@pytest.mark.parametrize("name", ["Zoë", "narrator-fr", "Bob_2", "Dr. Who", "x" * 64, "名前"])
def test_good_names_are_stored_under_their_case_folded_key(store, make_clip, name):
    voice = store.add(name, [make_clip("a.wav")], "en")

    assert voice.name == name
    assert voice.dir.name == voice_key(name) == voice_key(name.upper())


# ---------------------------------------------------------------- listing and showing


def test_list_gives_every_voice_by_name(store, make_clip):
    store.add("carol", [make_clip("c.wav")], "fr")
    store.add("Alice", [make_clip("a.wav", seed=1)], "en")
    store.add("bob", [make_clip("b.wav", seed=2), make_clip("b2.wav", seed=3)], "de")

    voices = store.list()

    assert [(v.name, v.language, len(v.clips)) for v in voices] == [
        ("Alice", "en", 1),
        ("bob", "de", 2),
        ("carol", "fr", 1),
    ]


def test_an_empty_or_missing_store_lists_nothing_and_creates_nothing(voices_dir):
    assert VoiceStore(voices_dir).list() == []
    assert not voices_dir.exists()


def test_a_damaged_manifest_is_an_error_naming_its_file_and_the_others_are_listed(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")
    bob = store.add("bob", [make_clip("b.wav", seed=2)], "en")
    (bob.dir / "manifest.json").write_text('{"schema_version": 1, "name": "bob", "clips": [')

    found = store.list()

    assert [v.name for v in found if isinstance(v, Voice)] == ["alice"]
    (error,) = [v for v in found if isinstance(v, VoiceError)]
    assert str(bob.dir / "manifest.json") in str(error)
    assert "cannot be read as JSON" in str(error)
    with pytest.raises(VoiceError, match=r"manifest\.json"):
        store.get("bob")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda m: m.unlink(), "is missing"),
        (lambda m: m.write_text("[]"), "is not a JSON object"),
        (lambda m: m.write_text('{"schema_version": 99}'), "schema_version 99"),
        (lambda m: m.write_text('{"schema_version": 1, "name": "bob"}'), "lacks a field"),
        (lambda m: (m.parent / "clips" / "01-b.wav").unlink(), "which is missing"),
    ],
)
def test_every_kind_of_damage_names_the_manifest(store, make_clip, damage, problem):
    bob = store.add("bob", [make_clip("b.wav")], "en")

    damage(bob.dir / "manifest.json")

    with pytest.raises(VoiceError, match=problem) as caught:
        store.get("bob")
    assert str(bob.dir / "manifest.json") in str(caught.value)


def test_a_damaged_voice_can_still_be_removed(store, make_clip):
    bob = store.add("bob", [make_clip("b.wav")], "en")
    (bob.dir / "manifest.json").write_text("garbage")

    store.remove("bob")

    assert store.list() == []


def test_getting_an_unknown_voice_lists_the_stored_ones(store, make_clip):
    with pytest.raises(UnknownVoiceError, match="has no voices yet"):
        store.get("nobody")
    store.add("alice", [make_clip("a.wav")], "en")
    store.add("Bob", [make_clip("b.wav", seed=2)], "en")

    with pytest.raises(UnknownVoiceError, match=r"no voice named 'carol'.*: alice, Bob\."):
        store.get("carol")


# ---------------------------------------------------------------- removing and renaming


def test_rm_removes_the_whole_voice(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")
    store.add("bob", [make_clip("b.wav", seed=2)], "en")

    store.remove("ALICE")

    assert [v.name for v in store.list()] == ["bob"]
    assert sorted(p.name for p in store.root.iterdir()) == [".lock", "bob"]


def test_rm_or_rename_in_a_store_that_does_not_exist_creates_nothing(store):
    with pytest.raises(UnknownVoiceError, match="has no voices yet"):
        store.remove("alice")
    with pytest.raises(UnknownVoiceError, match="has no voices yet"):
        store.rename("alice", "bob")
    assert not store.root.exists()


def test_rm_of_an_unknown_voice_is_refused(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")
    with pytest.raises(UnknownVoiceError, match=r"Stored voices .*: alice"):
        store.remove("bob")


@pytest.mark.parametrize("named_as", ["b.wav", "02-b.wav", "clips/02-b.wav"])
def test_rm_clip_takes_one_clip_out_by_original_or_stored_name(store, make_clip, named_as):
    store.add("alice", [make_clip("a.wav"), make_clip("b.wav", seed=2)], "en")

    voice = store.remove("alice", clip=named_as)

    assert [c.original_name for c in voice.clips] == ["a.wav"]
    assert files_under(voice.dir / "clips") == ["01-a.wav"]
    assert store.get("alice") == voice


def _embed_all(clips, stored):
    """An add check standing in for the speaker check: one 'embedding' per clip sha256."""
    return {"encoder": "test", "dim": 2, "clips": {sha: [1.0, 0.5] for _, sha, _ in clips}}


def test_rm_clip_drops_the_clips_embedding_from_speaker_json(store, make_clip):
    """A removed clip leaves no voiceprint behind; the other clips' embeddings stay."""
    store.add("alice", [make_clip("a.wav"), make_clip("b.wav", seed=2)], "en", check=_embed_all)
    before = json.loads((store.get("alice").dir / SPEAKER_FILE).read_text("utf-8"))
    assert len(before["clips"]) == 2

    voice = store.remove("alice", clip="b.wav")

    after = json.loads((voice.dir / SPEAKER_FILE).read_text("utf-8"))
    assert set(after["clips"]) == {voice.clips[0].sha256}
    assert {k: v for k, v in after.items() if k != "clips"} == {"encoder": "test", "dim": 2}


@pytest.mark.parametrize("text", ["not json {", '["a list"]', '{"encoder": "x"}'])
def test_a_speaker_json_avatar_did_not_write_is_left_as_it_is(store, make_clip, text):
    store.add("alice", [make_clip("a.wav"), make_clip("b.wav", seed=2)], "en")
    path = store.get("alice").dir / SPEAKER_FILE
    path.write_text(text, "utf-8")

    store.remove("alice", clip="b.wav")

    assert path.read_text("utf-8") == text


def test_rm_clip_of_the_only_clip_is_refused(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")

    with pytest.raises(AvatarUserError, match=r"only clip of voice 'alice'.*rm alice"):
        store.remove("alice", clip="a.wav")
    assert len(store.get("alice").clips) == 1


def test_rm_clip_of_an_unknown_clip_lists_the_voices_clips(store, make_clip):
    store.add("alice", [make_clip("a.wav"), make_clip("b.wav", seed=2)], "en")

    with pytest.raises(AvatarUserError, match=r"no clip named 'c.wav'.*a.wav \(stored as 01-a"):
        store.remove("alice", clip="c.wav")


def test_rm_clip_of_two_clips_with_one_name_asks_for_the_stored_name(store, make_clip, tmp_path):
    first = make_clip("take.wav", seed=1)
    other = tmp_path / "other"
    other.mkdir()
    second = other / "take.wav"
    second.write_bytes(make_clip("x.wav", seed=4).read_bytes())
    store.add("alice", [first, second, make_clip("c.wav", seed=5)], "en")

    with pytest.raises(AvatarUserError, match=r"2 clips named take\.wav"):
        store.remove("alice", clip="take.wav")
    assert len(store.remove("alice", clip="02-take.wav").clips) == 2


def test_rename_moves_the_voice_with_its_clips_and_cache(store, make_clip):
    voice = store.add("alice", [make_clip("a.wav")], "en")
    write_cache_entry(voice)

    renamed = store.rename("Alice", "Alicia")

    assert renamed.name == "Alicia"
    assert renamed.dir == store.root / "alicia"
    assert renamed.clips == voice.clips
    assert [e.current for e in store.cache_entries(renamed)] == [True]
    assert [v.name for v in store.list()] == ["Alicia"]
    with pytest.raises(UnknownVoiceError):
        store.get("alice")


def test_a_rename_that_changes_only_letter_case_keeps_the_folder(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")

    renamed = store.rename("alice", "Alice")

    assert (renamed.name, renamed.dir.name) == ("Alice", "alice")
    assert store.get("ALICE").name == "Alice"


def test_rename_onto_another_voice_is_refused(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")
    store.add("bob", [make_clip("b.wav", seed=2)], "en")

    with pytest.raises(VoiceExistsError, match="'bob' is already stored"):
        store.rename("alice", "BOB")
    assert [v.name for v in store.list()] == ["alice", "bob"]


def test_rename_of_an_unknown_voice_or_to_a_bad_name_is_refused(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")

    with pytest.raises(UnknownVoiceError):
        store.rename("bob", "carol")
    with pytest.raises(InvalidVoiceNameError):
        store.rename("alice", "../carol")
    assert [v.name for v in store.list()] == ["alice"]


# ---------------------------------------------------------------- latent cache


def write_cache_entry(voice: Voice, *, clips_sha256: str | None = None, model: str = "xtts_v2"):
    """A cache entry as the cloner writes it: `<key>.pt` then `<key>.json`."""
    clips = clips_sha256 or voice.clips_sha256
    key = f"{model}-{'c' * 12}-{clips[:12]}"
    voice.cache_dir.mkdir(exist_ok=True)
    (voice.cache_dir / f"{key}.pt").write_bytes(b"latents")
    meta = {
        "model": model,
        "checkpoint_id": "c" * 64,
        "clips_sha256": clips,
        "created": "2026-12-01T12:00:00+00:00",
        "seconds": 1.5,
    }
    (voice.cache_dir / f"{key}.json").write_text(json.dumps(meta))
    return key


def test_cache_entries_are_read_from_their_json_and_marked_current_or_stale(store, make_clip):
    voice = store.add("alice", [make_clip("a.wav")], "en")
    current = write_cache_entry(voice)
    stale = write_cache_entry(voice, clips_sha256="0" * 64)
    (voice.cache_dir / "broken.json").write_text("{")

    entries = {e.key: e for e in store.cache_entries(voice)}

    assert entries[current].current and entries[current].has_latents
    assert entries[current].seconds == 1.5
    assert not entries[stale].current
    assert "broken.json cannot be read" in entries["broken"].error


@pytest.mark.parametrize("change", ["append", "rm-clip"])
def test_changing_the_clips_deletes_cache_entries_of_the_old_clips(store, make_clip, change):
    voice = store.add("alice", [make_clip("a.wav"), make_clip("b.wav", seed=2)], "en")
    old = write_cache_entry(voice)
    other_model = write_cache_entry(voice, model="other")

    if change == "append":
        changed = store.add("alice", [make_clip("c.wav", seed=3)], None, append=True)
    else:
        changed = store.remove("alice", clip="b.wav")

    assert changed.clips_sha256 != voice.clips_sha256
    assert store.cache_entries(changed) == []
    assert not any((voice.cache_dir / f"{k}.pt").exists() for k in (old, other_model))


def test_clips_digest_depends_on_the_clips_and_their_order(store, make_clip):
    a, b = make_clip("a.wav"), make_clip("b.wav", seed=2)
    ab = store.add("ab", [a, b], "en")
    ba = store.add("ba", [b, a], "en")

    assert len(ab.clips_sha256) == 64
    assert ab.clips_sha256 != ba.clips_sha256
    assert store.get("ab").clips_sha256 == ab.clips_sha256


# ---------------------------------------------------------------- leftovers, locks, places


def test_leftovers_of_a_killed_writer_are_ignored_then_cleaned(store, make_clip):
    store.add("alice", [make_clip("a.wav")], "en")
    (store.root / ".tmp-add-123456").mkdir()
    (store.root / ".tmp-add-123456" / "manifest.json").write_text("{}")
    (store.root / "alice" / ".manifest.json.tmp-abc").write_text("half")
    (store.root / "alice" / "clips" / "07-orphan.wav").write_bytes(b"RIFF")
    (store.root / ".journal-abc.json").write_text(json.dumps({"op": "append", "voice": "alice"}))

    assert [v.name for v in store.list()] == ["alice"]

    assert sorted(p.name for p in store.root.iterdir()) == [".lock", "alice"]
    assert files_under(store.root / "alice") == ["clips/01-a.wav", "manifest.json"]


def test_a_second_writer_waits_for_the_lock_then_gets_a_clear_error(voices_dir, make_clip):
    clip = make_clip("a.wav")
    store = VoiceStore(voices_dir, lock_timeout_s=0.3)
    voices_dir.mkdir()

    with store_lock(voices_dir / ".lock", exclusive=True, timeout_s=1):
        with pytest.raises(StoreBusyError, match=r"voice store is busy.*more than 0.3 s"):
            store.add("alice", [clip], "en")
        with pytest.raises(StoreBusyError):
            store.list()  # a reader waits for a writer too
    assert store.add("alice", [clip], "en").name == "alice"


def test_readers_share_the_lock(voices_dir, make_clip):
    store = VoiceStore(voices_dir, lock_timeout_s=0.3)
    store.add("alice", [make_clip("a.wav")], "en")

    with store_lock(voices_dir / ".lock", exclusive=False, timeout_s=1):
        assert [v.name for v in store.list()] == ["alice"]
        with pytest.raises(StoreBusyError):
            store.remove("alice")


def test_a_store_path_that_is_a_file_is_refused(tmp_path, make_clip):
    not_a_dir = tmp_path / "voices"
    not_a_dir.write_text("")

    with pytest.raises(VoiceStoreError, match="is a file, not a folder"):
        VoiceStore(not_a_dir).list()
    with pytest.raises(VoiceStoreError, match="is a file, not a folder"):
        VoiceStore(not_a_dir).add("alice", [make_clip("a.wav")], "en")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_store_is_listed_and_refuses_writes_clearly(voices_dir, make_clip):
    store = VoiceStore(voices_dir)
    store.add("alice", [make_clip("a.wav")], "en")
    voices_dir.chmod(0o555)
    try:
        assert [v.name for v in store.list()] == ["alice"]
        with pytest.raises(VoiceStoreError, match="Cannot write to the voice store"):
            store.remove("alice")
    finally:
        voices_dir.chmod(0o755)


def test_the_default_store_is_the_env_var_then_the_user_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AVATAR_VOICES_DIR", str(tmp_path / "mine"))
    assert default_voices_dir() == tmp_path / "mine"
    monkeypatch.delenv("AVATAR_VOICES_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_voices_dir() == tmp_path / "data" / "avatar" / "voices"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_voices_dir() == tmp_path / "home" / ".local/share/avatar/voices"


def test_the_config_key_wins_over_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("AVATAR_VOICES_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    assert resolve_voices_dir("~/configured") == tmp_path / "home" / "configured"
    assert resolve_voices_dir(None) == tmp_path / "env"


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "entry.json"
    target.write_bytes(b"old")

    atomic_write_bytes(target, b"new content")

    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["entry.json"]


def test_concurrent_atomic_writes_never_show_a_torn_file(tmp_path):
    target = tmp_path / "cache.json"
    payloads = [bytes([i]) * 200_000 for i in range(4)]
    atomic_write_bytes(target, payloads[0])
    seen: list[bytes] = []

    def writer(payload: bytes) -> None:
        for _ in range(15):
            atomic_write_bytes(target, payload)

    def reader() -> None:
        for _ in range(60):
            seen.append(target.read_bytes())

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(data in payloads for data in seen)
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_an_accepted_name_is_always_one_plain_folder_inside_the_store(name):
    try:
        key = voice_key(name)
    except InvalidVoiceNameError as exc:
        assert "\n" not in str(exc)
        return
    root = Path("/store")
    assert (root / key).parent == root
    assert key not in ("", ".", "..") and not key.startswith(".")
    assert "/" not in key and "\\" not in key and "\x00" not in key
    assert len(key.encode("utf-8")) <= 200
