"""The voice store: cloned voices as folders, written so that a crash never leaves half a voice.

Layout of the store (one folder, `voices_dir`):

    <key>/manifest.json    name, language, created, and each clip's facts (schema_version 1)
    <key>/clips/NN-*.wav   normalised copies of the clips (mono, 22,050 Hz, PCM_16)
    <key>/cache/           conditioning latents per model, written by the cloner
    <key>/speaker.json     speaker embeddings per clip sha256 (the speaker check; optional)
    .lock                  flock: one writer at a time, readers wait for it
    .journal-<id>.json     a multi-step change in progress (rolled forward or tidied on next use)
    .tmp-<id>/             a voice being built or being deleted

`<key>` is the voice's name case-folded, so "Alice" and "alice" are one voice; the
manifest keeps the name as the user typed it.

Why each write is safe when the process is killed at any point:
- add (new voice): built whole in `.tmp-<id>/`, then renamed into place (the commit).
- add --append, rm --clip: a journal first; new clip files, then the manifest is
  replaced atomically (the commit); files the manifest does not name are removed after.
  speaker.json (embeddings keyed by clip sha256) is replaced atomically before the commit:
  an entry for a clip the manifest does not name is never read, so a crash leaves it
  harmless, and the tidying after the commit (or the next command's) drops it.
  Killed before the commit, the next command removes the unreferenced files: as before.
- rm: the folder is renamed to `.tmp-<id>/` (the commit), then deleted.
- rename: the journal is the commit; the folder rename and the manifest's new name are
  rolled forward by whoever opens the store next, if the writer died in between.
Readers hold the lock shared, so they never see a live writer's intermediate state, and
the first command after a crash finishes or undoes it before anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from avatar.errors import AvatarUserError
from avatar.stages.voice.audio import (
    NORMALISED_SAMPLE_RATE_HZ,
    ClipError,
    ClipRules,
    PreparedClip,
    prepare_clips,
    xtts_clip_rules,
)
from avatar.stages.voice.languages import XTTS_LANGUAGES, normalise_language
from avatar.stages.voice.locking import store_lock

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SPEAKER_FILE = "speaker.json"
CLIPS_DIR = "clips"
CACHE_DIR = "cache"
LOCK_FILE = ".lock"
JOURNAL_PREFIX = ".journal-"
TMP_MARK = ".tmp-"
MAX_NAME_CHARS = 64
# A case-folded key may grow (ß -> ss); file systems allow 255 bytes per name.
MAX_KEY_BYTES = 200
FORBIDDEN_NAME_CHARS = '/\\<>:"|?*'
VOICES_DIR_ENV = "AVATAR_VOICES_DIR"
# Test hook: the process exits (status 9) at the named write step, as if killed there.
CRASH_ENV = "AVATAR_VOICE_CRASH_AT"
# Every write step the hook can stop at, per operation (the crash tests walk them all).
CRASH_STEPS: dict[str, tuple[str, ...]] = {
    "add": ("add.staging", "add.staged", "add.committed"),
    "append": (
        "append.journal.tmp",
        "append.journal",
        "append.clip-written",
        "append.manifest.tmp",
        "append.committed",
        "append.tidied",
    ),
    "rm": ("rm.moved",),
    "rm-clip": (
        "rm-clip.journal.tmp",
        "rm-clip.journal",
        "rm-clip.manifest.tmp",
        "rm-clip.committed",
        "rm-clip.tidied",
    ),
    "rename": (
        "rename.journal.tmp",
        "rename.journal",
        "rename.moved",
        "rename.manifest.tmp",
        "rename.manifest-written",
    ),
}


# A check run on `add` once the clips are written but before the commit: it gets every clip of
# the voice-to-be as (original name, sha256, path of the normalised copy) in order, and what
# speaker.json held (parsed, or None); it returns what speaker.json is to hold (None: leave it
# as it is), or raises to refuse the add, which then changes nothing.
AddCheck = Callable[[Sequence[tuple[str, str, Path]], Any], "dict[str, Any] | None"]


# ---------------------------------------------------------------- errors


class VoiceError(AvatarUserError):
    """A stored voice cannot be read (a damaged or missing manifest, a missing clip file).

    `dir` is the voice's folder; `list()` returns these in place of the voice.
    """

    def __init__(self, message: str, *, dir: Path) -> None:
        super().__init__(message)
        self.dir = dir


class UnknownVoiceError(AvatarUserError, KeyError):
    """No stored voice has this name; the message lists the stored ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class VoiceExistsError(AvatarUserError):
    """A voice of this name (in any letter case) is already stored."""


