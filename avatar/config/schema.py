"""The structured-config schema: types and allowed values of every avatar key.

Hydra checks types and enum values against it while composing (`steps=abc`,
`precision=int8`, `nosuchkey=1` fail there with Hydra's own messages). Each number's
range lives on its field (`ranged()` metadata), the one place for it; `validate()`
checks those ranges, the interpolations and the keys a `+key=` override added.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from avatar.errors import ConfigValueError


def plain_value(value: Any) -> Any:
    """An enum field's value (`Precision.fp16` -> "fp16"); any other value as it is."""
    return getattr(value, "value", value)


# A field's allowed range lives in its metadata, here in the schema and nowhere else:
# `validate()` reads it, README's "Bad input" lists it (tests/test_hardening_readme.py).
RANGE_MIN = "min"
RANGE_MAX = "max"
RANGE_EXAMPLE = "example"


def ranged(low: float, high: float, example: float, default: Any = MISSING) -> Any:
    """A numeric field allowed from `low` to `high` (both included); `example` is a good value.

    Every number gets an upper bound too: a 400-digit value would otherwise reach the
    plan's float arithmetic and end in OverflowError instead of a message.
    """
    return field(
        default=default, metadata={RANGE_MIN: low, RANGE_MAX: high, RANGE_EXAMPLE: example}
    )


# The largest amounts of memory a knob may name: 1 TiB, far above any single GPU.
MAX_MIB = 1024 * 1024


def too_large_number(data: Any, key: str = "") -> tuple[str, int] | None:
    """(dotted key, value) of an integer in `data` (nested lists, dicts, sweep objects)
    beyond any float; None when there is none.

    OmegaConf converts an integer to a float field with `float()`, which raises
    OverflowError for one of ~309 digits or more while Hydra composes, before any range
    check can run; no avatar knob goes anywhere near it, so such input is refused first.
    """
    if isinstance(data, int) and not isinstance(data, bool):
        return (key, data) if abs(data) > sys.float_info.max else None
    if isinstance(data, dict):
        items: Any = [(f"{key}.{k}" if key else str(k), v) for k, v in data.items()]
    elif isinstance(data, (list, tuple)):
        items = [(f"{key}[{i}]", v) for i, v in enumerate(data)]
    else:
        parts = [getattr(data, a) for a in ("list", "start", "stop", "step") if hasattr(data, a)]
        items = [(key, part) for part in parts]
    for item_key, item in items:
        found = too_large_number(item, item_key)
        if found is not None:
            return found
    return None


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
    vram_min_mib: int | None = ranged(0, MAX_MIB, 8192)
    # Total VRAM of the card this profile is written for; the plan in status is made
    # against it when no GPU is usable here. null: vram_min_mib. What a profile needs
    # at peak is not declared: the plan derives it from the stages' own figures.
    nominal_vram_mib: int | None = ranged(0, MAX_MIB, 10240, default=None)
    precision: Precision = MISSING
    quality: Quality = MISSING
    batch_size: int = ranged(1, 4096, 2)
    steps: int = ranged(1, 10_000, 30)
    safety_margin_mib: int = ranged(0, MAX_MIB, 512)
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

    fp32: int | None = ranged(0, MAX_MIB, 2048, default=None)
    fp16: int | None = ranged(0, MAX_MIB, 2048, default=None)
    bf16: int | None = ranged(0, MAX_MIB, 2048, default=None)


