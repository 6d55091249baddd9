"""`python -m avatar.voice`: add, list, show, rename and remove stored voices.

    python -m avatar.voice add alice clips/a.wav clips/b.flac --language en
    python -m avatar.voice add alice clips/c.wav --append
    python -m avatar.voice list                  (--json for machine-readable output)
    python -m avatar.voice show alice
    python -m avatar.voice rm alice --clip c.wav
    python -m avatar.voice rename alice alicia
    python -m avatar.voice rm alicia

Where the store is: --voices-dir, else $AVATAR_VOICES_DIR, else the user's data folder
(~/.local/share/avatar/voices); `python -m avatar.speak` finds it the same way unless its
config key `voices_dir` is set. No command here composes avatar's config (the clip rules
are read from conf/voice/xtts_v2.yaml), and none imports torch or coqui-tts, so they
answer at once.
Results go to stdout, warnings and errors to stderr; a user error is one paragraph
and exit status 1, a failure of the machine or of avatar itself exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from avatar.cli.tables import render_table
from avatar.errors import AvatarUserError
from avatar.stages.voice.audio import ClipRules, xtts_clip_rules
from avatar.stages.voice.languages import XTTS_LANGUAGES
from avatar.stages.voice.speaker import (
    AddSpeakerCheck,
    VoiceScores,
    speaker_check_settings,
    stored_voice_scores,
)
from avatar.stages.voice.store import (
    VOICES_DIR_ENV,
    CacheEntry,
    Voice,
    VoiceError,
    VoiceStore,
    default_voices_dir,
    read_speaker_data,
)

JSON_SCHEMA_VERSION = 1
EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
EXIT_BROKEN_PIPE = 128 + 13  # killed by SIGPIPE, as `yes | head` reports it


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is bad input like any other: `Error: ...`, exit 1."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER_ERROR, f"Error: {message[0].upper()}{message[1:]}.\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; global options are accepted before or after the command."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable output on stdout",
    )
    common.add_argument(
        "--voices-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"the voice store (default: ${VOICES_DIR_ENV}, else {default_voices_dir()})",
    )
    parser = _Parser(
        prog="python -m avatar.voice",
        description="Store voices to clone: each a name, a language and reference clips.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add = commands.add_parser(
        "add",
        parents=[common],
        help="store a new voice from audio clips, or add clips to one (--append)",
        description="Check and store clips of a voice (any format libsndfile reads, any "
        "sample rate, mono or stereo). About 6 s or more of clear speech clones best.",
    )
    add.add_argument("name", help="the voice's name (letter case does not matter)")
    add.add_argument("clips", nargs="+", metavar="CLIP", help="audio files of the voice")
    add.add_argument(
        "--language",
        help=f"the voice's language, needed for a new voice: {' '.join(XTTS_LANGUAGES)}",
    )
    add.add_argument("--append", action="store_true", help="add the clips to an existing voice")
    add.add_argument(
        "--strict",
        action="store_true",
        help="refuse the whole add when a clip does not sound like the voice's other clips "
        "(the speaker check; without it such a clip is kept with a warning)",
    )

    commands.add_parser("list", parents=[common], help="the stored voices")
    show = commands.add_parser("show", parents=[common], help="a voice's clips and cache")
    show.add_argument("name")
    rename = commands.add_parser("rename", parents=[common], help="give a voice a new name")
    rename.add_argument("old")
    rename.add_argument("new")
    rm = commands.add_parser("rm", parents=[common], help="remove a voice, or one clip of it")
    rm.add_argument("name")
    rm.add_argument(
        "--clip", metavar="FILE", help="remove only this clip (its original or stored name)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0, 1 for bad input, 2 for internal errors)."""
    args = build_parser().parse_args(argv)
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return code
    except AvatarUserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head` closed stdout: stop quietly, as shell tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit's flush of stdout cannot fail again
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # the machine: a full disk, an I/O error
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except Exception:
        traceback.print_exc()
        print(
            "Internal error in avatar (a bug: please report it with the lines above).",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def run() -> None:
    """Entry point of `python -m avatar.voice`."""
    sys.exit(main())


def _run(args: argparse.Namespace) -> int:
    as_json = getattr(args, "json", False)
    voices_dir = getattr(args, "voices_dir", None)
    store = VoiceStore(Path(voices_dir) if voices_dir else default_voices_dir())
    if args.command == "add":
        return _add(store, args, xtts_clip_rules(), as_json)
    if args.command == "list":
        return _list(store, as_json)
    if args.command == "show":
        voice = store.get(args.name)
        _print_voice(store, voice, as_json)
        return 0
    if args.command == "rename":
        voice = store.rename(args.old, args.new)
        if as_json:
            _print_voice(store, voice, as_json)
        else:
            print(f"Renamed voice {args.old!r} to {voice.name!r}.")
        return 0
    if args.command == "rm":
        return _rm(store, args, as_json)
    raise AssertionError(f"unknown command {args.command}")  # argparse refuses others


def _add(store: VoiceStore, args: argparse.Namespace, rules: ClipRules, as_json: bool) -> int:
    before = {clip.sha256 for clip in _existing_clips(store, args.name)} if args.append else set()
    speaker = AddSpeakerCheck(strict=args.strict)
    voice = store.add(
        args.name, args.clips, args.language, append=args.append, rules=rules, check=speaker
    )
    for clip in voice.clips:
        if clip.sha256 in before:
            continue
        for check in clip.checks:
            print(f"Warning: clip {clip.original_name}: {check}.", file=sys.stderr)
    verdict_lines = _speaker_verdict(speaker, voice)
    if as_json:
        for line in verdict_lines:
            if line.startswith("Warning:"):
                print(line, file=sys.stderr)
        _print_voice(store, voice, as_json)
        return 0
    added = len(voice.clips) - len(before)
    verb = f"Added {added} clip{'s' * (added != 1)} to" if args.append else "Stored"
    print(
        f"{verb} voice {voice.name!r} ({voice.language}): {len(voice.clips)} "
        f"clip{'s' * (len(voice.clips) != 1)}, {voice.total_s:.1f} s, in {voice.dir}"
    )
    for line in verdict_lines:
        print(line, file=sys.stderr if line.startswith("Warning:") else sys.stdout)
    return 0


def _speaker_verdict(check: AddSpeakerCheck, voice: Voice) -> list[str]:
    """What the speaker check found on add: odd clips and incomplete checks are warnings
    (stderr), the rest a result line (stdout)."""
    lines = [f"Warning: speaker check incomplete: {problem}" for problem in check.problems]
    scores = check.scores
    if scores is None:
        return lines
    verdict = scores.verdict
    threshold = verdict.threshold
    for clip in verdict.odd:
        lines.append(
            f"Warning: clip {clip.name}"
            f" does not sound like the voice's other clips: similarity {clip.score:.2f}, below "
            f"the threshold {threshold:.2f} (another speaker, or a very different recording?). "
            f"Remove it with `python -m avatar.voice rm {shlex.quote(voice.name)} --clip "
            f"{shlex.quote(clip.name)}`, or add with --strict to refuse such clips."
        )
    if verdict.odd:
        return lines
    differs = (
        not verdict.can_single_out
        and scores.consistency is not None
        and scores.consistency < threshold
    )
    prefix = "Warning: speaker check" if differs else "Speaker check"
    lines.append(f"{prefix}: {verdict.note} ({check.computed} clip(s) embedded now).")
    return lines


