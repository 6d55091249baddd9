"""Thin adapter over torch, imported lazily: never on the status path of an NVIDIA machine.

Two uses: finding GPUs where NVML cannot (ROCm, Apple MPS), and reading the
memory torch's caching allocator holds in a process that has already initialised
CUDA. Nothing here creates a CUDA context unless asked to probe for GPUs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType

from avatar.hardware.types import GPUBackend, GPUInfo
from avatar.units import BYTES_PER_MIB


def probe_gpus() -> list[GPUInfo]:
    """GPUs through torch: ROCm devices (torch.cuda with torch.version.hip) or Apple MPS.

    Creating a context here is accepted: it only runs where NVML cannot answer.
    Raises ImportError when torch is not installed.
    """
    import torch

    if torch.cuda.is_available():
        backend = GPUBackend.rocm if getattr(torch.version, "hip", None) else GPUBackend.cuda
        gpus = []
        for i in range(torch.cuda.device_count()):
            free_b, total_b = torch.cuda.mem_get_info(i)
            gpus.append(
                GPUInfo(
                    index=i,
                    name=torch.cuda.get_device_name(i),
                    total_mib=total_b / BYTES_PER_MIB,
                    used_mib=(total_b - free_b) / BYTES_PER_MIB,
                    free_mib=free_b / BYTES_PER_MIB,
                    backend=backend,
                )
            )
        return gpus
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        total_b = torch.mps.recommended_max_memory()
        used_b = torch.mps.driver_allocated_memory()
        return [
            GPUInfo(
                index=0,
                name="Apple MPS",
                total_mib=total_b / BYTES_PER_MIB,
                used_mib=used_b / BYTES_PER_MIB,
                free_mib=max(0, total_b - used_b) / BYTES_PER_MIB,
                backend=GPUBackend.mps,
            )
        ]
    return []


@dataclass(frozen=True)
class TorchMemory:
    """What torch's caching allocator holds on one device, in MiB."""

    reserved_mib: float
    allocated_mib: float


def initialized_torch() -> ModuleType | None:
    """torch, if this process already imported it and initialised CUDA; else None.

    Looking in sys.modules (rather than importing) is what keeps the status path
    free of torch and guarantees no CUDA context is created just to ask.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    cuda = getattr(torch, "cuda", None)
    try:
        return torch if cuda is not None and cuda.is_initialized() else None
    except Exception:  # a half-imported or broken torch
        return None


def torch_memory(torch: ModuleType, index: int) -> TorchMemory:
    return TorchMemory(
        reserved_mib=torch.cuda.memory_reserved(index) / BYTES_PER_MIB,
        allocated_mib=torch.cuda.memory_allocated(index) / BYTES_PER_MIB,
    )
