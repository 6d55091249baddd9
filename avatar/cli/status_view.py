"""The status view: what `python -m avatar` prints.

`build_status` gathers facts into a `StatusReport` (data, no printing);
`render_status` turns it into text. The CLI does the printing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import omegaconf
from omegaconf import DictConfig

from avatar.cli.tables import fits_word, render_table
from avatar.config.overrides import AUTO, PROFILE_GROUP, override_values
from avatar.config.schema import plain_value
from avatar.hardware.types import GPUDetection, GPUInfo
from avatar.version import __version__
from avatar.vram.manager import VRAMManager
from avatar.vram.plan import Plan, plan_and_suggest
from avatar.vram.stage import StageRecord
from avatar.vram.status import VRAMStatus

BAR_WIDTH = 24


@dataclass(frozen=True)
class VRAMCheck:
    """Whether free VRAM covers the pipeline's largest stage plus the safety margin."""

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
    plan: Plan | None = None  # the stages at the active settings, and whether they fit


def profile_reason(
    cfg: DictConfig, choice: str, task_overrides: list[str], config_name: str
) -> str:
    """Why the active profile is active, from the Hydra runtime info."""
    if choice == AUTO:
        return str(cfg.profile.selected_by)
    if override_values(task_overrides, PROFILE_GROUP) is not None:
        return "set on the command line"
    return f"set in config {config_name!r}"


def vram_verdict(plan: Plan) -> VRAMCheck:
    """The plan's verdict in one line: the profile's need is its largest stage's."""
    if plan.budget.device == "cpu" and plan.fits is not False:
        return VRAMCheck(None, f"{plan.budget.note}: no VRAM needed")
    return VRAMCheck(plan.fits, plan.verdict)


def build_status(
    cfg: DictConfig,
    *,
    detection: GPUDetection,
    reason: str,
    conf_dirs: Sequence[Path] | None = None,
) -> StatusReport:
    """Gather the status. `conf_dirs` are searched for lighter stage options and
    profiles to suggest when a stage does not fit (avatar's own by default)."""
    manager = VRAMManager(detection=detection)
    try:
        vram = manager.get_status()
    finally:
        manager.close()
    plan = plan_and_suggest(cfg, None if manager.cpu_mode else vram, conf_dirs)
    check = vram_verdict(plan)
    settings = {
        "precision": plain_value(cfg.precision),
        "quality": plain_value(cfg.quality),
        "batch_size": cfg.batch_size,
        "steps": cfg.steps,
        "safety_margin_mib": cfg.safety_margin_mib,
        "device": detection.device,
    }
    return StatusReport(
        version=__version__,
        detection=detection,
        profile_name=str(cfg.profile.name),
        profile_description=str(cfg.profile.description),
        profile_reason=reason,
        settings=settings,
        vram=vram,
        check=check,
        plan=plan,
    )


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
    if report.plan is not None:
        lines += ["", "Plan (stages load one at a time, so the largest must fit)"]
        lines += render_plan(report.plan)
    lines += ["", "VRAM check", f"  {report.check.message}"]
    return "\n".join(lines)


def render_plan(plan: Plan) -> list[str]:
    """The plan's table and what it was made against, indented for status."""
    rows = []
    for r in plan.rows:
        need = "-" if r.need_mib is None else f"{r.need_mib} MiB"
        rows.append(
            [r.stage, r.option, r.model, r.device, r.precision, need, fits_word(r.fits), r.note]
        )
    header = ["stage", "option", "model", "runs on", "precision", "VRAM need", "fits", ""]
    lines = render_table(header, rows, indent="  ", right={5})
    lines.append(f"  against: {plan.budget.note}")
    lines.append(f"  safety margin: {plan.safety_margin_mib} MiB kept free")
    return lines


def render_records(records: Sequence[StageRecord]) -> list[str]:
    """What each stage a script ran took and gave back (VRAMManager.records)."""

    def mib(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} MiB"

    rows = [
        [
            r.name,
            r.device,
            mib(r.required_mib),
            mib(r.peak_mib),
            mib(r.stayed_mib),
            fits_word(r.returned),
            r.error or "",
        ]
        for r in records
    ]
    header = ["stage", "device", "required", "peak", "stayed", "returned", ""]
    return render_table(header, rows, indent="  ", right={2, 3, 4})
