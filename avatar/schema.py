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
    vram_need_mib: int = MISSING  # peak VRAM of this profile's settings
    precision: Precision = MISSING
    quality: Quality = MISSING
    batch_size: int = MISSING
    steps: int = MISSING
    safety_margin_mib: int = MISSING
    # Set by the `auto` option: why this profile was chosen.
    selected_by: str = ""


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


SCHEMA_NAME = "avatar_schema"

# (key, smallest allowed value, example of a good override)
_MINIMUMS: tuple[tuple[str, int, str], ...] = (
    ("steps", 1, "steps=30"),
    ("batch_size", 1, "batch_size=2"),
    ("safety_margin_mib", 0, "safety_margin_mib=512"),
    ("gpu_index", 0, "gpu_index=0"),
    ("profile.steps", 1, "profile.steps=30"),
    ("profile.batch_size", 1, "profile.batch_size=1"),
    ("profile.safety_margin_mib", 0, "profile.safety_margin_mib=512"),
    ("profile.vram_min_mib", 0, "profile.vram_min_mib=8192"),
    ("profile.vram_need_mib", 0, "profile.vram_need_mib=4096"),
)


def validate(cfg: DictConfig) -> None:
    """Check what OmegaConf does not: missing values, interpolations, and ranges.

    Raises ConfigValueError with one paragraph naming the key, the value and what
    is allowed.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigValueError(
            f"These config keys have no value: {', '.join(missing)}. A profile file must set "
            "every profile key (see conf/profile/rtx3080.yaml), and ??? values must be set "
            "on the command line (key=value) or in your config file."
        )
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigValueError(f"The config does not resolve: {exc}".strip()) from exc
    for key, minimum, example in _MINIMUMS:
        value: Any = OmegaConf.select(cfg, key, default=None)
        if value is not None and (isinstance(value, bool) or value < minimum):
            raise ConfigValueError(
                f"Invalid value for '{key}': {value}. It must be an integer of at least "
                f"{minimum} (for example {example})."
            )
