"""Profile choice: which hardware profile fits the detected GPU.

The profiles and their thresholds live only in `conf/profile/*.yaml` (and in a
user's `--config-dir DIR/profile/`): a new file there is selectable and
auto-pickable with no code change. `pick_profile` is the pure decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from avatar.errors import ConfigFileError, ProfileError
from avatar.hardware import GPUDetection, detect_gpu
from avatar.schema import Accelerator, ProfileConfig

PROFILE_GROUP = "profile"
AUTO = "auto"


@dataclass(frozen=True)
class ProfileSpec:
    """What the choice needs to know of one profile file."""

    name: str  # the option name (file stem), what `profile=<name>` selects
    description: str
    accelerator: str  # gpu | cpu
    vram_min_mib: int | None
    path: Path


@dataclass(frozen=True)
class ProfileChoice:
    name: str
    reason: str  # shown by status, e.g. "auto: 10240 MiB on GPU 0 (RTX 3080) >= 8192 -> rtx3080"


def builtin_conf_dir() -> Path:
    """avatar's own config dir: avatar/conf in an installed wheel, conf/ in a source tree."""
    here = Path(__file__).resolve().parent
    installed = here / "conf"
    return installed if (installed / "config.yaml").is_file() else here.parent / "conf"


def group_files(group: str, conf_dirs: Iterable[Path]) -> dict[str, Path]:
    """Option name -> file for one config group. The first dir wins, as in Hydra's search path."""
    found: dict[str, Path] = {}
    for conf_dir in conf_dirs:
        folder = Path(conf_dir) / group
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def profile_files(conf_dirs: Iterable[Path]) -> dict[str, Path]:
    """Profile option name -> file."""
    return group_files(PROFILE_GROUP, conf_dirs)


def read_profile(path: Path) -> ProfileSpec:
    """Read and type-check one profile file; errors name the file and the key."""
    try:
        loaded = OmegaConf.load(path)
    except (YAMLError, OSError) as exc:
        raise ConfigFileError(f"Profile file {path} could not be read as YAML: {exc}") from exc
    if not isinstance(loaded, DictConfig) or not loaded:
        raise ConfigFileError(
            f"Profile file {path} is empty or not a mapping; a profile sets name, accelerator, "
            "vram_min_mib, precision, quality, batch_size, steps and safety_margin_mib "
            "(see conf/profile/rtx3080.yaml)."
        )
    # A profile's own defaults list (stage options it overrides) is Hydra's business.
    loaded.pop("defaults", None)
    if "vram_min_mib" not in loaded or OmegaConf.is_missing(loaded, "vram_min_mib"):
        raise ConfigFileError(
            f"Profile file {path} does not set vram_min_mib: set the total VRAM (MiB) a GPU "
            "needs for this profile to be auto-picked, e.g. vram_min_mib: 8192, or null for "
            "a CPU profile."
        )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ProfileConfig), loaded)
        vram_min = merged.vram_min_mib
        declared_name = merged.name
        spec = ProfileSpec(
            name=path.stem,
            description=merged.description,
            accelerator=merged.accelerator.value,
            vram_min_mib=vram_min,
            path=path,
        )
    except OmegaConfBaseException as exc:
        detail = str(exc).splitlines()[0]
        key = getattr(exc, "full_key", None)  # OmegaConf puts it on a later line only
        raise ConfigFileError(
            f"Profile file {path} has a bad value"
            + (f" for {key}" if key else "")
            + f": {detail}. Allowed: accelerator gpu|cpu, "
            "vram_min_mib and nominal_vram_mib integers or null "
            "(see conf/profile/rtx3080.yaml)."
        ) from exc
    if declared_name != spec.name:
        # status reports the `name` field, so a copied file would report the wrong profile
        raise ConfigFileError(
            f"Profile file {path} sets name: {declared_name}, but the option it defines is "
            f"{spec.name!r} (its file name); set name: {spec.name}."
        )
    if spec.accelerator == Accelerator.gpu.value and spec.vram_min_mib is None:
        raise ConfigFileError(
            f"Profile file {path} is a gpu profile without vram_min_mib; set the total VRAM "
            "(MiB) a GPU needs for this profile to be auto-picked, e.g. vram_min_mib: 8192."
        )
    return spec


def load_profiles(conf_dirs: Iterable[Path]) -> list[ProfileSpec]:
    return [read_profile(path) for name, path in profile_files(conf_dirs).items() if name != AUTO]


def pick_profile(profiles: Sequence[ProfileSpec], detection: GPUDetection) -> ProfileChoice:
    """The largest GPU profile whose `vram_min_mib` the chosen GPU's total meets.

    With no usable GPU, or a GPU smaller than every threshold, the CPU profile.
    """
    gpu = detection.chosen
    if gpu is not None:
        fitting = [
            p
            for p in profiles
            if p.accelerator == Accelerator.gpu.value
            and p.vram_min_mib is not None
            and gpu.total_mib >= p.vram_min_mib
        ]
        if fitting:
            best = max(fitting, key=lambda p: (p.vram_min_mib or 0, p.name))
            return ProfileChoice(
                best.name,
                f"auto: {gpu.total_mib:.0f} MiB on GPU {gpu.index} ({gpu.name}) "
                f">= {best.vram_min_mib} -> {best.name}",
            )
    cpu_profiles = sorted(p.name for p in profiles if p.accelerator == Accelerator.cpu.value)
    if not cpu_profiles:
        raise ProfileError(
            "No CPU profile found (a profile file with accelerator: cpu), so there is nothing "
            "to fall back to without a fitting GPU. Restore conf/profile/cpu.yaml."
        )
    if gpu is None:
        why = f"no usable GPU ({detection.note})"
    else:
        smallest = min((p.vram_min_mib for p in profiles if p.vram_min_mib is not None), default=0)
        why = f"{gpu.total_mib:.0f} MiB on GPU {gpu.index} ({gpu.name}) < {smallest}"
    return ProfileChoice(cpu_profiles[0], f"auto: {why} -> {cpu_profiles[0]}")


def get_hardware_profile(
    detection: GPUDetection | None = None, conf_dirs: Sequence[Path] | None = None
) -> str:
    """The name of the profile that fits this machine (the note's API).

    Reads the thresholds from the profile files in `conf_dirs` (avatar's own by default).
    """
    dirs = list(conf_dirs) if conf_dirs is not None else [builtin_conf_dir()]
    return pick_profile(load_profiles(dirs), detection or detect_gpu()).name
