"""The pre-flight plan: will the pipeline's stages fit, one after another, on this device?

The stages load one model at a time and give the GPU back before the next, so
the pipeline fits when its largest stage does (not the sum). Each stage option
declares its VRAM per precision and how that grows with a knob (batch size,
tile edge); the plan turns those into one number per stage at the active
settings and compares it with what the device has, minus the safety margin.

`make_plan` is pure (composed config + VRAM facts in, rows and a verdict out).
The only outside reads, the other stage options and profiles used to suggest a
lighter choice, happen in `suggest_instead` and only when something does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from avatar.config.files import builtin_conf_dir, group_files
from avatar.config.profiles import load_profiles
from avatar.config.schema import Accelerator, plain_value, runs_on_gpu
from avatar.vram.status import VRAMStatus


@dataclass(frozen=True)
class VRAMBudget:
    """What the plan measures the stages against."""

    available_mib: float | None  # None: nothing to check against (CPU profile, failed query)
    device: str  # "cuda:0", or "nominal" for a profile's nominal card, or "cpu"
    measured: bool  # False: the profile's nominal card, not a GPU of this machine
    note: str  # said under the plan: where the number comes from


@dataclass(frozen=True)
class PlanRow:
    """One stage of the pipeline at the active settings."""

    stage: str  # the group: voice, lipsync, enhance
    option: str  # the chosen option: xtts_v2, wav2lip, ...
    model: str
    device: str  # gpu or cpu: where the stage runs
    precision: str
    need_mib: int | None  # VRAM at peak; 0 on the CPU; None when no figure exists
    fits: bool | None  # None when there is nothing to check against
    note: str = ""  # why it runs on the CPU, has no figure, or does not fit


@dataclass(frozen=True)
class Plan:
    rows: tuple[PlanRow, ...]
    budget: VRAMBudget
    safety_margin_mib: int
    fits: bool | None  # None: cannot be checked
    verdict: str  # one sentence for status, starting with OK / NOT ENOUGH / when unchecked

    @property
    def largest(self) -> PlanRow | None:
        """The stage with the largest need: the one that decides the verdict."""
        return _largest(self.rows)

    @property
    def peak_need_mib(self) -> int:
        """What the pipeline needs at peak: its largest stage (0 when all run on the CPU)."""
        largest = self.largest
        return 0 if largest is None else largest.need_mib or 0


def _largest(rows: Iterable[PlanRow]) -> PlanRow | None:
    gpu_rows = [r for r in rows if r.need_mib]
    return max(gpu_rows, key=lambda r: r.need_mib or 0) if gpu_rows else None


def stage_need_mib(stage: Any, *, on_gpu: bool = True) -> int | None:
    """The stage's peak VRAM in MiB at its precision and knob values.

    0 when it runs on the CPU; None when its option has no figure for its
    precision (no working path there). `stage` is a composed stage node, such as
    `cfg.lipsync`.
    """
    if not on_gpu:
        return 0
    base = stage.vram_mib[plain_value(stage.precision)]
    if base is None:
        return None
    growth = stage.vram_growth
    if growth.knob is None:
        return int(base)
    ratio = (stage[growth.knob] / growth.at) ** growth.power
    share = growth.fixed_share
    return math.ceil(base * (share + (1 - share) * ratio))


def stage_device(cfg: DictConfig, stage: str) -> str:
    """Where a stage runs under the active profile: "gpu" or "cpu"."""
    return "gpu" if runs_on_gpu(cfg[stage], cfg.profile.accelerator) else "cpu"


def budget_for(cfg: DictConfig, vram: VRAMStatus | None) -> VRAMBudget:
    """The VRAM the plan is made against; `vram` is None where no GPU is usable.

    Without a GPU, a GPU profile is planned against its nominal card
    (`nominal_vram_mib`, else `vram_min_mib`), and the note says so.
    """
    profile = cfg.profile
    if plain_value(profile.accelerator) == Accelerator.cpu.value:
        return VRAMBudget(None, "cpu", True, f"profile {profile.name} runs the stages on the CPU")
    if vram is None:
        nominal = profile.nominal_vram_mib
        source = "nominal_vram_mib"
        if nominal is None:
            nominal, source = profile.vram_min_mib, "vram_min_mib"
        if not nominal:
            return VRAMBudget(
                None,
                "nominal",
                False,
                f"no usable GPU here, and profile {profile.name} declares no nominal_vram_mib "
                "to plan against",
            )
        return VRAMBudget(
            float(nominal),
            "nominal",
            False,
            f"no usable GPU here: planned against profile {profile.name}'s nominal card, "
            f"{nominal} MiB ({source}), all of it free; not a measurement",
        )
    if not vram.ok:
        return VRAMBudget(None, vram.device, True, "the VRAM query failed, so nothing is checked")
    note = (
        f"{vram.available_mib:.0f} MiB available on {vram.device} "
        "(free, plus what torch holds unused)"
    )
    minimum = profile.vram_min_mib
    if minimum and vram.total_mib < minimum:
        note += (
            f"; this GPU has {vram.total_mib:.0f} MiB in total, less than profile "
            f"{profile.name} is meant for ({minimum} MiB)"
        )
    return VRAMBudget(vram.available_mib, vram.device, True, note)


def plan_rows(cfg: DictConfig, budget: VRAMBudget) -> list[PlanRow]:
    """One row per stage in `pipeline.stages`, in order."""
    margin = int(cfg.safety_margin_mib)
    room = None if budget.available_mib is None else budget.available_mib - margin
    rows = []
    for entry in cfg.pipeline.stages:
        name = plain_value(entry)
        stage = cfg[name]
        device = stage_device(cfg, name)
        precision = str(plain_value(stage.precision))
        need = stage_need_mib(stage, on_gpu=device == "gpu")
        runs_on = [plain_value(a) for a in stage.runs_on]
        fits: bool | None
        if device == "cpu" and "cpu" not in runs_on:
            need, fits, note = None, False, f"needs a GPU ({stage.model} does not run on the CPU)"
        elif device == "cpu":
            fits, note = True, "on the CPU: no VRAM"
        elif need is None:
            fits, note = False, f"no working {precision} path"
        elif room is None:
            fits, note = None, ""
        else:
            fits = need <= room
            note = "" if fits else f"{need - room:.0f} MiB short"
        rows.append(
            PlanRow(name, str(stage.name), str(stage.model), device, precision, need, fits, note)
        )
    return rows


def make_plan(cfg: DictConfig, budget: VRAMBudget, *, instead: str = "") -> Plan:
    """The plan for `cfg` against `budget`; `instead` (from suggest_instead) ends a NOT ENOUGH."""
    rows = tuple(plan_rows(cfg, budget))
    margin = int(cfg.safety_margin_mib)
    blocked = [r for r in rows if r.fits is False]
    largest = _largest(rows)
    where = "on the profile's nominal card" if not budget.measured else f"on {budget.device}"
    if blocked:
        fits: bool | None = False
        problems = "; ".join(f"{r.stage} ({r.model}): {r.note}" for r in blocked)
        short = all(r.need_mib is not None and r.device == "gpu" for r in blocked)
        verdict = f"{'NOT ENOUGH' if short else 'CANNOT RUN'}: {problems}" + (
            f". {instead}" if instead else "."
        )
    elif not rows:
        fits = True
        verdict = "OK: pipeline.stages is empty, so nothing is loaded."
    elif largest is None:
        fits = True
        verdict = "OK: every stage runs on the CPU, no VRAM needed."
    elif budget.available_mib is None:
        fits = None
        verdict = (
            f"not checked ({budget.note}); the largest stage, {largest.stage} "
            f"({largest.model}), needs {largest.need_mib} MiB + {margin} MiB margin."
        )
    else:
        fits = True
        verdict = (
            f"OK: one stage at a time, the largest, {largest.stage} ({largest.model}, "
            f"{largest.need_mib} MiB), + {margin} MiB margin fits in "
            f"{budget.available_mib:.0f} MiB {where}."
        )
    return Plan(rows, budget, margin, fits, verdict)


# ------------------------------------------------------------------- suggestions


def lighter_options(
    cfg: DictConfig, stage: str, room_mib: float, options: Mapping[str, Any]
) -> list[tuple[str, int]]:
    """Other options of `stage` that fit in `room_mib` at the active settings: (name, need).

    `options` maps option names to their raw YAML content. Each is placed in a copy
    of the config, so `${precision}` and `${batch_size}` resolve as they would.
    Options that cannot be evaluated this way are left out.
    """
    base = OmegaConf.to_container(cfg, resolve=False)
    fitting = []
    for name, content in sorted(options.items()):
        if name == cfg[stage].name:
            continue
        candidate_root: Any = OmegaConf.create(base)
        option = OmegaConf.create(content)
        option.pop("defaults", None)
        candidate_root[stage] = option
        try:
            node = candidate_root[stage]
            on_gpu = runs_on_gpu(node, cfg.profile.accelerator)
            if not on_gpu and "cpu" not in [plain_value(a) for a in node.runs_on]:
                continue
            need = stage_need_mib(node, on_gpu=on_gpu)
        except (OmegaConfBaseException, KeyError, TypeError, AttributeError):
            continue
        if need is not None and need <= room_mib:
            fitting.append((name, need))
    return sorted(fitting, key=lambda item: -item[1])  # the largest that fits first


def smaller_profiles(cfg: DictConfig, profiles: Sequence[Any]) -> list[str]:
    """GPU profiles meant for smaller cards than the active one, largest first."""
    current = cfg.profile.vram_min_mib
    if current is None:
        return []
    smaller = [
        p
        for p in profiles
        if p.accelerator is Accelerator.gpu
        and p.vram_min_mib is not None
        and p.vram_min_mib < current
    ]
    return [p.name for p in sorted(smaller, key=lambda p: -(p.vram_min_mib or 0))]


def suggest_instead(
    cfg: DictConfig, stages: Sequence[str], room_mib: float, conf_dirs: Sequence[Path] | None = None
) -> str:
    """What would fit in place of the `stages` that do not: their other options, then
    profiles for smaller cards. One sentence, or "" when there is nothing to suggest.

    Reads the option and profile files of `conf_dirs` (avatar's own by default).
    """
    dirs = list(conf_dirs) if conf_dirs is not None else [builtin_conf_dir()]
    choices = []
    for stage in stages:
        contents: dict[str, Any] = {}
        for name, path in group_files(stage, dirs).items():
            try:
                contents[name] = OmegaConf.to_container(OmegaConf.load(path))
            except Exception:  # an unreadable option is Hydra's to report, not the plan's
                continue
        choices += [
            f"{stage}={name} ({need} MiB)" if need else f"{stage}={name} (on the CPU)"
            for name, need in lighter_options(cfg, stage, room_mib, contents)[:2]
        ]
    try:
        profiles = smaller_profiles(cfg, load_profiles(dirs))
    except Exception:  # a broken profile file is reported where profiles are chosen
        profiles = []
    parts = [f"Instead, try {' or '.join(choices)}"] if choices else []
    if profiles:
        names = ", ".join(f"profile={p}" for p in profiles)
        parts.append(f"{'or a' if parts else 'Try a'} profile for a smaller card: {names}")
    return (" ".join(parts) + ".") if parts else ""


def plan_and_suggest(
    cfg: DictConfig, vram: VRAMStatus | None, conf_dirs: Sequence[Path] | None = None
) -> Plan:
    """The plan status shows: the budget from `vram`, and a suggestion when a stage does not fit."""
    budget = budget_for(cfg, vram)
    plan = make_plan(cfg, budget)
    if plan.fits is not False:
        return plan
    room = (
        math.inf if budget.available_mib is None else budget.available_mib - plan.safety_margin_mib
    )
    blocked = [row.stage for row in plan.rows if row.fits is False]
    return make_plan(cfg, budget, instead=suggest_instead(cfg, blocked, room, conf_dirs))
