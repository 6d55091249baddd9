"""The synthesizer: text to a WAV file with a stored voice (XTTS-v2) or the light CPU voice.

`Synthesizer` is a context manager: entering it loads the model once, inside
`VRAMManager.stage("voice", config=cfg)` (refused with InsufficientVRAMError before anything
is loaded when it does not fit; device and margin from the detection and the profile; XTTS
in fp32, its only working precision); leaving it drops the model and the stage gives the VRAM
back. In between, `speak()` may run any number of times with the same model.

Long text is split with `split_text` at the per-language limits in conf/voice/xtts_v2.yaml
(XTTS-v2 refuses more than 400 tokens per call), spoken piece by piece and joined with short
pauses. Everything that can be checked without the model is checked first (text, output
path, speaker, language, checkpoint files), so bad input never costs a model load and never
writes a file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avatar.config import load_config
from avatar.errors import AvatarUserError
from avatar.stages.voice.checkpoint import Checkpoint, find_checkpoint
from avatar.stages.voice.cloner import ConditioningSettings, clone
from avatar.stages.voice.languages import normalise_language
from avatar.stages.voice.light import LightEngine
from avatar.stages.voice.light import check_language as light_check_language
from avatar.stages.voice.store import Voice, VoiceStore, resolve_voices_dir
from avatar.stages.voice.text import split_text
from avatar.vram import StageRecord, VRAMManager

if TYPE_CHECKING:
    import numpy as np
    from omegaconf import DictConfig

log = logging.getLogger("avatar.voice")

XTTS = "xtts_v2"


class SpeakInputError(AvatarUserError, ValueError):
    """Text, a text file or an output path that cannot be used."""


class CannotCloneError(AvatarUserError, ValueError):
    """A stored speaker was asked of a voice option that cannot clone."""


# ---------------------------------------------------------------- checks (no model needed)


def check_text(text: str | None, *, source: str = "text") -> str:
    """The text to speak; SpeakInputError when it is empty or only whitespace."""
    if text is None or not text.strip():
        raise SpeakInputError(
            f'The text to speak is empty ({source}): give some words, e.g. text="Hello there." '
            "or text_file=chapter1.txt (a UTF-8 text file)."
        )
    return text


def read_text_file(path: str | os.PathLike[str]) -> str:
    """A UTF-8 text file's contents, checked like `text`."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpeakInputError(
            f"text_file={path}: file {file.absolute()} not found. Give the path of a UTF-8 text "
            "file (relative to the current directory or absolute), or the text itself with text=."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpeakInputError(
            f"text_file={path}: {file.absolute()} cannot be read as UTF-8 text ({exc}). Save it "
            "as UTF-8 plain text, or pass the text itself with text=."
        ) from None
    return check_text(text, source=f"text_file={path}")


