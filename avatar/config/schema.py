"""The structured-config schema: types and allowed values of every avatar key.

Hydra checks types and enum values against it while composing (`steps=abc`,
`precision=int8`, `nosuchkey=1` fail there with Hydra's own messages); the
range rules OmegaConf does not check live in `validate()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from avatar.errors import ConfigValueError


def plain_value(value: Any) -> Any:
    """An enum field's value (`Precision.fp16` -> "fp16"); any other value as it is."""
    return getattr(value, "value", value)


class Precision(Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Quality(Enum):
    reduced = "reduced"
    medium = "medium"
    high = "high"


class Accelerator(Enum):
    gpu = "gpu"
    cpu = "cpu"


@dataclass
class ProfileConfig:
    """One hardware profile (`conf/profile/<name>.yaml`). Thresholds live only there."""

    name: str = MISSING
    description: str = ""
    accelerator: Accelerator = MISSING
    # Auto-picked when the chosen GPU has at least this much VRAM in total; null = never
    # picked for a GPU (the CPU fallback).
    vram_min_mib: int | None = MISSING
    # Total VRAM of the card this profile is written for; the plan in status is made
    # against it when no GPU is usable here. null: vram_min_mib. What a profile needs
    # at peak is not declared: the plan derives it from the stages' own figures.
    nominal_vram_mib: int | None = None
    precision: Precision = MISSING
    quality: Quality = MISSING
    batch_size: int = MISSING
    steps: int = MISSING
    safety_margin_mib: int = MISSING
    # Set by the `auto` option: why this profile was chosen.
    selected_by: str = ""


# ----------------------------------------------------------------- pipeline stages
# Types only: every value (model, VRAM figures, knobs) lives in the option's YAML,
# conf/<stage>/<option>.yaml, which names its schema in its defaults list.


class Stage(Enum):
    """The pipeline's stages; each is a config group of the same name (conf/<stage>/)."""

    voice = "voice"
    lipsync = "lipsync"
    enhance = "enhance"


@dataclass
class VRAMNeedMiB:
    """Peak VRAM of a stage's model per precision, in MiB, at `vram_growth.at`.

    null: the model has no working path at that precision (XTTS-v2 at fp16), so the
    plan reports that instead of a number. A CPU-only model leaves all three null.
    """

    fp32: int | None = None
    fp16: int | None = None
    bf16: int | None = None


@dataclass
class VRAMGrowth:
    """How the need grows with one knob of the stage (batch size, tile edge).

    need = vram_mib[precision] * (fixed_share + (1 - fixed_share) * (value / at) ** power):
    weights and workspaces (the fixed share) stay, activations grow with the knob.
    """

    knob: str | None = None  # a key of the stage (batch_size, tile); null: the need is fixed
    at: int = 1  # the knob's value at which the vram_mib figures were reported
    power: int = 1  # 1: grows with the knob (batch size); 2: with its square (tile edge)
    fixed_share: float = 1.0  # the share of the need that does not grow


@dataclass
class StageConfig:
    """What every stage option declares: its model, where it runs, and its VRAM need."""

    name: str = MISSING  # the option's name (its file name), shown by the plan
    model: str = MISSING  # the model it loads, as its project names it
    description: str = ""
    runs_on: list[Accelerator] = MISSING  # [gpu, cpu], [gpu] or [cpu]
    precision: Precision = MISSING  # ${precision} (the profile's) unless the model has one path
    vram_mib: VRAMNeedMiB = field(default_factory=VRAMNeedMiB)
    vram_growth: VRAMGrowth = field(default_factory=VRAMGrowth)


@dataclass
class VoiceConfig(StageConfig):
    """Speech: text, and a reference clip of the voice to clone, to audio."""

    sample_rate_hz: int = MISSING


class XTTSLanguage(Enum):
    """The 17 languages XTTS-v2 speaks (the value is what coqui-tts expects)."""

    en = "en"
    es = "es"
    fr = "fr"
    de = "de"
    it = "it"
    pt = "pt"
    pl = "pl"
    tr = "tr"
    ru = "ru"
    nl = "nl"
    cs = "cs"
    ar = "ar"
    zh_cn = "zh-cn"
    hu = "hu"
    ko = "ko"
    ja = "ja"
    hi = "hi"


@dataclass
class XTTSConfig(VoiceConfig):
    language: XTTSLanguage = MISSING
    speaker_wav: str | None = MISSING  # the clip to clone (6 s or more); null: built-in speaker
    temperature: float = MISSING
    repetition_penalty: float = MISSING
    top_k: int = MISSING
    top_p: float = MISSING
    speed: float = MISSING
    enable_text_splitting: bool = MISSING


@dataclass
class PiperConfig(VoiceConfig):
    voice: str = MISSING  # a Piper voice name, e.g. en_US-lessac-medium
    length_scale: float = MISSING  # above 1 speaks slower
    noise_scale: float = MISSING
    noise_w: float = MISSING
    sentence_silence_s: float = MISSING


@dataclass
class LipsyncConfig(StageConfig):
    """Lip sync: a face (image or video) and the speech to a talking-face video."""

    batch_size: int = MISSING
    resolution_px: int = MISSING  # the face crop edge the model works at
    fps: int = MISSING


@dataclass
class Wav2LipConfig(LipsyncConfig):
    checkpoint: str = MISSING  # wav2lip or wav2lip_gan
    resize_factor: int = MISSING  # divides the input video's resolution
    face_det_batch_size: int = MISSING


@dataclass
class MuseTalkConfig(LipsyncConfig):
    version: str = MISSING  # v15 (MuseTalk 1.5) or v1
    bbox_shift: int = MISSING  # moves the mouth region; + opens the mouth more


@dataclass
class SadTalkerConfig(LipsyncConfig):
    preprocess: str = MISSING  # crop, resize or full
    still_mode: bool = MISSING  # less head motion
    expression_scale: float = MISSING


@dataclass
class HalloConfig(LipsyncConfig):
    steps: int = MISSING  # diffusion steps
    guidance_scale: float = MISSING
    frames_per_chunk: int = MISSING  # VRAM grows with it (and with the clip's length)


@dataclass
class EnhanceConfig(StageConfig):
    """Face enhancement and upscaling of the lip-synced frames."""

    upscale: int = MISSING
    tile: int = MISSING  # tile edge in px (0: the whole frame at once)


@dataclass
class PerQuality:
    """One value per profile quality; `${avatar.by_quality:${quality},${.x}}` picks one."""

    reduced: int = MISSING
    medium: int = MISSING
    high: int = MISSING


@dataclass
class GFPGANConfig(EnhanceConfig):
    version: str = MISSING  # 1.4, 1.3 or RestoreFormer
    weight: float = MISSING  # 0..1: how much of the restored face is blended in
    bg_upsampler: str | None = MISSING  # null: faces only, or realesrgan for the background


@dataclass
class RealESRGANConfig(EnhanceConfig):
    model_file: str = MISSING  # e.g. RealESRGAN_x4plus
    tile_by_quality: PerQuality = field(default_factory=PerQuality)
    tile_pad: int = MISSING


@dataclass
class PipelineConfig:
    stages: list[Stage] = MISSING  # run in this order, one model in VRAM at a time


# Per-option schemas, stored in Hydra's ConfigStore under these root names (not as a
# group, so `--help` lists only real options). An option YAML starts with
# `defaults: [/<name>@_here_, _self_]`, so a typo'd knob or a wrong type fails while
# composing, with Hydra's own message.
STAGE_SCHEMAS: dict[str, type[StageConfig]] = {
    "xtts_v2_schema": XTTSConfig,
    "piper_schema": PiperConfig,
    "wav2lip_schema": Wav2LipConfig,
    "musetalk_schema": MuseTalkConfig,
    "sadtalker_schema": SadTalkerConfig,
    "hallo_schema": HalloConfig,
    "gfpgan_schema": GFPGANConfig,
    "realesrgan_schema": RealESRGANConfig,
}


@dataclass
class AvatarConfig:
    """The primary config (`conf/config.yaml`)."""

    profile: ProfileConfig = field(default_factory=ProfileConfig)
    steps: int = MISSING
    batch_size: int = MISSING
    precision: Precision = MISSING
    quality: Quality = MISSING
    safety_margin_mib: int = MISSING
    gpu_index: int | None = None
    verbose: bool = False
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    lipsync: LipsyncConfig = field(default_factory=LipsyncConfig)
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


SCHEMA_NAME = "avatar_schema"

# (key, smallest allowed value, example of a good override)
# The profile's keys come first: the top-level knobs follow them by interpolation, so a
# bad `profile.steps` is reported under its own name, not as the `steps` that copies it.
_MINIMUMS: tuple[tuple[str, int, str], ...] = (
    ("profile.steps", 1, "profile.steps=30"),
    ("profile.batch_size", 1, "profile.batch_size=1"),
    ("profile.safety_margin_mib", 0, "profile.safety_margin_mib=512"),
    ("profile.vram_min_mib", 0, "profile.vram_min_mib=8192"),
    ("profile.nominal_vram_mib", 0, "profile.nominal_vram_mib=10240"),
    ("steps", 1, "steps=30"),
    ("batch_size", 1, "batch_size=2"),
    ("safety_margin_mib", 0, "safety_margin_mib=512"),
    ("gpu_index", 0, "gpu_index=0"),
    *(
        (f"{stage.value}.{key}", minimum, f"{stage.value}.{key}={example}")
        for stage in Stage
        for key, minimum, example in (
            ("vram_mib.fp32", 0, 2048),
            ("vram_mib.fp16", 0, 2048),
            ("vram_mib.bf16", 0, 2048),
            ("vram_growth.at", 1, 8),
            ("vram_growth.power", 0, 1),
            ("sample_rate_hz", 1, 24000),
            ("top_k", 1, 50),
            ("batch_size", 1, 4),
            ("resolution_px", 1, 256),
            ("fps", 1, 25),
            ("resize_factor", 1, 1),
            ("face_det_batch_size", 1, 4),
            ("steps", 1, 40),
            ("frames_per_chunk", 1, 16),
            ("upscale", 1, 2),
            ("tile", 0, 400),
            ("tile_pad", 0, 10),
        )
    ),
)

# (key, lowest, highest, example): float knobs, bounds included; None = unbounded.
_FLOAT_RANGES: tuple[tuple[str, float, float | None, str], ...] = (
    *(
        (
            f"{stage.value}.vram_growth.fixed_share",
            0.0,
            1.0,
            f"{stage.value}.vram_growth.fixed_share=0.5",
        )
        for stage in Stage
    ),
    ("voice.temperature", 0.01, None, "voice.temperature=0.75"),
    ("voice.repetition_penalty", 1.0, None, "voice.repetition_penalty=10.0"),
    ("voice.top_p", 0.01, 1.0, "voice.top_p=0.85"),
    ("voice.speed", 0.1, 4.0, "voice.speed=1.0"),
    ("voice.length_scale", 0.1, 4.0, "voice.length_scale=1.0"),
    ("voice.sentence_silence_s", 0.0, None, "voice.sentence_silence_s=0.2"),
    ("lipsync.guidance_scale", 0.0, None, "lipsync.guidance_scale=3.5"),
    ("enhance.weight", 0.0, 1.0, "enhance.weight=0.5"),
)


def validate(cfg: DictConfig) -> None:
    """Check what OmegaConf does not: missing values, interpolations, and ranges.

    Raises ConfigValueError with one paragraph naming the key, the value and what
    is allowed.
    """
    # One walk answers for a valid config (the case of every run): resolved, nothing
    # missing. Only when it fails are the checks made one by one, in their order, so the
    # error reported is the same as theirs (missing keys before resolution errors).
    try:
        resolved: Any = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException:
        resolved = None
    if resolved is None:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigValueError(
                f"These config keys have no value: {', '.join(missing)}. A profile file must "
                "set every profile key (see conf/profile/rtx3080.yaml), and ??? values must be "
                "set on the command line (key=value) or in your config file."
            )
        try:
            resolved = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as exc:
            raise ConfigValueError(f"The config does not resolve: {exc}".strip()) from exc
    for key, minimum, example in _MINIMUMS:
        value: Any = _resolved_value(resolved, key)
        if value is not None and (isinstance(value, bool) or value < minimum):
            raise ConfigValueError(
                f"Invalid value for '{key}': {value}. It must be an integer of at least "
                f"{minimum} (for example {example}).",
                key=key,
            )
    for key, low, high, example in _FLOAT_RANGES:
        value = _resolved_value(resolved, key)
        if value is not None and not (low <= value and (high is None or value <= high)):
            allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ConfigValueError(
                f"Invalid value for '{key}': {value}. It must be a number {allowed} "
                f"(for example {example}).",
                key=key,
            )
    _check_stages(cfg)


def _resolved_value(resolved: Any, dotted_key: str) -> Any:
    """`OmegaConf.select(cfg, key, default=None)` on the resolved container: the ranges
    are checked on it (seventy selects on the DictConfig cost a third of validation)."""
    node = resolved
    for part in dotted_key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def runs_on_gpu(stage: Any, profile_accelerator: Any) -> bool:
    """Whether a stage runs on the GPU: under a GPU profile, when its model can."""
    runs_on = {getattr(a, "value", a) for a in stage.runs_on}
    return getattr(profile_accelerator, "value", profile_accelerator) == "gpu" and "gpu" in runs_on


def _check_stages(cfg: DictConfig) -> None:
    """Rules across a stage's keys: a precision it has a path for, a real growth knob."""
    if "pipeline" not in cfg or "profile" not in cfg:
        return
    seen: set[str] = set()
    for entry in cfg.pipeline.stages:
        name = getattr(entry, "value", entry)
        if name in seen:
            raise ConfigValueError(
                f"pipeline.stages lists '{name}' twice: each stage runs once, in the order "
                "given (for example pipeline.stages=[voice,lipsync,enhance])."
            )
        seen.add(name)
        stage = cfg[name]
        knob = stage.vram_growth.knob
        if knob is not None and not isinstance(stage.get(knob), int):
            raise ConfigValueError(
                f"Invalid value for '{name}.vram_growth.knob': {knob}. It must name an integer "
                f"key of the {name} stage (batch_size, tile, ...), or be null.",
                key=f"{name}.vram_growth.knob",
            )
        if not stage.runs_on:
            raise ConfigValueError(
                f"'{name}.runs_on' is empty: list where {stage.model} runs, e.g. [gpu, cpu].",
                key=f"{name}.runs_on",
            )
        if not runs_on_gpu(stage, cfg.profile.accelerator):
            continue
        precision = stage.precision.value
        if stage.vram_mib[precision] is None:
            paths = [p.value for p in Precision if stage.vram_mib[p.value] is not None]
            fix = (
                f"Use {name}.precision={paths[0]}"
                + (f" (or {', '.join(paths[1:])})" if paths[1:] else "")
                if paths
                else f"Set {name}.vram_mib.{precision} to its need in MiB"
            )
            raise ConfigValueError(
                f"'{name}.precision' is {precision}, but {stage.model} ({name}={stage.name}) has "
                f"no working {precision} path: {name}.vram_mib.{precision} is null. {fix}, "
                f"or choose another {name} option.",
                key=f"{name}.precision",
            )
