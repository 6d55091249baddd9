"""`python -m avatar.speak`: text to a WAV file, with a stored voice or the light CPU voice.

    python -m avatar.speak speaker=alice text="Hello there." out=hello.wav
    python -m avatar.speak speaker=alice text_file=chapter1.txt out=chapter1.wav
    python -m avatar.speak profile=cpu text="Hello." out=hello.wav
    python -m avatar.speak -m speaker=alice voice.temperature=0.5,0.75 text="..."

A Hydra app whose primary config (conf/speak.yaml) is avatar's `config` plus the keys only
speaking needs, so profiles, overrides, your config file and sweeps work as for status. It
reuses the status app's pieces: the same preparation (`prepare`), validation with the file
that set a bad value, the sweep's status.json per job and the summary at the end. In a sweep
a relative `out` is written inside each job's dir, so jobs never overwrite each other.
Every bad input is one paragraph and exit status 1, checked before the model loads, and
nothing is written.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import MISSING, DictConfig, OmegaConf

from avatar.cli.app import fail_user_error, run_app
from avatar.cli.report import jsonable
from avatar.cli.sweep import job_conf_dirs, write_job_status
from avatar.config.compat import hydra_main_options, store_config
from avatar.config.compose import TRUSTED_TARGETS
from avatar.config.files import builtin_conf_dir
from avatar.config.origin import validate_where_set
from avatar.config.schema import AvatarConfig
from avatar.errors import AvatarUserError
from avatar.stages.voice.speaker import (
    SpeechSimilarity,
    is_released_checkpoint,
    score_speech,
    speaker_check_settings,
)
from avatar.stages.voice.store import SPEAKER_FILE, Voice, atomic_write_bytes, read_speaker_data
from avatar.stages.voice.synthesizer import (
    SpeakInputError,
    SpeechResult,
    Synthesizer,
    check_output,
    check_text,
    read_text_file,
)
from avatar.vram import VRAMManager

if TYPE_CHECKING:
    from avatar.config.profiles import AutoProfile
    from avatar.hardware import GPUDetection

SPEAK_CONFIG = "speak"
SPEAK_SCHEMA = "speak_schema"


@dataclass
class SpeakConfig(AvatarConfig):
    """conf/speak.yaml: avatar's schema plus the keys only `python -m avatar.speak` has."""

    speaker: str | None = None  # a stored voice (XTTS-v2)
    text: str | None = None
    text_file: str | None = None
    out: str = "speech.wav"
    overwrite: bool = False


# SpeakConfig with avatar's own keys untyped and missing, to be merged after `config`: a
# missing value never overrides one in a merge, and an untyped one keeps the type each
# node was composed with (voice=hibari stays LightVoiceConfig; a missing `voice:
# VoiceConfig` would retype it, and its own keys would then be unknown). A module-level
# class, so a SLURM job can unpickle the ConfigStore that holds it.
SpeakSchema = make_dataclass(
    "SpeakSchema",
    [(entry.name, Any, field(default=MISSING)) for entry in fields(AvatarConfig)],
    bases=(SpeakConfig,),
)
SpeakSchema.__module__ = __name__


def speak_schema() -> DictConfig:
    """The speak keys and their types, merged after avatar's config without resetting it."""
    return OmegaConf.structured(SpeakSchema)


def _text(cfg: DictConfig) -> str:
    if cfg.text is not None and cfg.text_file is not None:
        raise SpeakInputError(
            'Both text= and text_file= are set: give the text one way, either text="..." or '
            "text_file=FILE."
        )
    if cfg.text_file is not None:
        return read_text_file(str(cfg.text_file))
    return check_text(None if cfg.text is None else str(cfg.text))


def speak(
    cfg: DictConfig, *, job_dir: Path | None = None, detection: GPUDetection | None = None
) -> tuple[SpeechResult, Synthesizer, SpeechSimilarity | None]:
    """Check everything that needs no model, then load it once and speak.

    `job_dir`: a sweep job's dir, where a relative `out` goes. `detection`: the one
    `prepare()` made in this process, reused (a sweep job detects its own hardware). The
    Synthesizer comes back for its stage record and load time (filled in once the stage
    has ended), and with a stored voice the speech's similarity to it (the speaker check;
    None with the light voice).
    """
    text = _text(cfg)
    out = Path(str(cfg.out)).expanduser()
    if job_dir is not None and not out.is_absolute():
        out = job_dir / out
    path = check_output(out, overwrite=bool(cfg.overwrite))
    manager = None if detection is None else VRAMManager(cfg.gpu_index, detection=detection)
    synth = Synthesizer(cfg, manager=manager)
    speaker = None if cfg.speaker is None else str(cfg.speaker)
    voice = synth.check_speaker(speaker)
    synth.check_language(voice)
    similarity = None
    try:
        with synth:
            result = synth.speak(text, speaker=speaker, out=path, overwrite=bool(cfg.overwrite))
        if voice is not None:  # after the model's stage: the encoder never shares its VRAM
            similarity = _speech_similarity(cfg, voice, result, synth)
    finally:
        if manager is not None:
            manager.close()
    return result, synth, similarity


