"""Where the XTTS-v2 weights come from, and which weights they are.

A checkpoint is a folder with `config.json`, `model.pth` and `vocab.json` (coqui-tts's
own layout). It comes from `voice.checkpoint_dir`, or, when that is null, from
coqui-tts's model manager: a copy downloaded earlier is used as it is, and a download
runs only when the user agreed to the model's licence beforehand (`COQUI_TOS_AGREED=1`),
since coqui's licence question reads from the terminal and would hang a sweep or a
cluster job. Every other case is one paragraph saying what to download, where to put
it and how to point avatar at it.

The checkpoint's identity (part of the latent cache key) is the sha256 of its three
files. Hashing 1.8 GB takes seconds, so it is computed once and remembered in a small
JSON file keyed by each file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from avatar.errors import AvatarUserError
from avatar.stages.voice.store import atomic_write_bytes

REQUIRED_FILES: tuple[str, ...] = ("config.json", "model.pth", "vocab.json")
COQUI_MODEL_NAME = "tts_models/multilingual/multi-dataset/xtts_v2"
TOS_ENV = "COQUI_TOS_AGREED"
WEIGHTS_URL = "https://huggingface.co/coqui/XTTS-v2"
LICENCE = "Coqui Public Model License (CPML), non-commercial use only: https://coqui.ai/cpml"
_HASH_CHUNK_BYTES = 1 << 20


class CheckpointError(AvatarUserError):
    """The XTTS-v2 weights are missing, incomplete or cannot be fetched."""


@dataclass(frozen=True)
class Checkpoint:
    dir: Path
    checkpoint_id: str  # sha256 hex over model.pth, config.json and vocab.json


def _how_to_get_it() -> str:
    return (
        f"Download config.json, model.pth and vocab.json from {WEIGHTS_URL} (the released "
        f"weights are under the {LICENCE}), put them in one folder, for example "
        "~/models/xtts_v2, and point avatar at it with voice.checkpoint_dir=~/models/xtts_v2 "
        "(on the command line or in your config file). Or, if you accept that licence, set "
        f"{TOS_ENV}=1 and coqui-tts downloads the weights into its own cache on first use."
    )


def check_checkpoint_dir(path: Path) -> Path:
    """The folder, checked: it exists and holds every file XTTS-v2 needs to load."""
    folder = path.expanduser()
    if not folder.is_dir():
        raise CheckpointError(
            f"voice.checkpoint_dir: folder {folder} not found. It must hold the XTTS-v2 "
            f"checkpoint files {', '.join(REQUIRED_FILES)}. {_how_to_get_it()}"
        )
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"The XTTS-v2 checkpoint folder {folder} has no {' and no '.join(missing)}: it "
            f"needs {', '.join(REQUIRED_FILES)}. {_how_to_get_it()}"
        )
    return folder


def coqui_model_dir() -> Path:
    """Where coqui-tts's model manager keeps the downloaded XTTS-v2 (its own naming).

    Asked of the manager itself (its `output_prefix`: TTS_HOME, XDG_DATA_HOME or the
    platform's data dir), so avatar looks where a download puts it.
    """
    from TTS.utils.manage import ModelManager

    prefix = ModelManager(progress_bar=False).output_prefix
    return Path(prefix) / COQUI_MODEL_NAME.replace("/", "--")


def _download_with_coqui() -> Path:
    """coqui's model manager, run only after the licence was agreed (no prompt then)."""
    from TTS.utils.manage import ModelManager

    try:
        model_path, _, _ = ModelManager(progress_bar=False).download_model(COQUI_MODEL_NAME)
    except Exception as exc:  # no network, hub down, disk full: all end the same way
        raise CheckpointError(
            f"coqui-tts could not download XTTS-v2 ({type(exc).__name__}: {exc}). "
            f"{_how_to_get_it()}"
        ) from exc
    return Path(model_path)


def resolve_checkpoint_dir(
    checkpoint_dir: str | None,
    *,
    env: Mapping[str, str] | None = None,
    coqui_dir: Callable[[], Path] = coqui_model_dir,
    download: Callable[[], Path] = _download_with_coqui,
) -> Path:
    """The checkpoint folder to load: the configured one, coqui's copy, or a download."""
    if checkpoint_dir is not None:
        return check_checkpoint_dir(Path(checkpoint_dir))
    env = os.environ if env is None else env
    cached = coqui_dir()
    if all((cached / name).is_file() for name in REQUIRED_FILES):
        return cached
    if env.get(TOS_ENV, "").strip() != "1":
        raise CheckpointError(
            "No XTTS-v2 checkpoint: voice.checkpoint_dir is null and coqui-tts has no "
            f"downloaded copy in {cached}. avatar never answers coqui's licence question for "
            f"you (it would hang a sweep). {_how_to_get_it()}"
        )
    return check_checkpoint_dir(download())


def default_id_cache_file() -> Path:
    """$XDG_CACHE_HOME/avatar/checkpoint-ids.json (~/.cache/avatar/... by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "avatar" / "checkpoint-ids.json"


def _file_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _sha256_of_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def _read_id_cache(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or damaged: recomputed and rewritten
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def checkpoint_identity(folder: Path, *, cache_file: Path | None = None) -> str:
    """sha256 over model.pth, config.json and vocab.json, remembered by path, size and mtime.

    A second call for unchanged files reads only the small cache file; a replaced or
    touched file is hashed again. A cache that cannot be written costs a re-hash next
    time, nothing else.
    """
    files = [folder / "model.pth", folder / "config.json", folder / "vocab.json"]
    key = "\n".join(_file_key(path) for path in files)
    cache_file = default_id_cache_file() if cache_file is None else cache_file
    known = _read_id_cache(cache_file)
    if key in known:
        return known[key]
    identity = _sha256_of_files(files)
    known[key] = identity
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_file, json.dumps(known, indent=1).encode())
    except OSError:
        pass
    return identity


def find_checkpoint(
    checkpoint_dir: str | None,
    *,
    id_cache_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Checkpoint:
    """The checkpoint to load and its identity."""
    folder = resolve_checkpoint_dir(checkpoint_dir, env=env)
    return Checkpoint(folder, checkpoint_identity(folder, cache_file=id_cache_file))
