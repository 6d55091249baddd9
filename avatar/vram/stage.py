"""Sequential model loading: one stage's model in VRAM at a time.

`VRAMManager.stage(name, required_mb)` (implemented here as `open_stage`) wraps
one stage's load-use-drop:

- before: refuses with `InsufficientVRAMError` when `can_load` says the model
  does not fit, so nothing is allocated for a stage that would run out of memory;
- during: resets torch's peak counter, so the stage's peak VRAM is
  `torch.cuda.max_memory_allocated()` at its end;
- after: runs `force_cleanup()` and compares free VRAM with where it started:
  what stayed behind is logged as a warning the first time it happens, which is
  how creeping VRAM gets noticed.

Every stage leaves a `StageRecord` in `manager.records`. Nothing here creates a
CUDA context: torch is only used where the process already initialised CUDA.
Without that (a model on the CPU, or an ONNX runtime), the peak is not measured:
avatar does not poll NVML during a stage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from avatar.errors import AvatarUserError, ConfigValueError
from avatar.hardware.torch_probe import initialized_torch
from avatar.hardware.types import GPUBackend, GPUInfo
from avatar.units import bytes_to_mib
from avatar.vram.plan import stage_device, stage_need_mib, suggest_instead
from avatar.vram.status import DEFAULT_SAFETY_MARGIN_MIB, VRAMStatus, check_size_mib

if TYPE_CHECKING:  # only for annotations: the VRAM layer needs no omegaconf at run time
    from omegaconf import DictConfig

log = logging.getLogger("avatar.stage")

# VRAM that does not come back after a stage, beyond this, is reported as staying behind.
# (The GPU proof test holds each stage to it: free VRAM back within 64 MiB.)
RETURN_TOLERANCE_MIB = 64.0

DEFAULT_INSTEAD = (
    "Free the VRAM other programs hold (nvidia-smi lists them), or choose a lighter option "
    "for this stage or a profile for a smaller card; `python -m avatar` shows which stages fit."
)


class InsufficientVRAMError(AvatarUserError):
    """A stage's model would not fit in the free VRAM; it was refused before loading.

    A user error: the fix is to free VRAM or to choose a lighter option or profile,
    which the message names where it can.
    """

    def __init__(
        self,
        *,
        stage: str,
        required_mib: float,
        available_mib: float,
        safety_margin_mib: float,
        device: str,
        instead: str = "",
    ) -> None:
        self.stage = stage
        self.required_mib = required_mib
        self.available_mib = available_mib
        self.safety_margin_mib = safety_margin_mib
        self.device = device
        self.instead = instead or DEFAULT_INSTEAD
        short = required_mib + safety_margin_mib - available_mib
        super().__init__(
            f"Stage '{stage}' needs {required_mib:.0f} MiB of VRAM plus the "
            f"{safety_margin_mib:.0f} MiB safety margin, but {available_mib:.0f} MiB is free "
            f"on {device} ({short:.0f} MiB short), so it was not loaded. {self.instead}"
        )


class StageHost(Protocol):
    """What the stage guard needs of `VRAMManager` (which calls it with itself)."""

    gpu: GPUInfo | None
    records: list[StageRecord]

    @property
    def device(self) -> str: ...

    def get_status(self) -> VRAMStatus: ...

    def can_load(self, required_mb: float, safety_margin_mb: float = ...) -> bool: ...

    def force_cleanup(self) -> float: ...


@dataclass
class StageRecord:
    """What one stage needed, peaked at and gave back; filled in as the stage runs.

    VRAM figures are in MiB. `available_*` is what the next model could use (free
    plus torch's unused cache), None in CPU mode or when the query failed.
    """

    name: str
    device: str  # where the manager works: cuda:0, mps or cpu
    required_mib: float
    safety_margin_mib: float
    available_before_mib: float | None = None
    available_after_mib: float | None = None
    # torch.cuda.max_memory_allocated() at the stage's end, its counter reset at the start:
    # the most torch had allocated at once, including what the process held before.
    peak_mib: float | None = None
    peak_note: str = ""  # how the peak was measured, or why it was not
    cleanup_freed_mib: float = 0.0  # what force_cleanup() gave back at the end
    cuda_started_here: bool = False  # torch created its CUDA context during this stage
    error: str | None = None  # the exception that ended the stage, if one did

    @property
    def stayed_mib(self) -> float | None:
        """VRAM that did not come back: available before minus available after."""
        if self.available_before_mib is None or self.available_after_mib is None:
            return None
        return max(0.0, self.available_before_mib - self.available_after_mib)

    @property
    def returned(self) -> bool | None:
        """Whether VRAM came back (within RETURN_TOLERANCE_MIB); None when not measured."""
        stayed = self.stayed_mib
        return None if stayed is None else stayed <= RETURN_TOLERANCE_MIB


def _stage_plan(
    config: DictConfig, name: str, required_mib: float | None
) -> tuple[float, str | None]:
    """The need the config declares for stage `name`, and where the stage runs."""
    if name not in config or "vram_mib" not in config[name]:
        if required_mib is None:
            raise ValueError(
                f"'{name}' is not a stage of the config (voice, lipsync, enhance): "
                "pass required_mb for it"
            )
        return required_mib, None
    device = stage_device(config, name)
    if required_mib is not None:
        return required_mib, device
    need = stage_need_mib(config[name], on_gpu=device == "gpu")
    if need is None:
        stage = config[name]
        raise ConfigValueError(
            f"Stage '{name}' ({stage.model}) has no VRAM figure for precision "
            f"{getattr(stage.precision, 'value', stage.precision)}: {name}.vram_mib is null "
            "there, which means the model has no working path at that precision. Choose "
            f"another {name}.precision or {name} option."
        )
    check_size_mib(f"{name}.vram_mib", need)
    return float(need), device


def _initialized_torch_for(gpu: GPUInfo | None) -> Any:
    """torch where it already drives this GPU through CUDA (or ROCm); None elsewhere."""
    if gpu is None or gpu.backend is GPUBackend.mps:
        return None
    return initialized_torch()


def _peak(torch: Any, index: int) -> float:
    return bytes_to_mib(float(torch.cuda.max_memory_allocated(index)))


@contextmanager
def open_stage(
    manager: StageHost,
    name: str,
    required_mb: float | None = None,
    *,
    config: DictConfig | None = None,
    safety_margin_mb: float | None = None,
) -> Iterator[StageRecord]:
    """What `VRAMManager.stage()` does; see there."""
    stage_device: str | None = None
    if config is not None:
        required_mb, stage_device = _stage_plan(config, name, required_mb)
        if safety_margin_mb is None:
            safety_margin_mb = config.safety_margin_mib
    if required_mb is None:
        raise ValueError(f"stage '{name}': pass required_mb, or a config that declares it")
    margin = DEFAULT_SAFETY_MARGIN_MIB if safety_margin_mb is None else safety_margin_mb
    # Before anything else, in CPU mode too: a negative, NaN or huge size is a caller's
    # mistake wherever the stage runs (README: they raise ValueError).
    check_size_mib("required_mb", required_mb)
    check_size_mib("safety_margin_mb", margin)
    gpu = manager.gpu
    on_gpu = gpu is not None and stage_device != "cpu"
    record = StageRecord(
        name, manager.device if on_gpu else "cpu", float(required_mb), float(margin)
    )

    before = manager.get_status() if gpu is not None else None
    if before is not None and before.ok:
        record.available_before_mib = before.available_mib
    if on_gpu and before is not None:
        if not before.ok:
            log.warning(
                "Stage '%s': the VRAM query failed, so its fit is not checked; loading anyway",
                name,
            )
        elif not manager.can_load(required_mb, margin):
            now = manager.get_status()
            raise InsufficientVRAMError(
                stage=name,
                required_mib=float(required_mb),
                available_mib=now.available_mib if now.ok else before.available_mib,
                safety_margin_mib=float(margin),
                device=manager.device,
                instead=_lighter_choice(config, name, before.available_mib - margin),
            )

    torch_at_start = (
        initialized_torch() if gpu is not None and gpu.backend is not GPUBackend.mps else None
    )
    if torch_at_start is not None:
        try:
            torch_at_start.cuda.reset_peak_memory_stats(gpu.index)  # type: ignore[union-attr]
        except Exception as exc:  # an old or odd torch: the peak is then since CUDA started
            log.warning("Stage '%s': could not reset torch's peak counter (%s)", name, exc)
    try:
        yield record
    except BaseException as exc:
        record.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _finish(manager, record, torch_at_start)
        manager.records.append(record)


def _lighter_choice(config: DictConfig | None, name: str, room_mib: float) -> str:
    if config is None or name not in config or "vram_mib" not in config[name]:
        return ""
    try:
        return suggest_instead(config, [name], room_mib)
    except Exception as exc:  # a suggestion must never hide the refusal itself
        log.debug("no suggestion for stage %s: %s", name, exc)
        return ""


def _finish(manager: StageHost, record: StageRecord, torch_at_start: Any) -> None:
    """Peak, cleanup, and the check that VRAM came back."""
    gpu = manager.gpu
    torch = _initialized_torch_for(gpu)
    record.cuda_started_here = torch_at_start is None and torch is not None
    if torch is not None and gpu is not None:
        try:
            record.peak_mib = _peak(torch, gpu.index)
            record.peak_note = "torch.cuda.max_memory_allocated" + (
                ", counted from when CUDA started in this stage" if record.cuda_started_here else ""
            )
        except Exception as exc:
            record.peak_note = f"not measured: torch failed ({exc})"
    elif gpu is not None:
        record.peak_note = (
            "not measured: torch had not initialised CUDA in this process "
            "(avatar does not poll NVML during a stage)"
        )
    record.cleanup_freed_mib = manager.force_cleanup()
    if gpu is None:
        return
    after = manager.get_status()
    if after.ok:
        record.available_after_mib = after.available_mib
    stayed = record.stayed_mib
    if stayed is not None and stayed > RETURN_TOLERANCE_MIB:
        why = (
            " This includes the CUDA context and library workspaces torch created during "
            "this stage (500 MiB and more), which stay for the life of the process; "
            "initialise CUDA before the first stage to keep them out of the records."
            if record.cuda_started_here
            else " Something still references the model or its tensors: drop them "
            "(del model) inside the `with` block."
        )
        log.warning(
            "Stage '%s' did not give all its VRAM back: %.0f MiB stayed in use on %s "
            "(%.0f MiB available before, %.0f after cleanup).%s",
            record.name,
            stayed,
            record.device,
            record.available_before_mib,
            record.available_after_mib,
            why,
        )
    if record.peak_mib is not None and record.peak_mib > record.required_mib > 0:
        log.warning(
            "Stage '%s' peaked at %.0f MiB, above the %.0f MiB it declared: the plan "
            "underestimates it; raise the figure in its vram_mib.",
            record.name,
            record.peak_mib,
            record.required_mib,
        )