def _speech_similarity(
    cfg: DictConfig, voice: Voice, result: SpeechResult, synth: Synthesizer
) -> SpeechSimilarity:
    """The generated speech against the voice's stored embeddings (the ones a voice stored
    before the speaker check lacks are computed now and kept in its speaker.json)."""
    checkpoint_id = None if synth.checkpoint is None else synth.checkpoint.checkpoint_id
    released_sha = OmegaConf.select(cfg, "voice.released_checkpoint_sha256", default=None)
    clips = [(c.original_name, c.sha256, voice.dir / c.file) for c in voice.clips]
    similarity, update = score_speech(
        result.audio,
        result.sample_rate_hz,
        clips,
        read_speaker_data(voice.dir),
        speaker_check_settings(cfg),
        released=is_released_checkpoint(checkpoint_id, released_sha),
    )
    if update is not None:
        atomic_write_bytes(voice.dir / SPEAKER_FILE, (json.dumps(update) + "\n").encode())
    return similarity


def render_speech(
    result: SpeechResult,
    synth: Synthesizer,
    speaker: str | None,
    similarity: SpeechSimilarity | None = None,
) -> str:
    """What the run made, what it cost and how close it is to the voice, for the terminal."""
    who = f"voice '{speaker}'" if speaker else "the light voice"
    lines = [
        f"Wrote {result.path}: {result.audio_s:.2f} s of speech ({who}, {synth.option}, "
        f"{result.language}) in {result.wall_s:.2f} s, real-time factor "
        f"{result.real_time_factor:.2f}",
        f"  model load {synth.load_s:.2f} s; {result.pieces} piece(s); latents: "
        + (
            f"{result.latents} ({result.clone_s:.2f} s)"
            if result.latents != "none"
            else "none (no cloning)"
        ),
    ]
    record = synth.record
    if record is not None:
        peak = "not measured" if record.peak_mib is None else f"{record.peak_mib:.0f} MiB"
        stayed = "n/a" if record.stayed_mib is None else f"{record.stayed_mib:.0f} MiB"
        lines.append(
            f"  stage voice on {record.device}: declared {record.required_mib:.0f} MiB, "
            f"peak {peak}, stayed after cleanup {stayed}"
        )
    if similarity is not None:
        lines.append(f"  {similarity.describe()}")
    return "\n".join(lines)


def speech_record(result: SpeechResult, synth: Synthesizer, cfg: DictConfig) -> dict[str, Any]:
    """A sweep job's "speech" section of status.json: the file, what it cost, and the voice
    settings it was made with (the point of a sweep over them). Pure: no I/O."""
    rtf = result.real_time_factor
    return {
        "path": str(result.path) if result.path is not None else None,
        "sample_rate_hz": result.sample_rate_hz,
        "audio_s": result.audio_s,
        "wall_s": result.wall_s,
        "real_time_factor": rtf if math.isfinite(rtf) else None,
        "load_s": synth.load_s,
        "pieces": result.pieces,
        "language": result.language,
        "latents": result.latents,
        "speaker": None if cfg.speaker is None else str(cfg.speaker),
        # the option and its generation settings (speed, ...); enums (runs_on) as their values
        "voice": jsonable(OmegaConf.to_container(cfg.voice, resolve=True)),
        "stage": None if synth.record is None else jsonable(synth.record),
    }


def run_speak(cfg: DictConfig, hydra_cfg: DictConfig, auto: AutoProfile | None = None) -> None:
    """The app once Hydra has composed `cfg`: validate, speak, report (and record a sweep job).

    `auto` is the choice `prepare()` made in this process; its detection is reused by a
    single run.
    """
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job_dir = Path(str(hydra_cfg.runtime.output_dir)).absolute() if multirun else None
    try:
        validate_where_set(
            cfg,
            overrides=list(hydra_cfg.overrides.task),
            config_name=hydra_cfg.job.config_name,
            conf_dirs=job_conf_dirs(hydra_cfg),
        )
        detection = None if multirun or auto is None else auto.detection
        result, synth, similarity = speak(cfg, job_dir=job_dir, detection=detection)
    except AvatarUserError as exc:
        if multirun:  # recorded in status.json and the summary; main() exits 1 at the end
            write_job_status(hydra_cfg, cfg, error=exc)
            print(f"Error: {exc}", file=sys.stderr)
            return
        fail_user_error(exc)
        return
    speaker = None if cfg.speaker is None else str(cfg.speaker)
    print(render_speech(result, synth, speaker, similarity))
    if multirun:
        note = f"wrote {result.path} ({result.audio_s:.2f} s, RTF {result.real_time_factor:.2f})"
        notes = [note] if similarity is None else [note, similarity.describe()]
        record = speech_record(result, synth, cfg)
        if similarity is not None:
            record["speaker_similarity"] = similarity.to_json()
        write_job_status(hydra_cfg, cfg, notes=notes, sections={"speech": record})


def speak_app(
    auto: AutoProfile | None = None, config_dir: Path | None = None
) -> Callable[[], None]:
    """The `@hydra.main` app: a thin call into `run_speak`; `config_dir` as `prepare()` chose
    it (a user's --config-dir first, so their profiles shadow avatar's)."""

    @hydra.main(
        config_path=str(config_dir or builtin_conf_dir()),
        config_name=SPEAK_CONFIG,
        **hydra_main_options(*TRUSTED_TARGETS),
    )
    def avatar_speak(cfg: DictConfig) -> None:
        run_speak(cfg, HydraConfig.get(), auto)

    return avatar_speak


def main() -> None:
    """Entry point of `python -m avatar.speak`: the status app's handling of bad input,
    Ctrl-C and internal errors (`run_app`), with speak's own keys stored first."""
    run_app(
        sys.argv[1:],
        speak_app,
        after_prepare=lambda: store_config(name=SPEAK_SCHEMA, node=speak_schema()),
    )
