"""Speaker check: is a stored voice one person, and how close is generated speech to it?

A speaker embedding is a 256-number fingerprint of a voice, from resemblyzer's pretrained
`VoiceEncoder` (Apache-2.0; its 17 MB of weights ship inside the wheel, so it works offline).
Two recordings of one person give embeddings pointing the same way (cosine similarity near 1);
different people give lower scores. The threshold between the two is a measurement, not a
guess: benchmarks/speaker_calibration.py, results in benchmarks/results/speaker-calibration.md.

Three parts:
- pure decisions on embeddings (numpy only): `similarity`, `centroid`, `consistency`,
  `odd_clips`, `check_voice`. Nothing there loads a model, so `voice list` / `show` can
  rescore stored embeddings for free.
- stored embeddings: `embeddings_to_json` / `embeddings_from_json` (one per clip, keyed by the
  clip's sha256 and the encoder's id) and `embed_clips`, which embeds only the clips that have
  none yet; `speech_similarity` scores generated speech against the voice.
- `SpeakerEncoder`, a thin adapter over resemblyzer. resemblyzer, librosa (which resemblyzer
  imports), torch and soxr are imported inside it, so importing this module costs nothing and
  `python -m avatar.voice list` never loads the encoder. Audio goes in as float samples at any
  rate (the store's clips are 22,050 Hz); soxr resamples it to the encoder's 16 kHz, then
  resemblyzer's own `preprocess_wav` levels it and trims long silences, as calling
  resemblyzer directly does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avatar.config.files import builtin_conf_dir
from avatar.errors import AvatarUserError, ConfigValueError
from avatar.vram import VRAMManager

if TYPE_CHECKING:  # numpy is imported where embeddings are handled
    import numpy as np

    from avatar.vram import StageRecord

EMBEDDING_DIM = 256
# resemblyzer's encoder works on 16 kHz audio (resemblyzer.hparams.sampling_rate).
ENCODER_SAMPLE_RATE_HZ = 16_000
# The name under which the encoder runs in the VRAM stage guard (its record names it).
STAGE_NAME = "speaker"

# Defaults of the `speaker_check:` block of conf/voice/xtts_v2.yaml, used only where that
# block is absent; `speaker_check_settings` is the one place that reads it.
# Threshold: measured, benchmarks/results/speaker-calibration.md (0 % EER on 12 speakers,
# same-language intruders at most 0.816, clips of one speaker at least 0.868).
DEFAULT_THRESHOLD = 0.84
# VRAM: an estimate until measured on a GPU (tests/voice/test_speaker_gpu.py prints the peak):
# 1.42 M fp32 parameters (5.4 MiB) and activations well under 100 MiB for 30 s of audio,
# plus room for a CUDA context (300-500 MiB) when the encoder is the first to use the GPU.
DEFAULT_VRAM_MIB = 512.0


class SpeakerEncoderError(AvatarUserError, RuntimeError):
    """The speaker encoder cannot run here (package missing, audio it cannot use)."""


@dataclass(frozen=True)
class SpeakerCheckSettings:
    """The speaker check's settings (conf/voice/xtts_v2.yaml, `voice.speaker_check`).

    threshold: a clip whose similarity to the voice's other clips is below this is odd.
    vram_mib: what the encoder needs on a GPU (stage guard's need figure).
    device: where the encoder runs: "cpu" (default; a few seconds of audio take well under a
        second) or "gpu" (under the VRAM stage guard).
    """

    threshold: float = DEFAULT_THRESHOLD
    vram_mib: float = DEFAULT_VRAM_MIB
    device: str = "cpu"


def speaker_check_settings(cfg: Any = None) -> SpeakerCheckSettings:
    """The speaker-check settings of a config (`cfg.voice.speaker_check`), else of avatar's own
    conf/voice/xtts_v2.yaml (read without composing: `voice add` needs only this block), else
    the defaults above. A threshold outside [-1, 1] or a device other than cpu/gpu is refused.
    """
    if cfg is None:
        import yaml

        with open(builtin_conf_dir() / "voice" / "xtts_v2.yaml", encoding="utf-8") as file:
            cfg = {"voice": yaml.safe_load(file)}
    voice = cfg.get("voice") if hasattr(cfg, "get") else None
    block = voice.get("speaker_check") if voice is not None and hasattr(voice, "get") else None
    if block is None:
        return SpeakerCheckSettings()
    threshold = float(block.get("threshold", DEFAULT_THRESHOLD))
    if not -1.0 <= threshold <= 1.0:
        raise ConfigValueError(
            f"voice.speaker_check.threshold={threshold} is not a cosine similarity: use a "
            "number from -1 to 1 (the measured choice is in "
            "benchmarks/results/speaker-calibration.md).",
            key="voice.speaker_check.threshold",
        )
    device = str(block.get("device", "cpu"))
    if device not in ("cpu", "gpu"):
        raise ConfigValueError(
            f"voice.speaker_check.device={device!r} is not allowed: use cpu or gpu.",
            key="voice.speaker_check.device",
        )
    return SpeakerCheckSettings(
        threshold=threshold,
        vram_mib=float(block.get("vram_mib", DEFAULT_VRAM_MIB)),
        device=device,
    )


# ---------------------------------------------------------------------------------------------
# Pure decisions on embeddings


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings: 1 is the same direction, 0 unrelated."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        raise ValueError("similarity of a zero embedding is undefined")
    return float(np.dot(a, b) / norm)


def centroid(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """The voice's embedding: the mean of its clips' unit embeddings, scaled to unit length
    (as resemblyzer's `embed_speaker` does), so it can be compared like a clip's."""
    import numpy as np

    if not embeddings:
        raise ValueError("the centroid of no embeddings is undefined")
    units = [np.asarray(e, dtype=np.float64) / np.linalg.norm(e) for e in embeddings]
    mean = np.mean(units, axis=0)
    return mean / np.linalg.norm(mean)


@dataclass(frozen=True)
class Consistency:
    """How well a voice's clips agree.

    scores: per clip (in the clips' order), its similarity to the centroid of the OTHER
        clips of the voice's reference (see `consistency`); with two clips each score is the
        pair's similarity; empty with one clip.
    consistency: the mean of `scores` (with two clips, their similarity); None with one clip,
        which has nothing to agree with.
    in_reference: per clip, whether it is part of the reference the others are scored against
        (False for a clip set aside as odd).
    """

    scores: tuple[float, ...]
    consistency: float | None
    in_reference: tuple[bool, ...] = ()


def _leave_one_out(embeddings: Sequence[np.ndarray], members: Sequence[int]) -> dict[int, float]:
    return {
        i: similarity(embeddings[i], centroid([embeddings[j] for j in members if j != i]))
        for i in members
    }


def consistency(embeddings: Sequence[np.ndarray], threshold: float | None = None) -> Consistency:
    """Each clip's similarity to the centroid of the other clips, and their mean.

    Leave-one-out, so a clip never counts towards its own reference. With `threshold`, an odd
    clip is also kept out of the others' reference: while the lowest score is below the
    threshold and the clips left would still be a majority of the voice (and at least two),
    that clip is set aside and the rest are scored again. Kept clips are then scored against
    the other kept clips, set-aside clips against all the kept ones. Why: in a voice of three
    clips, another speaker's clip is half of each other clip's reference and drags their
    scores below the threshold too (benchmarks/results/speaker-calibration.md: most host clips
    beside an intruder at N=3); set aside, it is the only one named.
    """
    n = len(embeddings)
    if n == 0:
        raise ValueError("a voice has at least one clip")
    if n == 1:
        return Consistency((), None, (True,))
    kept = list(range(n))
    scores = _leave_one_out(embeddings, kept)
    while threshold is not None and len(kept) - 1 > n / 2 and len(kept) - 1 >= 2:
        worst = min(kept, key=scores.__getitem__)
        if scores[worst] >= threshold:
            break
        kept.remove(worst)
        scores = _leave_one_out(embeddings, kept)
    reference = centroid([embeddings[j] for j in kept])
    final = tuple(
        scores[i] if i in scores else similarity(embeddings[i], reference) for i in range(n)
    )
    return Consistency(final, math.fsum(final) / n, tuple(i in scores for i in range(n)))


@dataclass(frozen=True)
class OddClip:
    name: str
    score: float  # its similarity to the centroid of the voice's other clips


@dataclass(frozen=True)
class OddClipVerdict:
    """What the speaker check can say about a voice's clips.

    can_single_out: False with one or two clips: with two that disagree, neither is "the odd
        one"; `note` says so (with two, it gives their similarity).
    odd: the clips below the threshold, lowest score first (empty when all agree, or when
        none can be singled out).
    """

    can_single_out: bool
    odd: tuple[OddClip, ...]
    note: str
    threshold: float


def odd_clips(
    scores: Sequence[float], threshold: float, names: Sequence[str] | None = None
) -> OddClipVerdict:
    """Which clips do not sound like the rest of the voice (issue 13's rules).

    `scores` come from `consistency(...).scores` (one per clip, in order; empty for one clip
    is allowed, as is [s] for one clip with no score). `names` are the clips' names for the
    messages (default clip 1, clip 2, ...).

    - one clip: nothing to compare it with;
    - two clips: their similarity is reported, and below the threshold the note says the two
      differ, but neither can be named as the odd one;
    - three clips or more: every clip scoring below the threshold is named with its score.
    """
    count = len(names) if names is not None else len(scores)
    if count >= 2 and len(scores) != count:
        raise ValueError(f"{len(scores)} scores for {count} clips")
    labels = list(names) if names is not None else [f"clip {i + 1}" for i in range(count)]
    if count <= 1:
        note = "one clip: nothing to compare it with, so no clip can be singled out"
        return OddClipVerdict(False, (), note, threshold)
    if count == 2:
        pair = scores[0]
        differ = (
            f"below the threshold {threshold:.2f}: they may be different speakers, but with "
            "two clips neither can be named as the odd one (add a third clip to tell)"
            if pair < threshold
            else f"at or above the threshold {threshold:.2f}"
        )
        note = f"two clips: their similarity is {pair:.2f}, {differ}"
        return OddClipVerdict(False, (), note, threshold)
    odd = tuple(
        sorted(
            (
                OddClip(label, float(s))
                for label, s in zip(labels, scores, strict=True)
                if s < threshold
            ),
            key=lambda clip: clip.score,
        )
    )
    if odd:
        listed = ", ".join(f"{c.name} ({c.score:.2f})" for c in odd)
        note = (
            f"{len(odd)} of {count} clips do not sound like the others (similarity to the "
            f"other clips below {threshold:.2f}): {listed}"
        )
    else:
        note = f"all {count} clips sound like one speaker (each at least {threshold:.2f})"
    return OddClipVerdict(True, odd, note, threshold)


def check_voice(
    embeddings: Mapping[str, np.ndarray], threshold: float
) -> tuple[Consistency, OddClipVerdict]:
    """`consistency` (odd clips kept out of the reference) and `odd_clips` for clips named by
    the keys (in the mapping's order): what `voice add` warns about and `voice show` lists."""
    names = list(embeddings)
    result = consistency([embeddings[name] for name in names], threshold)
    return result, odd_clips(result.scores, threshold, names)


# ---------------------------------------------------------------------------------------------
# Stored embeddings: one per clip, keyed by the clip's sha256, reused until a clip changes


def encoder_id() -> str:
    """Which encoder made an embedding: embeddings of another encoder (a resemblyzer release
    with other weights) are not comparable, so a stored one counts only under the same id."""
    from importlib import metadata

    try:
        return f"resemblyzer-{metadata.version('resemblyzer')}"
    except metadata.PackageNotFoundError:
        return "resemblyzer-unknown"


def embeddings_to_json(encoder: str, embeddings: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The JSON form of clips' embeddings (keyed by clip sha256), for the voice's folder:
    {"encoder": id, "dim": 256, "clips": {sha256: [256 floats]}}."""
    return {
        "encoder": encoder,
        "dim": EMBEDDING_DIM,
        "clips": {key: [round(float(x), 7) for x in vector] for key, vector in embeddings.items()},
    }


def embeddings_from_json(data: Any, encoder: str) -> dict[str, np.ndarray]:
    """The stored embeddings that are usable with `encoder`: none when they were made by
    another encoder or the data is not what `embeddings_to_json` writes (then they are simply
    computed again; a damaged cache never stops `voice add`)."""
    import numpy as np

    if not isinstance(data, dict) or data.get("encoder") != encoder:
        return {}
    clips = data.get("clips")
    if data.get("dim") != EMBEDDING_DIM or not isinstance(clips, dict):
        return {}
    out: dict[str, np.ndarray] = {}
    for key, vector in clips.items():
        if isinstance(vector, list) and len(vector) == EMBEDDING_DIM:
            array = np.asarray(vector, dtype=np.float32)
            if np.all(np.isfinite(array)) and np.any(array):
                out[str(key)] = array
    return out


def embed_clips(
    encoder: SpeakerEncoder,
    clips: Sequence[tuple[str, str | Path]],
    stored: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], int]:
    """Embeddings of a voice's clips, given as (sha256, path) in the voice's order: stored
    ones are reused, only the others are computed. Returns ({sha256: embedding}, how many were
    computed), so `voice add --append` embeds only the new clips."""
    out: dict[str, np.ndarray] = {}
    computed = 0
    for key, path in clips:
        if key in stored:
            out[key] = stored[key]
        else:
            out[key] = encoder.embed_file(path)
            computed += 1
    return out, computed


def speech_similarity(
    encoder: SpeakerEncoder,
    samples: np.ndarray,
    sample_rate_hz: int,
    voice_embeddings: Sequence[np.ndarray],
    threshold: float | None = None,
) -> float:
    """How much generated speech sounds like the voice: its similarity to the centroid of the
    voice's clips (with `threshold`, of the clips that agree, odd ones set aside as in
    `consistency`). On the same scale as the clips' scores, so the calibrated threshold
    reads the same way."""
    result = consistency(voice_embeddings, threshold)
    kept = [e for e, keep in zip(voice_embeddings, result.in_reference, strict=True) if keep]
    return similarity(encoder.embed(samples, sample_rate_hz), centroid(kept))


# ---------------------------------------------------------------------------------------------
# The encoder (resemblyzer), behind a thin adapter


class SpeakerEncoder:
    """resemblyzer's pretrained `VoiceEncoder`, loaded once; `embed` turns speech into a unit
    256-d embedding.

    `device` is a torch device ("cpu", "cuda:0"). On a GPU, open it with `speaker_encoder()`,
    which runs it under the VRAM stage guard.
    """

    def __init__(self, device: str = "cpu") -> None:
        try:
            with warnings.catch_warnings():
                # Two of resemblyzer's dependencies warn on import, to the user nothing they
                # can act on: webrtcvad imports pkg_resources, resemblyzer a scipy alias.
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
                warnings.filterwarnings("ignore", message=".*scipy.ndimage.morphology")
                from resemblyzer import VoiceEncoder
        except ImportError as e:
            raise SpeakerEncoderError(
                f"The speaker check needs the resemblyzer package, which is not installed or "
                f"does not import ({e}). Install avatar's voice extra "
                "(pip install '.[voice]' in avatar's folder)."
            ) from None
        self.device = device
        self.encoder_id = encoder_id()
        self._encoder: Any = VoiceEncoder(device=device, verbose=False)

    def prepare(self, samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        """What the encoder hears: mono float32 at 16 kHz (soxr), levelled and with long
        silences trimmed by resemblyzer's own `preprocess_wav`."""
        import numpy as np
        import soxr
        from resemblyzer import preprocess_wav

        mono = np.asarray(samples, dtype=np.float32)
        if mono.ndim == 2:
            mono = mono.mean(axis=1)
        if mono.ndim != 1 or mono.size == 0:
            raise SpeakerEncoderError(
                f"The speaker encoder needs mono audio samples; got an array of shape "
                f"{tuple(np.shape(samples))}."
            )
        if not np.any(mono):  # resemblyzer would scale silence by an infinite gain
            return mono[:0]
        if sample_rate_hz != ENCODER_SAMPLE_RATE_HZ:
            mono = soxr.resample(mono, sample_rate_hz, ENCODER_SAMPLE_RATE_HZ)
        return preprocess_wav(mono)

    def embed(self, samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        """The unit-length 256-d embedding (float32) of speech at any sample rate."""
        if self._encoder is None:
            raise RuntimeError("SpeakerEncoder.embed called after close()")
        wav = self.prepare(samples, sample_rate_hz)
        if wav.size == 0:
            raise SpeakerEncoderError(
                "The speaker encoder found no speech in this audio (all of it is silence or "
                "too quiet once long pauses are trimmed)."
            )
        return self._encoder.embed_utterance(wav)

    def embed_file(self, path: str | Path) -> np.ndarray:
        """The embedding of an audio file (a voice's normalised clip, or generated speech)."""
        import soundfile

        samples, sample_rate_hz = soundfile.read(str(path), dtype="float32", always_2d=False)
        return self.embed(samples, int(sample_rate_hz))

    def close(self) -> None:
        """Drop the model (the stage guard then gives its VRAM back)."""
        self._encoder = None

    def __enter__(self) -> SpeakerEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def speaker_encoder(
    settings: SpeakerCheckSettings | None = None,
    *,
    manager: VRAMManager | None = None,
) -> Iterator[tuple[SpeakerEncoder, StageRecord | None]]:
    """The encoder, open for the duration of the block, and the stage's VRAM record.

    With settings.device "cpu" (the default) it loads on the CPU and the record is None. With
    "gpu" it runs inside `manager.stage("speaker", vram_mib)`, which refuses before loading
    when it does not fit; on a machine without a GPU the manager's CPU mode runs it on the CPU.
    """
    settings = settings or SpeakerCheckSettings()
    if settings.device == "cpu":
        with SpeakerEncoder("cpu") as encoder:
            yield encoder, None
        return
    if manager is None:
        manager = VRAMManager()
    with (
        manager.stage(STAGE_NAME, settings.vram_mib) as record,
        SpeakerEncoder(record.device) as encoder,
    ):
        yield encoder, record


# ---------------------------------------------------------------------------------------------
# The check on a stored voice: on `voice add` (embeds), on `voice show` / `list` (reads only)


class OddClipsRefusedError(AvatarUserError):
    """`voice add --strict` and a clip that does not sound like the others: nothing stored."""


@dataclass(frozen=True)
class VoiceScores:
    """A voice's speaker check, from its clips' embeddings.

    names: the clips' names (original file names), in the voice's order.
    scores: per clip, its similarity to the voice (see `consistency`); None for a clip without
        an embedding (the encoder found no speech in it, or it was stored before the check).
    consistency: the mean score (with two clips, their similarity); None below two scored clips.
    verdict: which clips are odd, or why none can be singled out.
    """

    names: tuple[str, ...]
    scores: tuple[float | None, ...]
    consistency: float | None
    verdict: OddClipVerdict

    @property
    def unscored(self) -> tuple[str, ...]:
        return tuple(n for n, s in zip(self.names, self.scores, strict=True) if s is None)

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.verdict.threshold,
            "consistency": _rounded(self.consistency),
            "can_single_out": self.verdict.can_single_out,
            "odd_clips": [{"clip": c.name, "score": round(c.score, 4)} for c in self.verdict.odd],
            "note": self.verdict.note,
            "clips": [
                {"clip": name, "score": _rounded(score)}
                for name, score in zip(self.names, self.scores, strict=True)
            ],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def score_voice(
    clips: Sequence[tuple[str, str]], embeddings: Mapping[str, np.ndarray], threshold: float
) -> VoiceScores:
    """The check of a voice whose clips are (name, sha256) in order, from embeddings keyed by
    sha256 (clips without one are left out of the comparison and scored None). Pure: numpy."""
    present = [(name, key) for name, key in clips if key in embeddings]
    names = [name for name, _ in present]
    if not present:
        note = "no clip has a speaker embedding, so the voice cannot be checked"
        verdict = OddClipVerdict(False, (), note, threshold)
        return VoiceScores(tuple(n for n, _ in clips), (None,) * len(clips), None, verdict)
    result = consistency([embeddings[key] for _, key in present], threshold)
    verdict = odd_clips(result.scores, threshold, names)
    by_key = dict(zip((key for _, key in present), result.scores, strict=False))
    scores = tuple(by_key.get(key) for _, key in clips) if result.scores else (None,) * len(clips)
    return VoiceScores(tuple(n for n, _ in clips), scores, result.consistency, verdict)


def stored_voice_scores(
    clips: Sequence[tuple[str, str]], data: Any, threshold: float
) -> VoiceScores | None:
    """The check of a stored voice from its speaker.json (`data`, parsed) without the encoder:
    what `voice show` and `list` print. None when the voice has no usable stored embeddings
    (stored before the speaker check, or by an encoder this install cannot compare)."""
    encoder = data.get("encoder") if isinstance(data, dict) else None
    stored = embeddings_from_json(data, str(encoder)) if encoder else {}
    if not any(key in stored for _, key in clips):
        return None
    return score_voice(clips, stored, threshold)


class AddSpeakerCheck:
    """The speaker check `VoiceStore.add` runs before its commit (the store's `check=`).

    Embeds the clips that have no stored embedding yet (a clip is known by its sha256, so an
    append embeds only the new clips), scores the voice, and with `strict` refuses the add when
    a clip is odd. A clip the encoder cannot use (no speech found) or a missing encoder does
    not stop the add: `problems` says why the check is incomplete. Results for the caller:
    `scores`, `computed` (how many clips were embedded now), `problems`.
    """

    def __init__(
        self,
        settings: SpeakerCheckSettings | None = None,
        *,
        strict: bool = False,
        open_encoder: Any = None,
    ) -> None:
        self.settings = settings or speaker_check_settings()
        self.strict = strict
        self._open = open_encoder or (lambda: speaker_encoder(self.settings))
        self.scores: VoiceScores | None = None
        self.computed = 0
        self.problems: list[str] = []

    def __call__(
        self, clips: Sequence[tuple[str, str, Path]], stored_data: Any
    ) -> dict[str, Any] | None:
        try:
            with self._open() as (encoder, _record):
                stored = embeddings_from_json(stored_data, encoder.encoder_id)
                embeddings: dict[str, np.ndarray] = {}
                for name, key, path in clips:
                    try:
                        found, computed = embed_clips(encoder, [(key, path)], stored)
                    except SpeakerEncoderError as exc:
                        self.problems.append(f"clip {name}: {exc}")
                        continue
                    embeddings.update(found)
                    self.computed += computed
                encoder_name = encoder.encoder_id
        except SpeakerEncoderError as exc:
            self.problems.append(str(exc))
            return None
        names = [(name, key) for name, key, _ in clips]
        self.scores = score_voice(names, embeddings, self.settings.threshold)
        odd = self.scores.verdict.odd
        if self.strict and odd:
            listed = ", ".join(f"{c.name} (similarity {c.score:.2f})" for c in odd)
            raise OddClipsRefusedError(
                f"--strict: {listed} {'does' if len(odd) == 1 else 'do'} not sound like the "
                f"voice's other clips (below the threshold {self.settings.threshold:.2f}, "
                "voice.speaker_check.threshold), so nothing was added or changed. Leave the "
                "odd clip out, or add without --strict to keep it with a warning."
            )
        return embeddings_to_json(encoder_name, embeddings)


# ---------------------------------------------------------------------------------------------
# After speak: how much the generated speech sounds like the voice

NOT_RELEASED = "similarity is meaningless with this checkpoint (not the released XTTS-v2)"


@dataclass(frozen=True)
class SpeechSimilarity:
    """The similarity of generated speech to the voice it was spoken with.

    score: on the clips' scale (the calibrated threshold reads the same way); None when it
        could not be measured (`problem` says why).
    released: whether the checkpoint is the released XTTS-v2 (its sha256 is the config's
        `voice.released_checkpoint_sha256`); with any other (a test model with random weights,
        a fine-tune) the score says nothing about the voice, and `describe` says so.
    """

    score: float | None
    released: bool
    threshold: float
    problem: str | None = None

    def describe(self) -> str:
        """One sentence for the run's report and a sweep job's record."""
        if self.score is None:
            unmeasured = f"speaker similarity not measured: {str(self.problem).rstrip('.')}"
            return unmeasured if self.released else f"{unmeasured}; {NOT_RELEASED}"
        figure = f"speaker similarity to the voice {self.score:.2f}"
        if not self.released:
            return f"{figure}; {NOT_RELEASED}"
        if self.score >= self.threshold:
            return f"{figure} (at or above the threshold {self.threshold:.2f})"
        return (
            f"{figure}, below the threshold {self.threshold:.2f}: the speech may not sound "
            "like the voice"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "score": _rounded(self.score),
            "released_checkpoint": self.released,
            "threshold": self.threshold,
            "statement": self.describe(),
        }


def is_released_checkpoint(checkpoint_id: str | None, released_sha256: str | None) -> bool:
    """Whether a checkpoint is the released XTTS-v2: its sha256 identity equals the configured
    one. An unset (null) configured sha256 means no checkpoint can be shown to be it."""
    if not checkpoint_id or not released_sha256:
        return False
    return checkpoint_id.strip().lower() == str(released_sha256).strip().lower()


def score_speech(
    samples: np.ndarray,
    sample_rate_hz: int,
    clips: Sequence[tuple[str, str, Path]],
    stored_data: Any,
    settings: SpeakerCheckSettings,
    *,
    released: bool,
    open_encoder: Any = None,
) -> tuple[SpeechSimilarity, dict[str, Any] | None]:
    """Score generated speech against a stored voice whose clips are (name, sha256, path).

    Stored embeddings are reused; a clip without one (a voice stored before the check) is
    embedded now, and then the second value is the speaker.json data to store so it is not
    computed again (None when nothing new was computed). An encoder that cannot run gives a
    SpeechSimilarity with `problem` rather than failing the run: the speech is already made.
    """
    opener = open_encoder or (lambda: speaker_encoder(settings))
    update: dict[str, Any] | None = None
    try:
        with opener() as (encoder, _record):
            stored = embeddings_from_json(stored_data, encoder.encoder_id)
            embeddings, computed = embed_clips(
                encoder, [(key, path) for _, key, path in clips], stored
            )
            if computed:  # kept even when the speech itself cannot be scored
                update = embeddings_to_json(encoder.encoder_id, embeddings)
            score = speech_similarity(
                encoder,
                samples,
                sample_rate_hz,
                list(embeddings.values()),
                settings.threshold,
            )
    except SpeakerEncoderError as exc:
        return SpeechSimilarity(None, released, settings.threshold, str(exc)), update
    return SpeechSimilarity(score, released, settings.threshold), update
