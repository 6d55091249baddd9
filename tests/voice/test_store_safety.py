"""The store after a writer is killed at each write step, and with several writers at once.

Each crash test runs the write in a child process that `AVATAR_VOICE_CRASH_AT` stops
at one named step (exit status 9, as if killed there: no cleanup runs). The store the
next command sees must then be exactly as before the write or exactly as after it,
with no temporary file or folder left, and the same write must then succeed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from avatar.stages.voice.store import CRASH_ENV, CRASH_STEPS, Voice, VoiceStore

pytestmark = pytest.mark.slow

# One store operation, named on the command line of a child process (op, root, JSON
# arguments); the tests also run it in-process (the same source) for the reference store.
APPLY = """
def apply(op, root, args):
    from avatar.stages.voice.store import VoiceStore
    store = VoiceStore(root)
    if op == "add":
        language, append = args.get("language"), args.get("append", False)
        store.add(args["name"], args["clips"], language, append=append)
    elif op == "rm":
        store.remove(args["name"], clip=args.get("clip"))
    elif op == "rename":
        store.rename(args["old"], args["new"])
"""
CHILD = APPLY + "import json, sys\napply(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))\n"
_namespace: dict[str, Any] = {}
exec(APPLY, _namespace)
apply: Callable[[str, Path, dict[str, Any]], None] = _namespace["apply"]


# Whether the store must look as before or as after the write, killed at each step:
# before the write's commit point, as before; from it on, as after.
EXPECTED = {
    "add.staging": "before",
    "add.staged": "before",
    "add.committed": "after",
    "append.journal.tmp": "before",
    "append.journal": "before",
    "append.clip-written": "before",
    "append.manifest.tmp": "before",
    "append.committed": "after",
    "append.tidied": "after",
    "rm.moved": "after",
    "rm-clip.journal.tmp": "before",
    "rm-clip.journal": "before",
    "rm-clip.manifest.tmp": "before",
    "rm-clip.committed": "after",
    "rm-clip.tidied": "after",
    "rename.journal.tmp": "before",
    "rename.journal": "after",  # the journal is the rename's commit: it is rolled forward
    "rename.moved": "after",
    "rename.manifest.tmp": "after",
    "rename.manifest-written": "after",
}


def run_child(op: str, root: Path, args: dict[str, Any], crash_at: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-c", CHILD, op, str(root), json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def snapshot(root: Path) -> dict[str, Any]:
    """What the next command sees: each voice and every file in its folder, with contents.

    Reading runs the store's recovery first, as any command does.
    """
    found = VoiceStore(root).list()
    assert all(isinstance(v, Voice) for v in found), found
    voices = {}
    for voice in found:
        files: dict[str, Any] = {
            str(p.relative_to(voice.dir)): p.read_bytes()
            for p in sorted(voice.dir.rglob("*"))
            if p.is_file()
        }
        manifest = json.loads(files["manifest.json"])
        del manifest["created"]  # the time of the write: differs between two runs of an add
        files["manifest.json"] = manifest
        expected_files = {"manifest.json", *(c.file for c in voice.clips)}
        assert set(files) - {f for f in files if f.startswith("cache/")} == expected_files
        voices[voice.name] = {
            "language": voice.language,
            "clips": [(c.original_name, c.file, c.sha256) for c in voice.clips],
            "files": files,
        }
    leftovers = sorted(
        p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".lock"
    )
    return {"voices": voices, "leftovers": leftovers}


def cache_entry(voice: Voice) -> None:
    """A current latent cache entry, as the cloner writes it."""
    key = f"xtts_v2-{'c' * 12}-{voice.clips_sha256[:12]}"
    (voice.cache_dir / f"{key}.pt").write_bytes(b"latents")
    meta = {"model": "xtts_v2", "checkpoint_id": "c" * 64, "clips_sha256": voice.clips_sha256}
    (voice.cache_dir / f"{key}.json").write_text(json.dumps(meta))


Setup = Callable[[VoiceStore, Callable[..., Path]], tuple[str, dict[str, Any]]]


def setup_add(store, make_clip):
    store.add("bob", [make_clip("bob.wav", seed=6)], "de")
    return "add", {
        "name": "alice",
        "clips": [str(make_clip("a.wav")), str(make_clip("b.wav", seed=2))],
        "language": "en",
    }


def setup_append(store, make_clip):
    cache_entry(store.add("alice", [make_clip("a.wav")], "en"))
    clips = [str(make_clip("c.wav", seed=3)), str(make_clip("d.wav", seed=4))]
    return "add", {"name": "Alice", "clips": clips, "append": True}


def setup_rm(store, make_clip):
    store.add("alice", [make_clip("a.wav"), make_clip("b.wav", seed=2)], "en")
    store.add("bob", [make_clip("bob.wav", seed=6)], "de")
    return "rm", {"name": "ALICE"}


def setup_rm_clip(store, make_clip):
    clips = [make_clip("a.wav"), make_clip("b.wav", seed=2), make_clip("c.wav", seed=3)]
    cache_entry(store.add("alice", clips, "en"))
    return "rm", {"name": "alice", "clip": "b.wav"}


def setup_rename(store, make_clip):
    cache_entry(store.add("alice", [make_clip("a.wav")], "en"))
    store.add("bob", [make_clip("bob.wav", seed=6)], "de")
    return "rename", {"old": "alice", "new": "Alicia"}


SETUPS: dict[str, Setup] = {
    "add": setup_add,
    "append": setup_append,
    "rm": setup_rm,
    "rm-clip": setup_rm_clip,
    "rename": setup_rename,
}


def test_every_crash_step_is_classified():
    assert set(SETUPS) == set(CRASH_STEPS)
    assert sorted(EXPECTED) == sorted(step for steps in CRASH_STEPS.values() for step in steps)


@pytest.mark.parametrize(
    ("operation", "step"),
    [(operation, step) for operation, steps in CRASH_STEPS.items() for step in steps],
)
def test_a_writer_killed_at_any_step_leaves_the_store_as_before_or_after(
    tmp_path, make_clip, operation, step
):
    store = VoiceStore(tmp_path / "voices")
    op, args = SETUPS[operation](store, make_clip)
    before = snapshot(store.root)
    reference = tmp_path / "reference"
    shutil.copytree(store.root, reference)
    apply(op, reference, args)
    after = snapshot(reference)
    assert after != before

    killed = run_child(op, store.root, args, crash_at=step)

    assert killed.returncode == 9, f"step {step} not reached: {killed.stderr}"
    state = snapshot(store.root)
    assert state == (before if EXPECTED[step] == "before" else after)
    assert state["leftovers"] == []
    if EXPECTED[step] == "before":  # the store is usable: the same write now succeeds
        apply(op, store.root, args)
        assert snapshot(store.root) == after


def test_concurrent_adds_all_end_in_a_consistent_store(tmp_path, make_clip):
    root = tmp_path / "voices"
    names = ["v0", "v1", "v2", "v3", "same", "SAME"]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                "add",
                str(root),
                json.dumps(
                    {
                        "name": name,
                        "clips": [str(make_clip(f"{name}{i}.wav", seed=i))],
                        "language": "en",
                    }
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, name in enumerate(names)
    ]
    results = {
        name: (child.wait(timeout=120), child.stderr.read())
        for name, child in zip(names, children, strict=True)
    }
    for child in children:
        child.stdout.close()
        child.stderr.close()

    assert all(results[name][0] == 0 for name in ["v0", "v1", "v2", "v3"])
    same = [results["same"], results["SAME"]]
    assert sorted(rc for rc, _ in same) == [0, 1]
    assert "is already stored" in next(err for rc, err in same if rc == 1)
    winner = "same" if results["same"][0] == 0 else "SAME"
    assert sorted(snapshot(root)["voices"]) == sorted([winner, "v0", "v1", "v2", "v3"])


def test_concurrent_appends_to_one_voice_lose_no_clip(tmp_path, make_clip):
    root = tmp_path / "voices"
    VoiceStore(root).add("alice", [make_clip("a.wav", seed=0)], "en")
    clips = [make_clip(f"more{i}.wav", seed=i + 1) for i in range(4)]

    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                "add",
                str(root),
                json.dumps({"name": "alice", "clips": [str(clip)], "append": True}),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for clip in clips
    ]
    codes = [child.wait(timeout=120) for child in children]
    for child in children:
        child.stderr.close()

    assert codes == [0, 0, 0, 0]
    voice = VoiceStore(root).get("alice")
    assert sorted(c.original_name for c in voice.clips) == ["a.wav"] + [c.name for c in clips]
    assert len({c.file for c in voice.clips}) == 5
    assert snapshot(root)["leftovers"] == []
