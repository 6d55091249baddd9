"""Profile choice: which hardware profile fits the detected GPU.

The profiles and their thresholds live only in `conf/profile/*.yaml` (and in a
user's `--config-dir DIR/profile/`): a new file there is selectable and
auto-pickable with no code change. `pick_profile` is the pure decision.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from avatar.config.files import builtin_conf_dir, group_files
from avatar.config.overrides import AUTO, PROFILE_GROUP, group_options
from avatar.config.schema import Accelerator, ProfileConfig, check_ranges
from avatar.config.yaml_files import read_yaml_file
from avatar.errors import ConfigFileError, ConfigValueError, ProfileError
from avatar.hardware.detect import detect_gpu
from avatar.hardware.types import GPUDetection

PROFILE_ENV = "AVATAR_PROFILE"
log = logging.getLogger("avatar.config")


@dataclass(frozen=True)
class ProfileSpec:
    """What the choice needs to know of one profile file."""

    name: str  # the option name (file stem), what `profile=<name>` selects
    description: str
    accelerator: Accelerator
    vram_min_mib: int | None
    path: Path


@dataclass(frozen=True)
class ProfileChoice:
    name: str
    reason: str  # shown by status, e.g. "auto: 10240 MiB on GPU 0 (RTX 3080) >= 8192 -> rtx3080"


def profile_files(conf_dirs: Iterable[Path]) -> dict[str, Path]:
    """Profile option name -> file: the first dir's (the user's) wins, as in Hydra's search."""
    files = group_files(PROFILE_GROUP, conf_dirs)
    if AUTO in files:
        raise ProfileError(
            f"Profile file {files[AUTO]}: the name `{AUTO}` is reserved for the option that "
            "picks a profile from the detected VRAM. Rename the file (and its name: key)."
        )
    return files