class InvalidVoiceNameError(AvatarUserError, ValueError):
    """A voice name that cannot be a folder name in the store."""


class VoiceStoreError(AvatarUserError):
    """The store itself is unusable (its folder is a file, or is not writable)."""


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Clip:
    """One reference clip of a voice, as its manifest records it."""

    file: str  # the normalised copy, relative to the voice folder ("clips/01-alice_1.wav")
    original_name: str  # the user's file name (basename)
    sha256: str  # of the normalised copy's bytes
    duration_s: float
    sample_rate_hz: int  # of the normalised copy (22050)
    original_sample_rate_hz: int
    original_channels: int
    checks: tuple[str, ...]  # the warnings it passed with

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "original_name": self.original_name,
            "sha256": self.sha256,
            "duration_s": self.duration_s,
            "sample_rate_hz": self.sample_rate_hz,
            "original_sample_rate_hz": self.original_sample_rate_hz,
            "original_channels": self.original_channels,
            "checks": list(self.checks),
        }


@dataclass(frozen=True)
class Voice:
    """A stored voice: its name as typed, language, clips and folder."""

    name: str
    language: str
    created: str  # ISO 8601, UTC
    clips: tuple[Clip, ...]
    dir: Path

    def clip_paths(self) -> list[Path]:
        """Absolute paths of the normalised copies, in the manifest's order."""
        return [self.dir / clip.file for clip in self.clips]

    @property
    def cache_dir(self) -> Path:
        return self.dir / CACHE_DIR

    @property
    def total_s(self) -> float:
        return round(sum(clip.duration_s for clip in self.clips), 3)

    @property
    def clips_sha256(self) -> str:
        """One digest of all clips in order: part of a latent cache entry's key."""
        return clips_digest([clip.sha256 for clip in self.clips])


@dataclass(frozen=True)
class CacheEntry:
    """One model's cached conditioning latents for a voice (`cache/<key>.json`)."""

    key: str
    model: str
    checkpoint_id: str
    clips_sha256: str
    created: str
    seconds: float | None
    current: bool  # made from the voice's present clips (others are stale, never used)
    has_latents: bool  # the `<key>.pt` beside it exists
    error: str | None = None  # the .json could not be read

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "checkpoint_id": self.checkpoint_id,
            "clips_sha256": self.clips_sha256,
            "created": self.created,
            "seconds": self.seconds,
            "current": self.current,
            "has_latents": self.has_latents,
            "error": self.error,
        }


def clips_digest(clip_sha256s: Sequence[str]) -> str:
    """sha256 over the clips' sha256 hex digests, in order, one per line."""
    return hashlib.sha256("\n".join(clip_sha256s).encode("ascii")).hexdigest()


# ---------------------------------------------------------------- names, places


def check_voice_name(name: str) -> str:
    """The name as it will be shown (NFC); InvalidVoiceNameError saying what is wrong."""
    if not isinstance(name, str) or name == "":
        raise InvalidVoiceNameError("A voice name cannot be empty. Give the voice a name.")
    name = unicodedata.normalize("NFC", name)
    problem = None
    if name != name.strip():
        problem = "starts or ends with a space"
    elif name.startswith("."):
        problem = "starts with '.'"
    elif ".." in name:
        problem = "contains '..'"
    elif any(char in FORBIDDEN_NAME_CHARS for char in name):
        problem = f"contains one of {FORBIDDEN_NAME_CHARS} (path separators are not allowed)"
    elif not name.isprintable():
        problem = "contains a control character or line break"
    elif len(name) > MAX_NAME_CHARS or len(_fold(name).encode("utf-8")) > MAX_KEY_BYTES:
        problem = f"is longer than {MAX_NAME_CHARS} characters"
    if problem is not None:
        raise InvalidVoiceNameError(
            f"Voice name {name!r} {problem}. A name is 1 to {MAX_NAME_CHARS} printable "
            f"characters, without path separators or {FORBIDDEN_NAME_CHARS[2:]}, not starting "
            "with '.', and without '..' (for example: alice, Bob_2, narrator-fr)."
        )
    return name


