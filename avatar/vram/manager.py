"""VRAM accounting for sequential model loading.

One stage loads its model, uses it, drops it, and hands the GPU to the next.
`VRAMManager` answers "is there room for this model?" and "give back what the
last one left behind", reading NVML (no CUDA context) plus, in a process where
torch already initialised CUDA, the memory torch's caching allocator holds but
does not use: that memory is reclaimable, and ignoring it causes false OOMs
(transformers PRs #37920, #44565; ComfyUI's get_free_memory).

It never creates a CUDA context, never crashes on a driver error (a failed
query gives zeros and a warning; a failed cleanup is logged and work goes on),
and in CPU mode answers `can_load` with True.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from avatar.hardware.detect import choose_gpu, detect_gpu
from avatar.hardware.nvml import Nvml, NvmlError
from avatar.hardware.torch_probe import initialized_torch, torch_memory
from avatar.hardware.types import GPUBackend, GPUDetection, GPUInfo, memory_nonsense
from avatar.units import bytes_to_mib
from avatar.vram.stage import StageRecord, open_stage
from avatar.vram.status import DEFAULT_SAFETY_MARGIN_MIB, VRAMStatus, check_size_mib

if TYPE_CHECKING:  # only for annotations: the VRAM layer needs no omegaconf at run time
    from omegaconf import DictConfig

log = logging.getLogger("avatar.vram")


class VRAMManager:
    """VRAM status and cleanup for the GPU this process works on.

    `VRAMManager()` detects the hardware and takes the chosen GPU; pass a
    `detection` (from `detect_gpu()`) to reuse one, or `gpu_index` to pick a GPU.
    """

    def __init__(
        self,
        gpu_index: int | None = None,
        *,
        detection: GPUDetection | None = None,
        nvml_factory: Callable[[], Nvml] = Nvml,
    ) -> None:
        if detection is None:
            detection = detect_gpu(gpu_index)
        self.gpu: GPUInfo | None = detection.chosen
        if gpu_index is not None and detection.chosen is not None:
            self.gpu = choose_gpu(detection.gpus, gpu_index)
        self._nvml_factory = nvml_factory
        self._nvml: Nvml | None = None
        self._handle: Any = None
        self.records: list[StageRecord] = []  # one per stage run through stage(), in order

    @property
    def cpu_mode(self) -> bool:
        return self.gpu is None

    @property
    def device(self) -> str:
        return "cpu" if self.gpu is None else self.gpu.device

    def _nvml_handle(self) -> tuple[Nvml, Any] | None:
        """An NVML session and handle kept open, so each status costs one NVML call."""
        gpu = self.gpu
        if gpu is None or gpu.backend is not GPUBackend.nvml:
            return None
        if self._nvml is None:
            nvml = self._nvml_factory()
            try:
                handle = (
                    nvml.handle_by_uuid(gpu.uuid)
                    if gpu.nvml_index is None or gpu.nvml_index < 0
                    else nvml.handle(gpu.nvml_index)
                )
            except NvmlError:
                nvml.close()
                raise
            self._nvml, self._handle = nvml, handle
        return self._nvml, self._handle

    def get_status(self) -> VRAMStatus:
        """Total, used and free MiB of this device now (zeros and a warning if the query fails)."""
        gpu = self.gpu
        if gpu is None:
            return VRAMStatus("cpu", 0.0, 0.0, 0.0)
        torch = initialized_torch()
        try:
            session = self._nvml_handle()
            if session is not None:
                nvml, handle = session
                mem = nvml.memory(handle)
                total, used, free = mem.total_mib, mem.used_mib, mem.free_mib
            elif torch is not None and gpu.backend in (GPUBackend.cuda, GPUBackend.rocm):
                free_b, total_b = torch.cuda.mem_get_info(gpu.index)
                total, free = bytes_to_mib(total_b), bytes_to_mib(free_b)
                used = total - free
            else:  # reading without NVML would mean creating a context: report the snapshot
                total, used, free = gpu.total_mib, gpu.used_mib, gpu.free_mib
            reserved = allocated = 0.0
            if torch is not None and gpu.backend is not GPUBackend.mps:
                held = torch_memory(torch, gpu.index)
                reserved, allocated = held.reserved_mib, held.allocated_mib
        except Exception as exc:  # NVML or torch: never let a status query crash a stage
            log.warning("VRAM status query for %s failed (%s); reporting zeros", gpu.device, exc)
            return VRAMStatus(gpu.device, 0.0, 0.0, 0.0, ok=False)
        wrong = memory_nonsense(total, used, free) or _torch_nonsense(reserved, allocated)
        if wrong is not None:  # deciding on NaN or used > total would be silently wrong
            log.warning("VRAM status of %s makes no sense (%s); reporting zeros", gpu.device, wrong)
            return VRAMStatus(gpu.device, 0.0, 0.0, 0.0, ok=False)
        return VRAMStatus(gpu.device, total, used, free, reserved, allocated)

    def can_load(
        self, required_mb: float, safety_margin_mb: float = DEFAULT_SAFETY_MARGIN_MIB
    ) -> bool:
        """Whether a model needing `required_mb` MiB fits, keeping `safety_margin_mb` MiB spare.

        CPU mode has no VRAM constraint, so the answer is True.
        """
        check_size_mib("required_mb", required_mb)
        check_size_mib("safety_margin_mb", safety_margin_mb)
        if self.gpu is None:
            return True
        return self.get_status().available_mib >= required_mb + safety_margin_mb

    def force_cleanup(self) -> float:
        """Collect garbage, then empty torch's CUDA cache if torch already initialised CUDA.

        Returns the MiB given back to the device (0 in CPU mode or on failure). Never
        creates a CUDA context: without one there is no cache to empty.
        """
        before = self.get_status() if self.gpu is not None else None
        try:
            gc.collect()
            torch = initialized_torch()
            if torch is not None:
                torch.cuda.empty_cache()
        except Exception as exc:
            log.error("VRAM cleanup failed (%s); carrying on", exc)
            return 0.0
        if before is None or not before.ok:
            return 0.0
        after = self.get_status()
        return max(0.0, after.free_mib - before.free_mib) if after.ok else 0.0

    def log_status(self, level: int = logging.INFO) -> VRAMStatus:
        """Log one line with this device's memory, and return the status it logged."""
        status = self.get_status()
        if self.gpu is None:
            log.log(level, "VRAM: CPU mode, no GPU in use")
        else:
            log.log(
                level,
                "VRAM %s: %.0f / %.0f MiB used, %.0f MiB free "
                "(torch reserved %.0f, allocated %.0f)",
                status.device,
                status.used_mib,
                status.total_mib,
                status.free_mib,
                status.torch_reserved_mib,
                status.torch_allocated_mib,
            )
        return status

    def stage(
        self,
        name: str,
        required_mb: float | None = None,
        *,
        config: DictConfig | None = None,
        safety_margin_mb: float | None = None,
    ) -> AbstractContextManager[StageRecord]:
        """A context manager for one stage's model: load it inside, drop it before leaving.

        Refuses with `InsufficientVRAMError` before anything is loaded when `can_load`
        says `required_mb` (+ the margin) does not fit; records the stage's peak VRAM;
        afterwards runs `force_cleanup()` and warns when VRAM did not come back. The
        record (required, peak, what stayed) is yielded and appended to `self.records`.

        With `config` (from `load_config()`), `name` is a stage of its pipeline (voice,
        lipsync, enhance) and the need, the margin and the lighter options named in the
        error come from the stage's config. See `vram/stage.py`.
        """
        # Checked here too (open_stage checks what a config declares), so a bad size
        # fails at the call, not only when the `with` block is entered.
        if required_mb is not None:
            check_size_mib("required_mb", required_mb)
        if safety_margin_mb is not None:
            check_size_mib("safety_margin_mb", safety_margin_mb)
        return open_stage(self, name, required_mb, config=config, safety_margin_mb=safety_margin_mb)

    def close(self) -> None:
        """Release the NVML session the status queries keep open (safe to call twice)."""
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None

    def __enter__(self) -> VRAMManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _torch_nonsense(reserved_mib: float, allocated_mib: float) -> str | None:
    for what, value in (("reserved", reserved_mib), ("allocated", allocated_mib)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"torch {what} memory is {type(value).__name__}, not a number"
        if not 0 <= value < float("inf"):
            return f"torch {what} memory is {value} MiB"
    return None