def shadowed_profiles(conf_dirs: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(user's file, built-in file it shadows) for each profile name in both."""
    builtin = group_files(PROFILE_GROUP, [builtin_conf_dir()])
    chosen = group_files(PROFILE_GROUP, conf_dirs)
    return [
        (path, builtin[name]) for name, path in chosen.items() if builtin.get(name, path) != path
    ]


def announce_shadowed(conf_dirs: Sequence[Path]) -> None:
    """One line on stderr for each of the user's profiles that replaces a built-in one."""
    for mine, theirs in shadowed_profiles(conf_dirs):
        log.warning(
            "Profile %s replaces avatar's built-in profile %r (%s): yours is used.",
            mine,
            mine.stem,
            theirs,
        )


def read_profile(path: Path) -> ProfileSpec:
    """Read and type-check one profile file; errors name the file and the key."""
    data = read_yaml_file(path, what="Profile file")
    try:
        loaded = OmegaConf.create(data) if isinstance(data, dict) else None
    except OmegaConfBaseException as exc:
        raise ConfigFileError(
            f"Profile file {path} has a key OmegaConf cannot hold: {exc}"
        ) from exc
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
        merged = OmegaConf.merge(_profile_schema(), loaded)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigFileError(
                f"Profile file {path} does not set {', '.join(missing)}: a profile sets name, "
                "accelerator, vram_min_mib, precision, quality, batch_size, steps and "
                "safety_margin_mib (see conf/profile/rtx3080.yaml)."
            )
        check_ranges(merged, "profile.")
        vram_min = merged.vram_min_mib
        declared_name = merged.name
        spec = ProfileSpec(
            name=path.stem,
            description=merged.description,
            accelerator=merged.accelerator,
            vram_min_mib=vram_min,
            path=path,
        )
    except ConfigValueError as exc:
        raise ConfigFileError(f"Profile file {path}: {exc}") from exc
    except OverflowError as exc:
        raise ConfigFileError(
            f"Profile file {path} holds a number too large for any setting ({exc}); see the "
            "ranges in README, Bad input."
        ) from exc
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
    if spec.accelerator is Accelerator.gpu and spec.vram_min_mib is None:
        raise ConfigFileError(
            f"Profile file {path} is a gpu profile without vram_min_mib; set the total VRAM "
            "(MiB) a GPU needs for this profile to be auto-picked, e.g. vram_min_mib: 8192."
        )
    return spec


@functools.cache
def _profile_schema() -> DictConfig:
    """The typed ProfileConfig every profile file is merged into, built once per process
    (`OmegaConf.merge` copies it, so it is never changed)."""
    return OmegaConf.structured(ProfileConfig)


def load_profiles(conf_dirs: Iterable[Path]) -> list[ProfileSpec]:
    """Every profile, read and checked. Two GPU profiles with the same threshold are an
    error: the auto choice between them would be arbitrary."""
    profiles = [_read_profile_cached(path) for path in profile_files(conf_dirs).values()]
    by_threshold: dict[int, ProfileSpec] = {}
    for spec in profiles:
        if spec.accelerator is not Accelerator.gpu or spec.vram_min_mib is None:
            continue
        other = by_threshold.setdefault(spec.vram_min_mib, spec)
        if other is not spec:
            raise ProfileError(
                f"Profile files {other.path} and {spec.path} both set vram_min_mib: "
                f"{spec.vram_min_mib}, so auto could not tell which to pick. Give each GPU "
                "profile its own vram_min_mib."
            )
    return profiles


def _read_profile_cached(path: Path) -> ProfileSpec:
    """`read_profile`, remembered by the file's path, size and modification time.

    Every `load_config()` (each stage calls one) needs the thresholds; reading and typing
    the files again each time measured as a tenth of a composition. An edited file has a
    new modification time and is read again; an error is never remembered.
    """
    try:
        stat = path.stat()
    except OSError:
        return read_profile(path)  # reports the file as unreadable
    return _read_profile_at(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _read_profile_at(path: Path, mtime_ns: int, size_bytes: int) -> ProfileSpec:
    return read_profile(path)


def pick_profile(profiles: Sequence[ProfileSpec], detection: GPUDetection) -> ProfileChoice:
    """The largest GPU profile whose `vram_min_mib` the chosen GPU's total meets.

    With no usable GPU, or a GPU smaller than every threshold, the CPU profile.
    """
    gpu = detection.chosen
    if gpu is not None:
        fitting = [
            p
            for p in profiles
            if p.accelerator is Accelerator.gpu
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
    cpu_profiles = sorted(p.name for p in profiles if p.accelerator is Accelerator.cpu)
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


class AutoProfile:
    """Answers "which profile fits this machine" once per process (detection is cached)."""

    def __init__(
        self,
        conf_dirs: Sequence[Path],
        *,
        gpu_index: int | None = None,
        env: Mapping[str, str] | None = None,
        detector: Callable[[int | None], GPUDetection] = detect_gpu,
    ) -> None:
        self.conf_dirs = list(conf_dirs)
        self.gpu_index = gpu_index
        self._env = os.environ if env is None else env
        self._detector = detector

    @cached_property
    def detection(self) -> GPUDetection:
        return self._detector(self.gpu_index)

    @cached_property
    def profiles(self) -> list[ProfileSpec]:
        return load_profiles(self.conf_dirs)

    def forced(self) -> str | None:
        """The profile AVATAR_PROFILE names, None when unset or `auto`.

        Checked wherever the profile is then chosen (the command line, a user's file or
        auto), so a bad value is an error the same way every time, not only when auto
        would have used it.
        """
        forced = self._env.get(PROFILE_ENV, "").strip()
        if not forced or forced == AUTO:
            return None
        names = sorted(n for n in profile_files(self.conf_dirs) if n != AUTO)
        if forced not in names:
            raise ProfileError(
                f"{PROFILE_ENV}={forced!r} is not a profile. Allowed: {', '.join(names)} "
                f"(files in the profile/ folder of {_dir_list(self.conf_dirs)}), or 'auto'. "
                f"Unset {PROFILE_ENV} to pick the profile from the detected VRAM."
            )
        return forced

    @cached_property
    def choice(self) -> ProfileChoice:
        forced = self.forced()
        if forced is not None:
            return ProfileChoice(forced, f"set by {PROFILE_ENV}={forced}")
        return pick_profile(self.profiles, self.detection)

    def table(self) -> str:
        """The profiles and their thresholds, one line each, for `--help`."""
        rows = sorted(self.profiles, key=lambda p: (p.vram_min_mib is None, -(p.vram_min_mib or 0)))
        lines = []
        for p in rows:
            need = "no GPU" if p.vram_min_mib is None else f">= {p.vram_min_mib} MiB"
            lines.append(f"  {p.name:<10} {need:<14} {p.description}")
        return "\n".join(lines)


def _dir_list(dirs: Sequence[Path]) -> str:
    return " and ".join(str(d) for d in dirs)


def check_profile_overrides(overrides: Sequence[str], conf_dirs: Sequence[Path]) -> None:
    """`profile=X` (or a sweep: `profile=a,b`, `choice(a,b)`, `glob(rtx*)`) must name profile
    files that exist.

    Checked before composition so the message matches AVATAR_PROFILE's; a sweep
    function is expanded as Hydra will expand it (a glob against the profile names),
    and a glob that matches no profile is an error here too.
    """
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        if not sep or key != PROFILE_GROUP or "$" in value:
            continue
        names = sorted({*profile_files(conf_dirs), AUTO})
        options = group_options([override], PROFILE_GROUP, names) or []
        if not options and value.strip().startswith("glob("):
            raise ProfileError(
                f"profile={value} matches no profile. Allowed: {', '.join(names)} (files "
                f"in the profile/ folder of {_dir_list(conf_dirs)})."
            )
        for option in options:
            if option not in names:
                raise ProfileError(
                    f"profile={option!r} is not a profile. Allowed: {', '.join(names)} (files "
                    f"in the profile/ folder of {_dir_list(conf_dirs)}; auto picks one from the "
                    "detected VRAM)."
                )