@dataclass
class VRAMGrowth:
    """How the need grows with one knob of the stage (batch size, tile edge).

    need = vram_mib[precision] * (fixed_share + (1 - fixed_share) * (value / at) ** power):
    weights and workspaces (the fixed share) stay, activations grow with the knob.
    """

    knob: str | None = None  # a key of the stage (batch_size, tile); null: the need is fixed
    at: int = ranged(
        1, 1_000_000, 8, default=1
    )  # the knob's value at which the vram_mib figures were reported
    power: int = ranged(
        0, 4, 1, default=1
    )  # 1: grows with the knob (batch size); 2: with its square (tile edge)
    fixed_share: float = ranged(
        0.0, 1.0, 0.5, default=1.0
    )  # the share of the need that does not grow


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
    """Speech: text, spoken with a stored voice (XTTS-v2) or the light CPU voice, to audio."""

    sample_rate_hz: int = ranged(1, 384_000, 24000)
    # The languages the model speaks, as coqui-tts names them (zh-cn); one source of truth.
    languages: list[str] = MISSING
    # The text's language; null: the stored voice's own (XTTS-v2) or the model's first.
    # A string checked against `languages` by validate(), so `zh_cn` is accepted for `zh-cn`.
    language: str | None = None
    speed: float = ranged(0.1, 4.0, 1.0)
    pause_s: float = ranged(0.0, 10.0, 0.25)  # silence between the pieces long text is split into


@dataclass
class ClipRulesConfig:
    """What a reference clip must be, checked by `python -m avatar.voice add`."""

    # shorter clips are refused (coqui's own minimum is 0.33 s)
    min_s: float = ranged(0.33, 60.0, 1.0)
    # longer clips get a warning: XTTS-v2 uses only this much
    max_used_s: float = ranged(1.0, 3600.0, 30.0)
    silence_dbfs: float = ranged(-200.0, 0.0, -50.0)  # an RMS level below this is silent: refused
    clipped_warn_fraction: float = ranged(0.0, 1.0, 0.01)  # more samples at full scale: a warning


@dataclass
class ConditioningConfig:
    """How XTTS-v2 reads a voice's clips (coqui-tts's get_conditioning_latents knobs)."""

    max_ref_length_s: int = ranged(1, 3600, 30)  # of each clip, at most this many seconds are used
    # seconds of the joined clips the GPT latent is made from
    gpt_cond_len_s: int = ranged(1, 3600, 30)
    gpt_cond_chunk_len_s: int = ranged(1, 3600, 4)  # the chunks those seconds are averaged over


@dataclass
class SpeakerCheckConfig:
    """The speaker check (resemblyzer): odd clips on `voice add`, similarity after speak."""

    # measured: benchmarks/results/speaker-calibration.md
    threshold: float = ranged(-1.0, 1.0, 0.84)
    device: str = "cpu"  # cpu or gpu (checked by speaker_check_settings)
    vram_mib: float = ranged(0, MAX_MIB, 512.0)  # an estimate until measured on a GPU