def check_output(out: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """The absolute output path: its folder must exist, and it must not unless `overwrite`."""
    path = Path(out).expanduser().absolute()
    if path.suffix.lower() != ".wav":
        raise SpeakInputError(
            f"out={out}: the output is written as WAV, so its name must end in .wav "
            f"(for example out={path.stem or 'speech'}.wav)."
        )
    if not path.parent.is_dir():
        raise SpeakInputError(
            f"out={out}: the folder {path.parent} does not exist. Create it first, or choose "
            "an out= in an existing folder; avatar does not create folders for its output."
        )
    if path.is_dir():
        raise SpeakInputError(f"out={out}: {path} is a folder; give a file name ending in .wav.")
    if path.exists() and not overwrite:
        raise SpeakInputError(
            f"out={out}: {path} exists already and was left as it is. Pass overwrite=true to "
            "replace it, or choose another out=."
        )
    return path


def light_speaker_error(speaker: str, option: str) -> CannotCloneError:
    return CannotCloneError(
        f"speaker={speaker}: the voice option '{option}' (the light CPU voice the cpu profile "
        "picks) cannot clone a stored voice. Add voice=xtts_v2 to speak with a stored voice "
        "(it needs the XTTS-v2 weights, see voice.checkpoint_dir), or leave speaker= out to "
        "use the light voice."
    )


def resolve_language(configured: Any, voice: Voice | None) -> str:
    """voice.language if set (zh_cn accepted), else the stored voice's own language."""
    if configured is not None:
        return normalise_language(str(configured))
    if voice is not None:
        return normalise_language(voice.language)
    return "en"


def write_wav(path: Path, audio: np.ndarray, sample_rate_hz: int, *, overwrite: bool) -> None:
    """Write 16-bit PCM WAV whole or not at all; without `overwrite` never replace a file."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sample_rate_hz, format="WAV", subtype="PCM_16")
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "xb") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the file appeared meanwhile: never clobbered
            except FileExistsError:
                raise SpeakInputError(
                    f"out={path}: the file appeared while speaking and was left as it is. "
                    "Pass overwrite=true to replace it."
                ) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


# ---------------------------------------------------------------- results


@dataclass
class SpeechResult:
    """What one `speak()` produced and what it cost."""

    path: Path | None
    sample_rate_hz: int
    audio_s: float
    wall_s: float  # cloning (or the cache lookup) + inference + writing; the load is separate
    clone_s: float  # the cloning phase alone (0 for the light voice)
    pieces: int  # how many pieces the text was split into
    language: str
    latents: str  # "computed", "reused" or "none" (the light voice does not clone)
    audio: Any = field(repr=False, default=None)  # float32 samples

    @property
    def real_time_factor(self) -> float:
        """Wall seconds per second of audio: below 1 is faster than real time."""
        return self.wall_s / self.audio_s if self.audio_s > 0 else float("inf")


# ---------------------------------------------------------------- the synthesizer


class Synthesizer:
    """Loads the voice model once under the VRAM stage guard; `speak()` as often as needed.

    ```python
    from avatar.voice import Synthesizer, load_config
    with Synthesizer(load_config(["voice=xtts_v2"])) as synth:
        result = synth.speak("Hello there.", speaker="alice", out="hello.wav")
    print(result.real_time_factor, synth.record.peak_mib)
    ```
    `cfg` is avatar's composed config (`load_config()`, or the app's); the voice option
    (`cfg.voice.name`: xtts_v2 or the light voice) decides the engine.
    """

    def __init__(
        self,
        cfg: DictConfig | None = None,
        *,
        store: VoiceStore | None = None,
        manager: VRAMManager | None = None,
        id_cache_file: Path | None = None,
    ) -> None:
        if cfg is None:
            cfg = load_config()
        self.cfg = cfg
        self.option = str(cfg.voice.name)
        self._store = store
        self._manager = manager
        self._own_manager = manager is None
        self._id_cache_file = id_cache_file
        self._stack: contextlib.ExitStack | None = None
        self._model: Any = None
        self.checkpoint: Checkpoint | None = None
        self.record: StageRecord | None = None
        self.load_s = 0.0
        self.sample_rate_hz = int(cfg.voice.sample_rate_hz)

    @property
    def clones(self) -> bool:
        return self.option == XTTS

    @property
    def store(self) -> VoiceStore:
        if self._store is None:
            self._store = VoiceStore(resolve_voices_dir(self.cfg.get("voices_dir")))
        return self._store

    # -- context manager

    def __enter__(self) -> Synthesizer:
        if self.clones:  # a missing checkpoint file is reported before anything loads
            self.checkpoint = find_checkpoint(
                self.cfg.voice.checkpoint_dir, id_cache_file=self._id_cache_file
            )
        stack = contextlib.ExitStack()
        try:
            if self._manager is None:
                self._manager = VRAMManager(gpu_index=self.cfg.gpu_index)
            if self._own_manager:
                stack.callback(self._manager.close)
            self.record = stack.enter_context(self._manager.stage("voice", config=self.cfg))
            stack.callback(self._drop_model)
            start = time.perf_counter()
            self._model = self._load(self.record.device)
            self.load_s = time.perf_counter() - start
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Drop the model, end the stage (it records an exception that ended the block)."""
        stack, self._stack = self._stack, None
        if self._own_manager:
            self._manager = None  # closed with the stack; a new `with` makes a new one
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    def _drop_model(self) -> None:
        model, self._model = self._model, None
        if model is not None and hasattr(model, "close"):
            model.close()
        del model  # inside the stage: its cleanup then frees the memory

    def _load(self, device: str) -> Any:
        if not self.clones:
            voice_cfg = self.cfg.voice
            engine = LightEngine(voice_cfg.get("voice_id"), threads=int(voice_cfg.threads))
            self.sample_rate_hz = engine.sample_rate_hz
            return engine
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        assert self.checkpoint is not None
        folder = self.checkpoint.dir
        config = XttsConfig()
        config.load_json(str(folder / "config.json"))
        model = Xtts(config)
        model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True, use_deepspeed=False)
        return model.to(device)  # fp32: XTTS-v2's only working precision

    # -- speaking

    def check_speaker(self, speaker: str | None) -> Voice | None:
        """The stored voice (XTTS-v2), or None for the light voice; errors before any load."""
        if not self.clones:
            if speaker is not None:
                raise light_speaker_error(speaker, self.option)
            return None
        if speaker is None:
            raise SpeakInputError(
                "No speaker: XTTS-v2 (voice=xtts_v2) speaks with a stored voice. Name one with "
                "speaker=NAME (`python -m avatar.voice list` shows them; `python -m avatar.voice "
                "add NAME clip.wav --language en` stores one)."
            )
        return self.store.get(speaker)

    def check_language(self, voice: Voice | None, language: str | None = None) -> str:
        """The language the text is spoken in, checked against what the option speaks."""
        if not self.clones:
            return light_check_language(str(language or self.cfg.voice.language or "en"))
        return resolve_language(language or self.cfg.voice.language, voice)

    def speak(
        self,
        text: str,
        *,
        speaker: str | None = None,
        out: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        language: str | None = None,
    ) -> SpeechResult:
        """Speak `text` (with the stored voice `speaker` under XTTS-v2) and write `out` if given."""
        import numpy as np

        if self._model is None:
            raise RuntimeError("Synthesizer.speak() needs the model: use it inside `with`")
        text = check_text(text)
        path = None if out is None else check_output(out, overwrite=overwrite)
        voice = self.check_speaker(speaker)
        code = self.check_language(voice, language)
        start = time.perf_counter()
        clone_s, latents_state = 0.0, "none"
        if self.clones:
            assert voice is not None and self.checkpoint is not None
            pieces_audio, pieces, clone_s, computed = self._speak_xtts(text, voice, code)
            latents_state = "computed" if computed else "reused"
        else:
            voice_cfg = self.cfg.voice
            audio = self._model.synthesize(text, speed=float(voice_cfg.speed), language=code)
            pieces_audio, pieces = [audio], 1
        audio = _join(pieces_audio, self.sample_rate_hz, float(self.cfg.voice.pause_s))
        if path is not None:
            write_wav(path, audio, self.sample_rate_hz, overwrite=overwrite)
        return SpeechResult(
            path=path,
            sample_rate_hz=self.sample_rate_hz,
            audio_s=len(audio) / self.sample_rate_hz,
            wall_s=time.perf_counter() - start,
            clone_s=clone_s,
            pieces=pieces,
            language=code,
            latents=latents_state,
            audio=np.asarray(audio, dtype=np.float32),
        )

    def _speak_xtts(
        self, text: str, voice: Voice, language: str
    ) -> tuple[list[np.ndarray], int, float, bool]:
        assert self.checkpoint is not None
        voice_cfg = self.cfg.voice
        settings = ConditioningSettings.from_config(voice_cfg.conditioning)
        cloned = clone(self._model, voice, self.checkpoint.checkpoint_id, settings)
        max_chars = int(voice_cfg.max_chars.get(language, 250))
        pieces = split_text(text, language, max_chars=max_chars)
        audio = [
            self._model.inference(
                piece,
                language,
                cloned.latents.gpt_cond_latent,
                cloned.latents.speaker_embedding,
                temperature=float(voice_cfg.temperature),
                repetition_penalty=float(voice_cfg.repetition_penalty),
                top_k=int(voice_cfg.top_k),
                top_p=float(voice_cfg.top_p),
                speed=float(voice_cfg.speed),
                enable_text_splitting=False,
            )["wav"]
            for piece in pieces
        ]
        return audio, len(pieces), cloned.seconds, cloned.computed


def _join(pieces: list[Any], sample_rate_hz: int, pause_s: float) -> np.ndarray:
    """The pieces in order with `pause_s` of silence between them, as float32."""
    import numpy as np

    arrays = [np.asarray(piece, dtype=np.float32).reshape(-1) for piece in pieces]
    if len(arrays) == 1:
        return arrays[0]
    gap = np.zeros(round(pause_s * sample_rate_hz), dtype=np.float32)
    joined: list[np.ndarray] = []
    for i, array in enumerate(arrays):
        if i:
            joined.append(gap)
        joined.append(array)
    return np.concatenate(joined)