def _existing_clips(store: VoiceStore, name: str) -> tuple[Any, ...]:
    try:
        return store.get(name).clips
    except AvatarUserError:
        return ()  # add itself says what is wrong


def _rm(store: VoiceStore, args: argparse.Namespace, as_json: bool) -> int:
    left = store.remove(args.name, clip=args.clip)
    if as_json:
        removed = {"voice": args.name, "clip": args.clip, "voices_dir": str(store.root)}
        payload: dict[str, Any] = {"schema_version": JSON_SCHEMA_VERSION, "removed": removed}
        if left is not None:
            payload["voice"] = _voice_json(store, left)
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    elif left is None:
        print(f"Removed voice {args.name!r} from {store.root}.")
    else:
        print(
            f"Removed clip {args.clip} from voice {left.name!r}: {len(left.clips)} "
            f"clip{'s' * (len(left.clips) != 1)} left, {left.total_s:.1f} s."
        )
    return 0


def _list(store: VoiceStore, as_json: bool) -> int:
    found = store.list()
    voices = [v for v in found if isinstance(v, Voice)]
    errors = [v for v in found if isinstance(v, VoiceError)]
    if as_json:
        payload = {
            "schema_version": JSON_SCHEMA_VERSION,
            "voices_dir": str(store.root),
            "voices": [_voice_summary(store, voice) for voice in voices],
            "errors": [{"dir": str(error.dir), "error": str(error)} for error in errors],
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    elif not found:
        print(
            f"No voices in {store.root} yet. Store one: "
            "python -m avatar.voice add NAME CLIP... --language en"
        )
    else:
        rows = [
            [
                voice.name,
                voice.language,
                str(len(voice.clips)),
                f"{voice.total_s:.1f}",
                ", ".join(_cached_models(store, voice)) or "-",
                _consistency_cell(_scores(voice)),
            ]
            for voice in voices
        ]
        rows += [[error.dir.name, "?", "?", "?", "damaged (see below)", "?"] for error in errors]
        header = ["NAME", "LANGUAGE", "CLIPS", "SECONDS", "CACHED MODELS", "CONSISTENCY"]
        print(f"Voices in {store.root}:")
        print("\n".join(render_table(header, rows, indent="  ", right={2, 3})))
    for error in errors:
        print(f"Error: {error}", file=sys.stderr)
    return EXIT_USER_ERROR if errors else 0


def _consistency_cell(scores: VoiceScores | None) -> str:
    if scores is None:
        return "not checked"
    value = "-" if scores.consistency is None else f"{scores.consistency:.2f}"
    odd = len(scores.verdict.odd)
    return f"{value} ({odd} odd clip{'s' * (odd != 1)})" if odd else value


def _cached_models(store: VoiceStore, voice: Voice) -> list[str]:
    """Models with latents cached for the voice's present clips (stale entries left out)."""
    entries = store.cache_entries(voice)
    return sorted({e.model for e in entries if e.current and e.has_latents and e.error is None})


def _scores(voice: Voice) -> VoiceScores | None:
    """The voice's speaker check from its stored embeddings (no encoder, no torch)."""
    clips = [(clip.original_name, clip.sha256) for clip in voice.clips]
    threshold = speaker_check_settings().threshold
    return stored_voice_scores(clips, read_speaker_data(voice.dir), threshold)


def _voice_summary(store: VoiceStore, voice: Voice) -> dict[str, Any]:
    scores = _scores(voice)
    return {
        "name": voice.name,
        "language": voice.language,
        "created": voice.created,
        "clips": len(voice.clips),
        "total_s": voice.total_s,
        "cached_models": _cached_models(store, voice),
        "dir": str(voice.dir),
        "speaker_check": None if scores is None else scores.to_json(),
    }


def _voice_json(store: VoiceStore, voice: Voice) -> dict[str, Any]:
    return {
        "name": voice.name,
        "language": voice.language,
        "created": voice.created,
        "dir": str(voice.dir),
        "total_s": voice.total_s,
        "clips_sha256": voice.clips_sha256,
        "clips": [clip.to_json() for clip in voice.clips],
        "cache": [entry.to_json() for entry in store.cache_entries(voice)],
        "speaker_check": None if (scores := _scores(voice)) is None else scores.to_json(),
    }


def _print_voice(store: VoiceStore, voice: Voice, as_json: bool) -> None:
    if as_json:
        payload = {"schema_version": JSON_SCHEMA_VERSION, "voice": _voice_json(store, voice)}
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    print(f"Voice {voice.name!r} ({voice.language}), created {voice.created}")
    print(f"Folder: {voice.dir}")
    print(f"Clips: {len(voice.clips)}, {voice.total_s:.1f} s")
    rows = [
        [
            Path(clip.file).name,
            clip.original_name,
            f"{clip.duration_s:.1f}",
            f"{clip.sample_rate_hz} (was {clip.original_sample_rate_hz})",
            str(clip.original_channels),
            "; ".join(clip.checks) or "ok",
        ]
        for clip in voice.clips
    ]
    header = ["FILE", "ORIGINAL", "SECONDS", "SAMPLE RATE HZ", "CHANNELS", "CHECKS"]
    scores = _scores(voice)
    if scores is not None:
        header.append("SIMILARITY")
        for row, score in zip(rows, scores.scores, strict=True):
            row.append("-" if score is None else f"{score:.2f}")
    print("\n".join(render_table(header, rows, indent="  ", right={2})))
    if scores is None:
        print("Speaker check: not done (no stored speaker embeddings; added before the check).")
    else:
        consistency = "-" if scores.consistency is None else f"{scores.consistency:.2f}"
        print(f"Speaker check: consistency {consistency}; {scores.verdict.note}.")
    entries = store.cache_entries(voice)
    if not entries:
        print("Cache: none yet (latents are computed on the voice's first use and kept).")
        return
    print("Cache:")
    print("\n".join(render_table(*_cache_table(entries), indent="  ", right={3})))


def _cache_table(entries: Sequence[CacheEntry]) -> tuple[list[str], list[list[str]]]:
    header = ["MODEL", "CHECKPOINT", "CREATED", "SECONDS", "STATE"]
    rows = []
    for entry in entries:
        if entry.error is not None:
            state = f"unreadable: {entry.error}"
        elif not entry.current:
            state = "stale (other clips; not used)"
        else:
            state = "current" if entry.has_latents else "incomplete (no .pt file)"
        seconds = f"{entry.seconds:.1f}" if entry.seconds is not None else "-"
        rows.append([entry.model, entry.checkpoint_id[:12], entry.created, seconds, state])
    return header, rows