def _fold(name: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFC", name).casefold())


def voice_key(name: str) -> str:
    """The voice's folder name: its validated name, case-folded (Alice and alice are one)."""
    return _fold(check_voice_name(name))


def default_voices_dir() -> Path:
    """$AVATAR_VOICES_DIR, else $XDG_DATA_HOME/avatar/voices, else ~/.local/share/avatar/voices."""
    env = os.environ.get(VOICES_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    # The XDG spec: a relative XDG_DATA_HOME is invalid and is ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "avatar" / "voices"


def resolve_voices_dir(configured: str | os.PathLike[str] | None) -> Path:
    """The config key `voices_dir` where set (not null), else default_voices_dir()."""
    if configured is not None and str(configured).strip():
        return Path(configured).expanduser()
    return default_voices_dir()


# ---------------------------------------------------------------- file system helpers


def _crash_point(step: str) -> None:
    """Test hook: die here, like a killed process, when AVATAR_VOICE_CRASH_AT names this step."""
    if os.environ.get(CRASH_ENV) == step:
        os._exit(9)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new_file(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet, and flush it to disk."""
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _atomic_write(path: Path, data: bytes, *, step: str | None = None) -> None:
    tmp = path.parent / f".{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}"
    try:
        _write_new_file(tmp, data)
        if step is not None:
            _crash_point(f"{step}.tmp")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file in the same folder, fsync, os.replace.

    Readers (and concurrent writers of the same file) see the old or the new content,
    never a torn file. The temporary file's name starts with '.'.
    """
    _atomic_write(Path(path), data)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _is_leftover(name: str) -> bool:
    """A temporary entry a killed writer may have left (never a live one: see _writing)."""
    return name.startswith(".") and TMP_MARK in name


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clip_file_name(index: int, original_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(original_name).stem).strip("._")[:40]
    return f"{CLIPS_DIR}/{index:02d}-{stem or 'clip'}.wav"


def _next_clip_index(clips: Sequence[Clip]) -> int:
    numbers = [int(m.group(1)) for c in clips if (m := re.match(r"clips/(\d+)-", c.file))]
    return max(numbers, default=0) + 1


def _clip_from(prepared: PreparedClip, file: str) -> Clip:
    return Clip(
        file=file,
        original_name=prepared.original_name,
        sha256=hashlib.sha256(prepared.wav_bytes).hexdigest(),
        duration_s=prepared.duration_s,
        sample_rate_hz=NORMALISED_SAMPLE_RATE_HZ,
        original_sample_rate_hz=prepared.original_sample_rate_hz,
        original_channels=prepared.original_channels,
        checks=prepared.checks,
    )


def _manifest(name: str, language: str, created: str, clips: Sequence[Clip]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "language": language,
        "created": created,
        "clips": [clip.to_json() for clip in clips],
    }


# ---------------------------------------------------------------- reading


def _damaged(manifest: Path, problem: str) -> VoiceError:
    key = manifest.parent.name
    return VoiceError(
        f"The voice in {manifest.parent} is damaged: its manifest {manifest} {problem}. "
        f"Restore that file from a backup, or remove the voice with "
        f"`python -m avatar.voice rm {shlex.quote(key)}` and add it again.",
        dir=manifest.parent,
    )


def _read_manifest(voice_dir: Path) -> dict[str, Any]:
    manifest = voice_dir / MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _damaged(manifest, "is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(manifest, f"cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _damaged(manifest, "is not a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise _damaged(
            manifest,
            f"has schema_version {version!r}, and this avatar reads up to {SCHEMA_VERSION}",
        )
    return data


def _voice_from_manifest(voice_dir: Path, data: dict[str, Any]) -> Voice:
    manifest = voice_dir / MANIFEST
    try:
        clips = tuple(
            Clip(
                file=str(c["file"]),
                original_name=str(c["original_name"]),
                sha256=str(c["sha256"]),
                duration_s=float(c["duration_s"]),
                sample_rate_hz=int(c["sample_rate_hz"]),
                original_sample_rate_hz=int(c["original_sample_rate_hz"]),
                original_channels=int(c["original_channels"]),
                checks=tuple(str(check) for check in c.get("checks", ())),
            )
            for c in data["clips"]
        )
        voice = Voice(
            name=str(data["name"]),
            language=str(data["language"]),
            created=str(data["created"]),
            clips=clips,
            dir=voice_dir,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(manifest, f"lacks a field or has a wrong value ({exc!r})") from None
    if _fold(voice.name) != voice_dir.name:
        raise _damaged(manifest, f"names the voice {voice.name!r}, not its folder's name")
    if not voice.clips:
        raise _damaged(manifest, "lists no clips")
    for clip in voice.clips:
        path = voice_dir / clip.file
        if Path(clip.file).is_absolute() or ".." in Path(clip.file).parts:
            raise _damaged(manifest, f"names a clip outside the voice's folder ({clip.file})")
        if not path.is_file():
            raise _damaged(manifest, f"lists clip {clip.file}, which is missing")
    return voice


def read_voice(voice_dir: Path) -> Voice:
    """The voice stored in this folder; VoiceError naming the manifest if it is damaged."""
    return _voice_from_manifest(voice_dir, _read_manifest(voice_dir))


def read_speaker_data(voice_dir: Path) -> Any:
    """The parsed speaker.json of a voice folder, or None when it is missing or unreadable
    (the speaker check then treats every clip as not embedded yet)."""
    try:
        return json.loads((voice_dir / SPEAKER_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def read_cache_entries(voice: Voice) -> list[CacheEntry]:
    """The voice's latent cache entries, from their `.json` files only (no torch)."""
    entries: list[CacheEntry] = []
    if not voice.cache_dir.is_dir():
        return entries
    for path in sorted(voice.cache_dir.glob("*.json")):
        if path.name.startswith("."):
            continue
        has_latents = path.with_suffix(".pt").is_file()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            clips_sha = str(data["clips_sha256"])
            entries.append(
                CacheEntry(
                    key=path.stem,
                    model=str(data.get("model", "?")),
                    checkpoint_id=str(data.get("checkpoint_id", "")),
                    clips_sha256=clips_sha,
                    created=str(data.get("created", "")),
                    seconds=float(data["seconds"]) if data.get("seconds") is not None else None,
                    current=clips_sha == voice.clips_sha256,
                    has_latents=has_latents,
                )
            )
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            entries.append(
                CacheEntry(
                    key=path.stem,
                    model="?",
                    checkpoint_id="",
                    clips_sha256="",
                    created="",
                    seconds=None,
                    current=False,
                    has_latents=has_latents,
                    error=f"{path} cannot be read ({exc!r})",
                )
            )
    return entries


# ---------------------------------------------------------------- the store


class VoiceStore:
    """The voices in one folder: add, list, get, rename, remove.

    Every method is safe against other processes using the same folder (a lock) and
    against being killed at any point (see the module docstring). User errors are
    AvatarUserError subclasses whose message is one paragraph per problem.
    """

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout_s: float = 30.0) -> None:
        self.root = Path(root).expanduser().absolute()
        self.lock_timeout_s = lock_timeout_s

    def __repr__(self) -> str:
        return f"VoiceStore({str(self.root)!r})"

    # -- reading

    def list(self) -> list[Voice | VoiceError]:
        """Every stored voice, by name; a damaged one as a VoiceError, the others still listed."""
        with self._reading():
            return self._list_unlocked()

    def get(self, name: str) -> Voice:
        """The voice of this name (any letter case); UnknownVoiceError lists the stored names."""
        key = voice_key(name)
        with self._reading():
            return self._get_unlocked(name, key)

    def cache_entries(self, voice: Voice) -> list[CacheEntry]:
        """The voice's cached latents (per model and clips), read from their `.json` files."""
        return read_cache_entries(voice)

    # -- writing

    def add(
        self,
        name: str,
        clip_paths: Sequence[str | os.PathLike[str]],
        language: str | None,
        *,
        append: bool = False,
        rules: ClipRules | None = None,
        check: AddCheck | None = None,
    ) -> Voice:
        """Store a new voice from these clips, or with `append=True` add clips to one.

        The clips are read, checked and normalised before anything is written; if any
        is refused, ClipError has one paragraph per refused clip and nothing is stored.
        A new voice needs a language (one of the 17 XTTS-v2 codes); on append, a given
        language must be the voice's own. `rules` default to conf/voice/xtts_v2.yaml's.
        `check` (the speaker check) runs on the written clips before the commit; what it
        returns is stored as speaker.json in the same commit, and if it raises nothing changes.
        """
        display = check_voice_name(name)
        key = _fold(display)
        if not clip_paths:
            raise ClipError(["Give at least one clip (an audio file of the voice speaking)."])
        code = normalise_language(language) if language is not None else None
        if not append and (self.root / key).exists():
            raise self._exists_error(display, key)  # early: before the audio work
        if not append and code is None:
            raise self._language_needed(display)
        rules = rules if rules is not None else xtts_clip_rules()
        prepared = prepare_clips([Path(p) for p in clip_paths], rules)
        _refuse_duplicates(prepared, [])
        with self._writing():
            voice_dir = self.root / key
            if voice_dir.exists():
                if not append:
                    raise self._exists_error(display, key)
                voice = read_voice(voice_dir)
                if code is not None and code != voice.language:
                    raise AvatarUserError(
                        f"Voice {voice.name!r} is stored with language {voice.language}, not "
                        f"{code}. Leave out --language to add clips to it, or add a new voice "
                        f"for {code}: `python -m avatar.voice add NAME CLIP... --language {code}`."
                    )
                _refuse_duplicates(prepared, voice.clips)
                return self._append(voice, prepared, check)
            if append:
                raise UnknownVoiceError(
                    f"--append adds clips to a stored voice, and there is no voice named "
                    f"{display!r}. {self._stored_names_sentence()} To store a new voice, "
                    "leave out --append and give --language."
                )
            if code is None:
                raise self._language_needed(display)
            return self._create(display, key, code, prepared, check)

    def remove(self, name: str, *, clip: str | None = None) -> Voice | None:
        """Remove the whole voice, or with `clip=` one clip of it (returns the voice left).

        `clip` is the clip's original file name or its stored file name; the last clip
        of a voice cannot be removed alone (remove the voice instead).
        """
        key = voice_key(name)
        if not self.root.is_dir():  # nothing to remove: create no store for it either
            raise self._unknown_error(name)
        with self._writing():
            voice_dir = self.root / key
            if not voice_dir.is_dir():
                raise self._unknown_error(name)
            if clip is None:
                graveyard = self.root / f"{TMP_MARK}rm-{uuid.uuid4().hex[:12]}"
                os.rename(voice_dir, graveyard)
                _fsync_dir(self.root)
                _crash_point("rm.moved")
                shutil.rmtree(graveyard, ignore_errors=True)
                return None
            voice = read_voice(voice_dir)
            target = _find_clip(voice, clip)
            if len(voice.clips) == 1:
                arg = shlex.quote(voice.name)
                raise AvatarUserError(
                    f"{target.original_name} is the only clip of voice {voice.name!r}, and a "
                    "voice needs at least one. Add another clip first "
                    f"(`python -m avatar.voice add {arg} CLIP --append`), or remove the "
                    f"whole voice (`python -m avatar.voice rm {arg}`)."
                )
            journal = self._begin({"op": "rm-clip", "voice": key}, step="rm-clip.journal")
            data = _read_manifest(voice_dir)
            data["clips"] = [c.to_json() for c in voice.clips if c != target]
            _atomic_write(voice_dir / MANIFEST, _json_bytes(data), step="rm-clip.manifest")
            _crash_point("rm-clip.committed")
            _tidy_voice(voice_dir)
            _crash_point("rm-clip.tidied")
            self._end(journal)
            return read_voice(voice_dir)

    def rename(self, old: str, new: str) -> Voice:
        """Give a voice a new name (a change of letter case only is a rename too)."""
        old_key = voice_key(old)
        new_name = check_voice_name(new)
        new_key = _fold(new_name)
        if not self.root.is_dir():
            raise self._unknown_error(old)
        with self._writing():
            old_dir = self.root / old_key
            if not old_dir.is_dir():
                raise self._unknown_error(old)
            voice = read_voice(old_dir)
            if voice.name == new_name:
                return voice
            if new_key != old_key and (self.root / new_key).exists():
                raise self._exists_error(new_name, new_key)
            plan = {"op": "rename", "voice": old_key, "new": new_key, "name": new_name}
            journal = self._begin(plan, step="rename.journal")
            self._roll_forward_rename(plan, live=True)
            self._end(journal)
            return read_voice(self.root / new_key)

    # -- the steps of a write

    def _create(
        self,
        name: str,
        key: str,
        language: str,
        prepared: Sequence[PreparedClip],
        check: AddCheck | None = None,
    ) -> Voice:
        staging = self.root / f"{TMP_MARK}add-{uuid.uuid4().hex[:12]}"
        (staging / CLIPS_DIR).mkdir(parents=True)
        (staging / CACHE_DIR).mkdir()
        clips = []
        for index, item in enumerate(prepared, start=1):
            file = _clip_file_name(index, item.original_name)
            _write_new_file(staging / file, item.wav_bytes)
            clips.append(_clip_from(item, file))
            _crash_point("add.staging")
        if check is not None:
            try:
                data = check([(c.original_name, c.sha256, staging / c.file) for c in clips], None)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if data is not None:
                _write_new_file(staging / SPEAKER_FILE, _json_bytes(data))
        _write_new_file(
            staging / MANIFEST, _json_bytes(_manifest(name, language, _now_iso(), clips))
        )
        for folder in (staging / CLIPS_DIR, staging / CACHE_DIR, staging):
            _fsync_dir(folder)
        _crash_point("add.staged")
        os.rename(staging, self.root / key)  # the commit: the voice appears whole
        _fsync_dir(self.root)
        _crash_point("add.committed")
        return read_voice(self.root / key)

    def _append(
        self, voice: Voice, prepared: Sequence[PreparedClip], check: AddCheck | None = None
    ) -> Voice:
        journal = self._begin({"op": "append", "voice": voice.dir.name}, step="append.journal")
        index = _next_clip_index(voice.clips)
        taken = {clip.file for clip in voice.clips}
        new_clips = []
        for item in prepared:
            file = _clip_file_name(index, item.original_name)
            while file in taken or (voice.dir / file).exists():
                index += 1
                file = _clip_file_name(index, item.original_name)
            _write_new_file(voice.dir / file, item.wav_bytes)
            _crash_point("append.clip-written")
            new_clips.append(_clip_from(item, file))
            taken.add(file)
            index += 1
        _fsync_dir(voice.dir / CLIPS_DIR)
        if check is not None:
            all_clips = (*voice.clips, *new_clips)
            try:
                speaker = check(
                    [(c.original_name, c.sha256, voice.dir / c.file) for c in all_clips],
                    read_speaker_data(voice.dir),
                )
            except BaseException:
                _tidy_voice(voice.dir)  # the new clip files: the manifest does not name them
                self._end(journal)
                raise
            if speaker is not None:
                _atomic_write(voice.dir / SPEAKER_FILE, _json_bytes(speaker))
        data = _read_manifest(voice.dir)
        data["clips"] = [c.to_json() for c in (*voice.clips, *new_clips)]
        _atomic_write(voice.dir / MANIFEST, _json_bytes(data), step="append.manifest")
        _crash_point("append.committed")
        _tidy_voice(voice.dir)
        _crash_point("append.tidied")
        self._end(journal)
        return read_voice(voice.dir)

    def _begin(self, plan: dict[str, Any], *, step: str) -> Path:
        """Write the journal of a multi-step change; from here on it is finished by recovery."""
        journal = self.root / f"{JOURNAL_PREFIX}{uuid.uuid4().hex[:12]}.json"
        _atomic_write(journal, _json_bytes(plan), step=step)
        _crash_point(step)
        return journal

    def _end(self, journal: Path) -> None:
        journal.unlink()
        _fsync_dir(self.root)

    def _roll_forward_rename(self, plan: dict[str, Any], *, live: bool = False) -> None:
        """Finish a rename (idempotent): move the folder, then write the new name."""
        old_dir, new_dir = self.root / plan["voice"], self.root / plan["new"]
        if old_dir != new_dir and old_dir.is_dir() and not new_dir.exists():
            os.rename(old_dir, new_dir)
            _fsync_dir(self.root)
        if live:
            _crash_point("rename.moved")
        if not new_dir.is_dir():
            return
        data = _read_manifest(new_dir)
        if data.get("name") != plan["name"]:
            data["name"] = plan["name"]
            _atomic_write(new_dir / MANIFEST, _json_bytes(data), step="rename.manifest")
        if live:
            _crash_point("rename.manifest-written")
        _tidy_voice(new_dir)

    # -- locking and recovery

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Hold the lock shared; first finish or undo what a killed writer left, if anything."""
        if not self.root.exists():
            yield
            return
        self._check_root()
        lock = self.root / LOCK_FILE
        with store_lock(lock, exclusive=False, timeout_s=self.lock_timeout_s) as locked:
            recover = locked and self._needs_recovery()
            if not recover:
                yield
                return
        # A killed writer's leftovers: recover under the exclusive lock, then read.
        # (a store this user may only read is read as it is)
        with contextlib.suppress(VoiceStoreError), self._writing():
            pass
        with store_lock(lock, exclusive=False, timeout_s=self.lock_timeout_s):
            yield

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the lock exclusively, after recovering what a killed writer left."""
        self._check_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with store_lock(self.root / LOCK_FILE, exclusive=True, timeout_s=self.lock_timeout_s):
                self._recover()
                yield
        except PermissionError as exc:
            raise VoiceStoreError(
                f"Cannot write to the voice store {self.root}: {exc.strerror} "
                f"({exc.filename}). Use a folder you can write: set {VOICES_DIR_ENV}, the "
                "config key voices_dir, or --voices-dir."
            ) from None

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise VoiceStoreError(
                f"The voice store {self.root} is a file, not a folder. Point {VOICES_DIR_ENV}, "
                "the config key voices_dir or --voices-dir at a folder."
            )

    def _needs_recovery(self) -> bool:
        with os.scandir(self.root) as entries:
            return any(e.name.startswith(JOURNAL_PREFIX) or _is_leftover(e.name) for e in entries)

    def _recover(self) -> None:
        """Finish journalled changes and remove temporary leftovers (under the exclusive lock)."""
        for journal in sorted(self.root.glob(f"{JOURNAL_PREFIX}*.json")):
            try:
                plan = json.loads(journal.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                plan = None  # torn journals cannot exist (atomic); skip anything foreign
            if isinstance(plan, dict) and plan.get("op") == "rename":
                with contextlib.suppress(VoiceError):
                    self._roll_forward_rename(plan)
            elif isinstance(plan, dict) and isinstance(plan.get("voice"), str):
                voice_dir = self.root / plan["voice"]
                if voice_dir.is_dir():
                    _tidy_voice(voice_dir)
            journal.unlink()
        with os.scandir(self.root) as entries:
            leftovers = [Path(e.path) for e in entries if _is_leftover(e.name)]
        for path in leftovers:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if leftovers:
            _fsync_dir(self.root)

    # -- helpers

    def _list_unlocked(self) -> list[Voice | VoiceError]:
        found: list[Voice | VoiceError] = []
        if not self.root.is_dir():
            return found
        with os.scandir(self.root) as entries:
            dirs = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
        for key in dirs:
            try:
                found.append(read_voice(self.root / key))
            except VoiceError as error:
                found.append(error)
        return sorted(found, key=lambda v: _fold(v.name) if isinstance(v, Voice) else v.dir.name)

    def _get_unlocked(self, name: str, key: str) -> Voice:
        voice_dir = self.root / key
        if not voice_dir.is_dir():
            raise self._unknown_error(name)
        return read_voice(voice_dir)

    def _stored_names_sentence(self) -> str:
        names = [v.name if isinstance(v, Voice) else v.dir.name for v in self._list_unlocked()]
        if not names:
            return f"The store ({self.root}) has no voices yet."
        return f"Stored voices ({self.root}): {', '.join(names)}."

    def _unknown_error(self, name: str) -> UnknownVoiceError:
        return UnknownVoiceError(
            f"There is no voice named {name!r}. {self._stored_names_sentence()} Add one with "
            f"`python -m avatar.voice add {shlex.quote(name)} CLIP... --language en`."
        )

    def _language_needed(self, name: str) -> AvatarUserError:
        return AvatarUserError(
            f"A new voice needs a language: add {name!r} with --language and one of the "
            f"XTTS-v2 codes ({', '.join(XTTS_LANGUAGES)})."
        )

    def _exists_error(self, name: str, key: str) -> VoiceExistsError:
        try:
            stored = repr(read_voice(self.root / key).name)
        except VoiceError:
            stored = f"in {self.root / key}"
        arg = shlex.quote(name)
        return VoiceExistsError(
            f"A voice named {stored} is already stored (names are the same voice whatever "
            f"their letter case). To add clips to it: `python -m avatar.voice add {arg} "
            f"CLIP... --append`; to replace it, remove it first (`python -m avatar.voice rm "
            f"{arg}`), or choose another name."
        )


def _refuse_duplicates(prepared: Sequence[PreparedClip], stored: Sequence[Clip]) -> None:
    """Refuse a clip whose normalised audio is already in the voice, or given twice."""
    seen = {clip.sha256: f"already in the voice as {clip.file}" for clip in stored}
    paragraphs = []
    for item in prepared:
        digest = hashlib.sha256(item.wav_bytes).hexdigest()
        if digest in seen:
            paragraphs.append(
                f"Clip {item.source} is the same audio as one {seen[digest]}. Each clip of "
                "a voice must be a different recording; leave this one out."
            )
        else:
            seen[digest] = f"given before it ({item.source})"
    if paragraphs:
        raise ClipError(paragraphs)


def _find_clip(voice: Voice, wanted: str) -> Clip:
    """The clip named by its original file name, its stored file name or its stored path."""
    by_stored = [c for c in voice.clips if wanted in (c.file, Path(c.file).name)]
    if by_stored:
        return by_stored[0]
    by_original = [c for c in voice.clips if c.original_name == wanted]
    if len(by_original) == 1:
        return by_original[0]
    listing = ", ".join(f"{c.original_name} (stored as {Path(c.file).name})" for c in voice.clips)
    if by_original:
        raise AvatarUserError(
            f"Voice {voice.name!r} has {len(by_original)} clips named {wanted}; name the one "
            f"to remove by its stored file name. Its clips: {listing}."
        )
    raise AvatarUserError(
        f"Voice {voice.name!r} has no clip named {wanted!r}. Its clips: {listing}."
    )


def _tidy_voice(voice_dir: Path) -> None:
    """Remove what the manifest does not name: a killed writer's clip files and temporary
    files, and cache entries made from other clips (stale: they would never be used)."""
    for folder in (voice_dir, voice_dir / CLIPS_DIR):
        if folder.is_dir():
            for path in folder.iterdir():
                if _is_leftover(path.name) and path.is_file():
                    path.unlink()
    try:
        voice = read_voice(voice_dir)
    except VoiceError:
        return  # nothing is removed from a voice whose manifest cannot be read
    named = {(voice_dir / clip.file).resolve() for clip in voice.clips}
    clips_dir = voice_dir / CLIPS_DIR
    for path in clips_dir.iterdir() if clips_dir.is_dir() else ():
        if path.is_file() and path.resolve() not in named:
            path.unlink()
    for entry in read_cache_entries(voice):
        if not entry.current and entry.error is None:
            for suffix in (".pt", ".json"):
                with contextlib.suppress(FileNotFoundError):
                    (voice.cache_dir / f"{entry.key}{suffix}").unlink()
    _prune_speaker_data(voice)


def _prune_speaker_data(voice: Voice) -> None:
    """Drop speaker.json's embeddings of clips the manifest no longer names (`rm --clip`, an
    append stopped before its commit). They are never read, but an embedding is a voiceprint:
    a user who removed a clip expects nothing derived from it to stay on disk."""
    data = read_speaker_data(voice.dir)
    clips = data.get("clips") if isinstance(data, dict) else None
    if not isinstance(clips, dict):
        return
    kept = {clip.sha256 for clip in voice.clips}
    if set(clips) <= kept:
        return
    pruned = {sha256: vector for sha256, vector in clips.items() if sha256 in kept}
    _atomic_write(voice.dir / SPEAKER_FILE, _json_bytes({**data, "clips": pruned}))
