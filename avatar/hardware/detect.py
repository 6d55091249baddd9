"""Hardware facts: which GPUs this process can use and how much memory they have.

NVML is asked first: it needs no CUDA context and no torch import (0.19 s and
0 MiB of VRAM, against 4 s and 527 MiB through torch on an H200). torch is asked
only where NVML cannot answer and a GPU may still be there (ROCm, Apple MPS).
Every failure ends in CPU mode with one logged warning, never a crash.

The decisions here (`parse_visible_devices`, `choose_gpu`) are pure functions;
NVML and torch sit behind `hardware.nvml` and `hardware.torch_probe`; the data
types are in `hardware.types`, CUDA_VISIBLE_DEVICES in `hardware.visible`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from avatar.errors import GPUSelectionError
from avatar.hardware.nvml import Nvml, NvmlError
from avatar.hardware.torch_probe import initialized_torch, probe_gpus
from avatar.hardware.types import DetectionBackend, GPUDetection, GPUInfo
from avatar.hardware.visible import parse_visible_devices

log = logging.getLogger("avatar.hardware")


def choose_gpu(gpus: Sequence[GPUInfo], gpu_index: int | None) -> GPUInfo | None:
    """The GPU to work on: `gpu_index` when given, else the one with the most free memory.

    Raises GPUSelectionError when `gpu_index` names no visible GPU: that is a user
    error to report, not a reason to fall back silently.
    """
    if not gpus:
        return None
    if gpu_index is None:
        return max(gpus, key=lambda g: (g.free_mib, -g.index))
    for gpu in gpus:
        if gpu.index == gpu_index:
            return gpu
    visible = ", ".join(str(g.index) for g in gpus)
    raise GPUSelectionError(
        f"gpu_index={gpu_index} names no visible GPU: the visible GPUs are {visible} "
        "(numbered as torch numbers them after CUDA_VISIBLE_DEVICES). "
        "Use one of those, or gpu_index=null for the GPU with the most free memory."
    )


def _gpus_from_nvml(nvml: Nvml, visible_env: str | None) -> tuple[list[GPUInfo], str | None]:
    count = nvml.device_count()
    devices = [nvml.device(i) for i in range(count)]
    visible = parse_visible_devices(visible_env, [d.uuid for d in devices])
    gpus = [
        GPUInfo(
            index=cuda_index,
            name=devices[n].name,
            total_mib=devices[n].memory.total_mib,
            used_mib=devices[n].memory.used_mib,
            free_mib=devices[n].memory.free_mib,
            uuid=devices[n].uuid,
            nvml_index=n,
        )
        for cuda_index, n in enumerate(visible.nvml_indices)
    ]
    for mig_uuid in visible.mig_uuids:
        dev = nvml.device_by_uuid(mig_uuid, nvml_index=-1)
        gpus.append(
            GPUInfo(
                len(gpus),
                dev.name,
                dev.memory.total_mib,
                dev.memory.used_mib,
                dev.memory.free_mib,
                uuid=dev.uuid,
            )
        )
    return gpus, visible.problem


def _other_gpu_may_exist() -> bool:
    """Only a ROCm device (/dev/kfd) or a Mac (MPS) is worth importing torch for."""
    return os.path.exists("/dev/kfd") or sys.platform == "darwin"


def detect_gpu(
    gpu_index: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
    nvml_factory: Callable[[], Nvml] = Nvml,
    torch_probe: Callable[[], list[GPUInfo]] | None = None,
    other_gpu_may_exist: Callable[[], bool] = _other_gpu_may_exist,
) -> GPUDetection:
    """Find the GPUs this process may use and choose one (by `gpu_index` or most free memory).

    Never raises for hardware trouble: no driver, an NVML error on any call, torch
    missing or CUDA unavailable all give CPU mode and one logged warning. Only a
    `gpu_index` that names no visible GPU raises (GPUSelectionError), since that is
    a mistake in the user's input.
    """
    environ = os.environ if env is None else env
    visible_env = environ.get("CUDA_VISIBLE_DEVICES")
    try:
        with nvml_factory() as nvml:
            gpus, problem = _gpus_from_nvml(nvml, visible_env)
        backend = DetectionBackend.nvml
        if env is None and gpus:
            _number_cuda_devices_as_nvml(gpus)
    except NvmlError as exc:
        if not (exc.library_missing and other_gpu_may_exist()):
            why = "no NVIDIA driver found" if exc.library_missing else "NVML failed"
            return _cpu_mode(f"{why} ({exc})")
        gpus, why_none = _gpus_from_torch(torch_probe)
        problem, backend = None, DetectionBackend.torch
        if not gpus:
            return _cpu_mode(f"no NVIDIA driver found, and {why_none}")
    if not gpus:
        return _cpu_mode(problem or "NVML lists no GPU", hidden=problem is not None)
    if problem:
        log.warning("%s", problem)
    chosen = choose_gpu(gpus, gpu_index)
    how = f"GPU {chosen.index} chosen " + (
        "by gpu_index" if gpu_index is not None else "as the one with the most free memory"
    )
    return GPUDetection(tuple(gpus), chosen, backend, how)


def _number_cuda_devices_as_nvml(gpus: Sequence[GPUInfo]) -> None:
    """Make CUDA number GPUs in PCI bus order, as NVML does, so `cuda:<index>` is the GPU chosen.

    CUDA's default order is fastest first: on a box with two different cards, CUDA's
    device 0 (and the indices in CUDA_VISIBLE_DEVICES) can be NVML's device 1. CUDA
    reads this variable when it initialises, i.e. after detection in this process and
    in every child; a value the user set stays. Where torch initialised CUDA before
    detection ran, it is too late for this process, and with cards of different
    models the numbers may then disagree: that gets one warning.
    """
    if "CUDA_DEVICE_ORDER" in os.environ:
        return
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    mixed_cards = len({gpu.name for gpu in gpus}) > 1
    if mixed_cards and "torch" in sys.modules and initialized_torch() is not None:
        log.warning(
            "torch initialised CUDA before avatar detected the GPUs, in CUDA's default "
            "fastest-first order, so in this process cuda:N may not be GPU N as avatar "
            "and nvidia-smi number them. Set CUDA_DEVICE_ORDER=PCI_BUS_ID before starting "
            "Python (or call detect_gpu() before torch uses CUDA)."
        )


def _gpus_from_torch(
    torch_probe: Callable[[], list[GPUInfo]] | None,
) -> tuple[list[GPUInfo], str]:
    """GPUs through torch, and why there are none when the list is empty."""
    if torch_probe is None:
        torch_probe = probe_gpus
    try:
        gpus = torch_probe()
    except ImportError:
        return [], "torch is not installed to look for a ROCm or MPS device"
    except Exception as exc:  # a backend's initialisation can fail in many ways
        return [], f"torch failed while looking for a ROCm or MPS device ({exc})"
    return gpus, "torch sees no ROCm or MPS device"


def _cpu_mode(note: str, *, hidden: bool = False) -> GPUDetection:
    log.warning("%s; running in CPU mode", note)
    return GPUDetection((), None, DetectionBackend.none, note, hidden_by_visible_devices=hidden)
