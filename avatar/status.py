"""The status view: what `python -m avatar` prints.

`build_status` gathers facts into a `StatusReport` (data, no printing);
`render_status` turns it into text. The CLI does the printing.
"""

from __future__ import annotations

from dataclasses import dataclass

import hydra
import omegaconf
from omegaconf import DictConfig

from avatar.hardware import GPUDetection, GPUInfo
from avatar.vram import VRAMManager, VRAMStatus

BAR_WIDTH = 24


@dataclass(frozen=True)
class VRAMCheck:
    """Whether free VRAM covers the profile's need plus its safety margin."""

    fits: bool | None  # None when there is nothing to check (CPU profile, or no GPU)
    message: str


@dataclass(frozen=True)
class StatusReport:
    version: str
    detection: GPUDetection
    profile_name: str
    profile_description: str
    profile_reason: str
    settings: dict[str, object]
    vram: VRAMStatus
    check: VRAMCheck


def profile_reason(
    cfg: DictConfig, choice: str, task_overrides: list[str], config_name: str
) -> str:
    """Why the active profile is active, from the Hydra runtime info."""
    if choice == "auto":
        return str(cfg.profile.selected_by)
    if any(o.lstrip("+").startswith("profile=") for o in task_overrides):
        return "set on the command line"
    return f"set in config {config_name!r}"


def check_vram(cfg: DictConfig, manager: VRAMManager, vram: VRAMStatus) -> VRAMCheck:
    need = int(cfg.profile.vram_need_mib)
    margin = int(cfg.safety_margin_mib)
    name = cfg.profile.name
    if _plain(cfg.profile.accelerator) == "cpu":
        return VRAMCheck(None, f"profile {name} runs on the CPU: no VRAM needed")
    if manager.cpu_mode:
        return VRAMCheck(
            None,
            f"profile {name} needs a GPU with {need} MiB + {margin} MiB margin, but none is usable "
            "here; the numbers below are the profile's nominal ones",
        )
    if not vram.ok:
        return VRAMCheck(None, "the VRAM query failed, so the fit cannot be checked")
    fits = manager.can_load(need, margin)
    verdict = "OK" if fits else "NOT ENOUGH"
    return VRAMCheck(
        fits,
        f"{verdict}: {vram.available_mib:.0f} MiB available on {vram.device}, profile {name} "
        f"needs {need} MiB + {margin} MiB margin"
        + ("" if fits else " (free VRAM, or try a smaller profile such as profile=low_vram)"),
    )


def build_status(
    cfg: DictConfig,
    *,
    detection: GPUDetection,
    reason: str,
    version: str,
) -> StatusReport:
    manager = VRAMManager(detection=detection)
    try:
        vram = manager.get_status()
        check = check_vram(cfg, manager, vram)
    finally:
        manager.close()
    settings = {
        "precision": _plain(cfg.precision),
        "quality": _plain(cfg.quality),
        "batch_size": cfg.batch_size,
        "steps": cfg.steps,
        "safety_margin_mib": cfg.safety_margin_mib,
        "device": detection.device,
    }
    return StatusReport(
        version=version,
        detection=detection,
        profile_name=str(cfg.profile.name),
        profile_description=str(cfg.profile.description),
        profile_reason=reason,
        settings=settings,
        vram=vram,
        check=check,
    )


def _plain(value: object) -> object:
    return getattr(value, "value", value)


def _bar(used_mib: float, total_mib: float) -> str:
    filled = 0 if total_mib <= 0 else round(BAR_WIDTH * min(1.0, used_mib / total_mib))
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"


def _gpu_line(gpu: GPUInfo, chosen: GPUInfo | None) -> str:
    mark = "  <- in use" if chosen is not None and gpu.index == chosen.index else ""
    return (
        f"  GPU {gpu.index}  {gpu.name}  {_bar(gpu.used_mib, gpu.total_mib)} "
        f"{gpu.used_mib:.0f} / {gpu.total_mib:.0f} MiB used, {gpu.free_mib:.0f} MiB free{mark}"
    )


def render_status(report: StatusReport) -> str:
    d = report.detection
    lines = [
        f"avatar {report.version} "
        f"(hydra-core {hydra.__version__}, omegaconf {omegaconf.__version__})",
        "",
        "Hardware",
    ]
    if d.cpu_mode:
        lines.append(f"  CPU mode: {d.note}")
    else:
        lines.extend(_gpu_line(g, d.chosen) for g in d.gpus)
        lines.append(f"  ({d.note})")
    ram = d.ram
    if ram.total_mib:
        avail = (
            "" if ram.available_mib is None else f", {ram.available_mib / 1024:.1f} GiB available"
        )
        lines.append(f"  System RAM: {ram.total_mib / 1024:.1f} GiB{avail}")
    lines += [
        "",
        "Profile",
        f"  {report.profile_name}: {report.profile_description}",
        f"  why: {report.profile_reason}",
        "",
        "Settings",
    ]
    lines.extend(f"  {key:<18} {value}" for key, value in report.settings.items())
    lines += ["", "VRAM check", f"  {report.check.message}"]
    return "\n".join(lines)