@dataclass
class XTTSConfig(VoiceConfig):
    # A folder with config.json, model.pth and vocab.json; null: coqui-tts's downloaded copy.
    checkpoint_dir: str | None = None
    # sha256 identity of the released checkpoint; null or another: "not the released one"
    released_checkpoint_sha256: str | None = None
    temperature: float = ranged(0.01, 10.0, 0.75)
    repetition_penalty: float = ranged(1.0, 100.0, 10.0)
    top_k: int = ranged(1, 1000, 50)
    top_p: float = ranged(0.01, 1.0, 0.85)
    # Longest piece per language, in characters (coqui-tts's own limits): the model
    # refuses more than 400 tokens per call.
    max_chars: dict[str, int] = field(default_factory=dict)
    clips: ClipRulesConfig = field(default_factory=ClipRulesConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    speaker_check: SpeakerCheckConfig = field(default_factory=SpeakerCheckConfig)


@dataclass
class LightVoiceConfig(VoiceConfig):
    voice_id: str | None = None  # a hibari voice; null: the one installed with the package
    threads: int = ranged(1, 256, 1)  # onnxruntime threads


@dataclass
class LipsyncConfig(StageConfig):
    """Lip sync: a face (image or video) and the speech to a talking-face video."""

    batch_size: int = ranged(1, 4096, 4)
    resolution_px: int = ranged(1, 4096, 256)  # the face crop edge the model works at
    fps: int = ranged(1, 240, 25)


@dataclass
class Wav2LipConfig(LipsyncConfig):
    checkpoint: str = MISSING  # wav2lip or wav2lip_gan
    resize_factor: int = ranged(1, 64, 1)  # divides the input video's resolution
    face_det_batch_size: int = ranged(1, 4096, 4)


@dataclass
class MuseTalkConfig(LipsyncConfig):
    version: str = MISSING  # v15 (MuseTalk 1.5) or v1
    bbox_shift: int = ranged(-256, 256, 0)  # moves the mouth region; + opens the mouth more


@dataclass
class SadTalkerConfig(LipsyncConfig):
    preprocess: str = MISSING  # crop, resize or full
    still_mode: bool = MISSING  # less head motion
    expression_scale: float = ranged(0.0, 10.0, 1.0)


@dataclass
class HalloConfig(LipsyncConfig):
    steps: int = ranged(1, 10_000, 40)  # diffusion steps
    guidance_scale: float = ranged(0.0, 100.0, 3.5)
    frames_per_chunk: int = ranged(1, 10_000, 16)  # VRAM grows with it (and with the clip's length)


@dataclass
class EnhanceConfig(StageConfig):
    """Face enhancement and upscaling of the lip-synced frames."""

    upscale: int = ranged(1, 8, 2)
    tile: int = ranged(0, 16384, 400)  # tile edge in px (0: the whole frame at once)


@dataclass
class PerQuality:
    """One value per profile quality; `${avatar.by_quality:${quality},${.x}}` picks one."""

    reduced: int = ranged(0, 16384, 256)
    medium: int = ranged(0, 16384, 400)
    high: int = ranged(0, 16384, 512)


@dataclass
class GFPGANConfig(EnhanceConfig):
    version: str = MISSING  # 1.4, 1.3 or RestoreFormer
    weight: float = ranged(0.0, 1.0, 0.5)  # 0..1: how much of the restored face is blended in
    bg_upsampler: str | None = MISSING  # null: faces only, or realesrgan for the background


@dataclass
class RealESRGANConfig(EnhanceConfig):
    model_file: str = MISSING  # e.g. RealESRGAN_x4plus
    tile_by_quality: PerQuality = field(default_factory=PerQuality)
    tile_pad: int = ranged(0, 1024, 10)


@dataclass
class PipelineConfig:
    stages: list[Stage] = MISSING  # run in this order, one model in VRAM at a time


# Per-option schemas, stored in Hydra's ConfigStore under these root names (not as a
# group, so `--help` lists only real options). An option YAML starts with
# `defaults: [/<name>@_here_, _self_]`, so a typo'd knob or a wrong type fails while
# composing, with Hydra's own message.
STAGE_SCHEMAS: dict[str, type[StageConfig]] = {
    "xtts_v2_schema": XTTSConfig,
    "light_schema": LightVoiceConfig,
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
    steps: int = ranged(1, 10_000, 30)
    batch_size: int = ranged(1, 4096, 2)
    precision: Precision = MISSING
    quality: Quality = MISSING
    safety_margin_mib: int = ranged(0, MAX_MIB, 512)
    gpu_index: int | None = ranged(0, 1023, 0, default=None)
    verbose: bool = False
    voices_dir: str | None = None  # the voice store; null: $AVATAR_VOICES_DIR or the data dir
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    lipsync: LipsyncConfig = field(default_factory=LipsyncConfig)
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


SCHEMA_NAME = "avatar_schema"


def validate(cfg: DictConfig) -> None:
    """Check what OmegaConf does not: missing values, interpolations, keys, and ranges.

    Raises ConfigValueError with one paragraph naming the key, the value and what
    is allowed. One walk over the config gathers what each check needs (every status
    run and `load_config()` pays for it; four separate walks cost three times as much),
    and the errors are raised in the order the checks had: missing values, then
    interpolations that fail (`steps=${oc.env:HOME}`, `${nosuch}`), unknown keys, ranges.
    """
    found = _Findings()
    try:
        _gather(cfg, "", found)
        if found.missing:
            raise ConfigValueError(
                f"These config keys have no value: {', '.join(sorted(found.missing))}. A "
                "profile file must set every profile key (see conf/profile/rtx3080.yaml), and "
                "??? values must be set on the command line (key=value) or in your config file."
            )
        if found.unresolved is not None:
            raise found.unresolved
        if found.unknown is not None:
            raise _unknown_key_error(*found.unknown)
        _check_ranged(found.ranged)
        _check_stages(cfg)
        _check_voice_language(cfg)
    except OmegaConfBaseException as exc:
        raise unresolved_error(exc) from exc


@dataclass
class _Findings:
    """What one walk over a composed config found (see `_gather`)."""

    missing: list[str] = field(default_factory=list)
    unresolved: OmegaConfBaseException | None = None  # the first, in key order
    unknown: tuple[str, str, list[str]] | None = None  # the first: (prefix, name, known keys)
    ranged: list[tuple[bool, str, Any, Any, Any, Any]] = field(default_factory=list)


def _gather(node: DictConfig, prefix: str, found: _Findings) -> None:
    """Walk `node` once, resolving every value: missing keys, the first interpolation that
    fails, the first key its schema does not know, and every ranged value."""
    schema = _schema_of(node)
    specs = _field_specs(schema) if schema is not None else None
    for key in node:
        name = str(key)
        full = f"{prefix}{name}"
        if specs is not None and name not in specs and found.unknown is None:
            found.unknown = (prefix, name, list(specs))
        child = node._get_node(name)
        if child is None:
            continue
        if child._is_missing():
            found.missing.append(full)
            continue
        try:
            value = node[name]  # resolves an interpolation
            if isinstance(value, ListConfig):
                found.missing.extend(OmegaConf.missing_keys(value))
                OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException as exc:
            if found.unresolved is None:
                found.unresolved = exc
            continue
        if isinstance(value, DictConfig):
            _gather(value, f"{full}.", found)
            continue
        spec = specs.get(name) if specs is not None else None
        if spec is not None and RANGE_MIN in spec.metadata and value is not None:
            meta = spec.metadata
            copied = bool(child._is_interpolation())
            found.ranged.append(
                (copied, full, value, meta[RANGE_MIN], meta[RANGE_MAX], meta[RANGE_EXAMPLE])
            )


@functools.cache
def _field_specs(schema: type) -> dict[str, Any]:
    """A schema's fields by name; the schemas never change in a process."""
    return {spec.name: spec for spec in fields(schema)}


def unresolved_error(exc: OmegaConfBaseException) -> ConfigValueError:
    """An OmegaConf error met while resolving the config, as one paragraph naming the key."""
    key = getattr(exc, "full_key", None) or None
    detail = " ".join(str(exc).split("\n")[0].split()).rstrip(".")
    where = f"'{key}'" if key else "the config"
    return ConfigValueError(
        f"Cannot resolve {where}: {detail}. An interpolation ${{...}} must name an existing "
        "key (steps=${profile.steps}) or a set environment variable (${oc.env:NAME}), and "
        "its value must fit the key's type; quote the override so the shell keeps the $ "
        "('steps=${profile.steps}').",
        key=key,
    )


def _schema_of(node: DictConfig) -> type | None:
    """The dataclass a composed node was typed with (e.g. XTTSConfig for voice=xtts_v2)."""
    schema = OmegaConf.get_type(node)
    return schema if isinstance(schema, type) and is_dataclass(schema) else None


def _unknown_key_error(prefix: str, name: str, known: list[str]) -> ConfigValueError:
    """`+Steps=30` (a typo): Hydra's `+key=value` adds a key even to a structured config,
    so it would otherwise be accepted and change nothing. The error suggests the closest key."""
    import difflib  # only for the error: keeps it off every valid run's imports

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    close = close or [k for k in known if k.lower() == name.lower()]
    hint = (
        f"Did you mean '{prefix}{close[0]}' ({prefix}{close[0]}=VALUE, without +)?"
        if close
        else f"The keys here are: {', '.join(known)}."
    )
    return ConfigValueError(
        f"Unknown config key '{prefix}{name}': avatar does not read it, so setting it would "
        f"change nothing. {hint}",
        key=f"{prefix}{name}",
    )


def check_ranges(node: DictConfig, prefix: str = "") -> None:
    """Every number must lie in its field's range (`ranged()` metadata in this module).

    Values a file or the command line sets are checked before the ones that copy them by
    interpolation, so a bad `profile.steps` is reported as itself, not as the `steps`
    that follows it (nor `enhance.tile_by_quality.medium` as `enhance.tile`).
    """
    found = _Findings()
    _gather(node, prefix, found)
    if found.unresolved is not None:
        raise found.unresolved
    _check_ranged(found.ranged)


def _check_ranged(found: list[tuple[bool, str, Any, Any, Any, Any]]) -> None:
    """Raise for the first value out of its range; set values before copied ones."""
    for _copied, key, value, low, high, example in sorted(found, key=lambda f: f[0]):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # OmegaConf has checked the type
        if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
            kind = (
                f"an integer of at least {low} and at most {high}"
                if isinstance(value, int)
                else f"a number from {low} to {high}"
            )
            raise ConfigValueError(
                f"Invalid value for '{key}': {shown_number(value)}. It must be {kind} "
                f"(for example {key}={example}).",
                key=key,
            )


def huge_number_message(key: str, value: int) -> str:
    """What is wrong with a number too large for any float, and the key's range if it has one."""
    rule = range_rules().get(key)
    allowed = (
        f"It must be at least {rule[0]} and at most {rule[1]}"
        if rule
        else f"Every avatar number has a range, and none reaches past {MAX_MIB}"
    )
    return f"Invalid value for '{key}': {shown_number(value)}. {allowed} (see README, Bad input)."


def shown_number(value: float) -> str:
    """A number as a message shows it: a 400-digit integer is cut, not printed whole."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text.lstrip('-'))} digits)"


def range_rules() -> dict[str, tuple[float, float]]:
    """Dotted key -> (lowest, highest) for every ranged key, as README's "Bad input" lists them.

    A stage option's own knobs are listed under their stage (`voice.top_k`, which exists
    with voice=xtts_v2); the keys every option of a stage has come from the base schema.
    """
    rules: dict[str, tuple[float, float]] = {}

    def walk(prefix: str, schema: type, skip: frozenset[str] = frozenset()) -> None:
        for spec in fields(schema):
            if spec.name in skip:
                continue
            if RANGE_MIN in spec.metadata:
                rules[f"{prefix}{spec.name}"] = (spec.metadata[RANGE_MIN], spec.metadata[RANGE_MAX])
            nested = spec.default_factory
            if isinstance(nested, type) and is_dataclass(nested):
                walk(f"{prefix}{spec.name}.", nested)

    walk("", AvatarConfig)
    for schema in STAGE_SCHEMAS.values():
        stage, base = stage_base(schema)
        walk(f"{stage.value}.", schema, frozenset(f.name for f in fields(base)))
    return rules


def stage_base(schema: type) -> tuple[Stage, type[StageConfig]]:
    """The stage an option's schema belongs to, and that stage's base schema."""
    for stage, base in _STAGE_BASES.items():
        if issubclass(schema, base):
            return stage, base
    raise ValueError(f"{schema.__name__} is not a stage schema")


_STAGE_BASES: dict[Stage, type[StageConfig]] = {
    Stage.voice: VoiceConfig,
    Stage.lipsync: LipsyncConfig,
    Stage.enhance: EnhanceConfig,
}


def normalize_language(language: str) -> str:
    """`zh_cn`, `ZH-CN` and `zh-cn` all mean coqui-tts's `zh-cn`."""
    return language.strip().lower().replace("_", "-")


def _check_voice_language(cfg: DictConfig) -> None:
    """voice.language must be one the chosen voice option speaks (its `languages`)."""
    voice = cfg.get("voice")
    if voice is None or voice.get("language") is None or "languages" not in voice:
        return
    spoken = list(voice.languages)
    if normalize_language(str(voice.language)) in spoken:
        return
    other = (
        " For other languages use voice=xtts_v2 (17 languages, cloning from a stored voice)."
        if voice.name != "xtts_v2"
        else " (zh_cn is accepted for zh-cn.)"
    )
    raise ConfigValueError(
        f"Invalid value for 'voice.language': {voice.language}. {voice.model} "
        f"(voice={voice.name}) speaks {', '.join(spoken)}.{other}",
        key="voice.language",
    )


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
