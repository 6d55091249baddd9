"""The cloner: a stored voice's clips to XTTS-v2 conditioning latents, cached in its folder.

The latents come from coqui-tts's own tensor-level calls, `get_gpt_cond_latents` and
`get_speaker_embedding`, fed with the voice's normalised clips (mono, 22,050 Hz) read by
soundfile, exactly as coqui's `get_conditioning_latents` combines them: each clip cut to
`max_ref_length_s`, one speaker embedding per clip averaged, the GPT latent from the clips
joined. Reading the audio ourselves keeps FFmpeg/torchcodec out (coqui's own loader goes
through torchaudio.load).

Cache (the interface the store reads for `list`/`show`): `cache/<key>.pt` holds the two
tensors, `cache/<key>.json` says what they were made from; the key is
`xtts_v2-<checkpoint_id[:12]>-<clips_sha256[:12]>`, so another model or a changed clip
simply misses and recomputes. Both files are written atomically, the .json last, so
concurrent jobs of a sweep cloning the same voice each replace whole files and a reader
never sees a torn one; an entry that cannot be read is recomputed.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avatar.stages.voice.store import Voice, atomic_write_bytes

if TYPE_CHECKING:
    import torch

log = logging.getLogger("avatar.voice")

MODEL_NAME = "xtts_v2"
GPT_SAMPLE_RATE_HZ = 22_050  # XTTS computes its GPT latents from 22,050 Hz audio


@dataclass(frozen=True)
class ConditioningSettings:
    """How much of the clips is used (conf/voice/xtts_v2.yaml, `voice.conditioning`)."""

    max_ref_length_s: int = 30
    gpt_cond_len_s: int = 30
    gpt_cond_chunk_len_s: int = 4

    @classmethod
    def from_config(cls, conditioning: Any) -> ConditioningSettings:
        return cls(
            max_ref_length_s=int(conditioning.max_ref_length_s),
            gpt_cond_len_s=int(conditioning.gpt_cond_len_s),
            gpt_cond_chunk_len_s=int(conditioning.gpt_cond_chunk_len_s),
        )


@dataclass(frozen=True)
class Latents:
    gpt_cond_latent: torch.Tensor  # [1, 32, gpt width]
    speaker_embedding: torch.Tensor  # [1, 512, 1]


@dataclass(frozen=True)
class CloneResult:
    latents: Latents
    key: str
    computed: bool  # False: read from the voice's cache
    seconds: float  # the whole cloning phase: cache lookup, and computing and saving if needed


def cache_key(checkpoint_id: str, clips_sha256: str) -> str:
    return f"{MODEL_NAME}-{checkpoint_id[:12]}-{clips_sha256[:12]}"


def read_clip(path: Path, sample_rate_hz: int = GPT_SAMPLE_RATE_HZ) -> torch.Tensor:
    """A clip as a [1, samples] float32 tensor at `sample_rate_hz` (mono; resampled with soxr)."""
    import numpy as np
    import soundfile
    import soxr
    import torch

    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != sample_rate_hz:  # the store keeps 22,050 Hz copies; this is for other callers
        mono = soxr.resample(mono, rate, sample_rate_hz).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(mono))[None, :]


def compute_latents(model: Any, clip_paths: list[Path], settings: ConditioningSettings) -> Latents:
    """coqui's get_conditioning_latents, fed with our own audio reading."""
    import torch

    device = next(model.parameters()).device
    embeddings = []
    audios = []
    for path in clip_paths:
        audio = read_clip(path)[:, : GPT_SAMPLE_RATE_HZ * settings.max_ref_length_s].to(device)
        embeddings.append(model.get_speaker_embedding(audio, GPT_SAMPLE_RATE_HZ))
        audios.append(audio)
    gpt_cond_latent = model.get_gpt_cond_latents(
        torch.cat(audios, dim=-1),
        GPT_SAMPLE_RATE_HZ,
        length=settings.gpt_cond_len_s,
        chunk_length=settings.gpt_cond_chunk_len_s,
    )
    speaker_embedding = torch.stack(embeddings).mean(dim=0)
    return Latents(gpt_cond_latent.detach().cpu(), speaker_embedding.detach().cpu())


def load_cached(cache_dir: Path, key: str, checkpoint_id: str, clips_sha256: str) -> Latents | None:
    """The cached latents if the entry exists, matches and reads whole; else None."""
    import torch

    meta_path, tensor_path = cache_dir / f"{key}.json", cache_dir / f"{key}.pt"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if (meta.get("checkpoint_id"), meta.get("clips_sha256")) != (checkpoint_id, clips_sha256):
            return None
        data = torch.load(tensor_path, map_location="cpu", weights_only=True)
        latents = Latents(data["gpt_cond_latent"], data["speaker_embedding"])
    except FileNotFoundError:
        return None
    except Exception as exc:  # damaged or foreign: recomputed and replaced, never fatal
        log.warning("Latent cache entry %s cannot be read (%s); computing it again", meta_path, exc)
        return None
    if latents.speaker_embedding.dim() != 3 or latents.gpt_cond_latent.dim() != 3:
        return None
    return latents


def save_cached(
    cache_dir: Path,
    key: str,
    latents: Latents,
    *,
    checkpoint_id: str,
    clips_sha256: str,
    seconds: float,
) -> None:
    """Write the entry: the tensors first, then the .json that makes it visible to the store."""
    import torch

    cache_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(
        {
            "gpt_cond_latent": latents.gpt_cond_latent,
            "speaker_embedding": latents.speaker_embedding,
        },
        buffer,
    )
    atomic_write_bytes(cache_dir / f"{key}.pt", buffer.getvalue())
    meta = {
        "model": MODEL_NAME,
        "checkpoint_id": checkpoint_id,
        "clips_sha256": clips_sha256,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
    }
    atomic_write_bytes(cache_dir / f"{key}.json", (json.dumps(meta, indent=2) + "\n").encode())


def clone(
    model: Any, voice: Voice, checkpoint_id: str, settings: ConditioningSettings
) -> CloneResult:
    """The voice's latents for this checkpoint: from its cache, or computed and cached."""
    start = time.perf_counter()
    clips_sha256 = voice.clips_sha256
    key = cache_key(checkpoint_id, clips_sha256)
    cached = load_cached(voice.cache_dir, key, checkpoint_id, clips_sha256)
    if cached is not None:
        return CloneResult(cached, key, computed=False, seconds=time.perf_counter() - start)
    latents = compute_latents(model, voice.clip_paths(), settings)
    compute_s = time.perf_counter() - start
    try:
        save_cached(
            voice.cache_dir,
            key,
            latents,
            checkpoint_id=checkpoint_id,
            clips_sha256=clips_sha256,
            seconds=compute_s,
        )
    except OSError as exc:  # a read-only store still speaks; it just computes again next time
        log.warning("Could not cache the latents of voice %r in %s: %s", voice.name, voice.dir, exc)
    return CloneResult(latents, key, computed=True, seconds=time.perf_counter() - start)
