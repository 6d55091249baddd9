"""What avatar knows of the hardware: GPUs, the detection result, system RAM.

Plain data, with memory in MiB. The adapters (`nvml`, `torch_probe`) produce it and
`detect` decides with it; every layer above reads it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from enum import Enum

from avatar.units import BYTES_PER_MIB


class _Named(str, Enum):
    """A str enum that prints as its value (status.json and messages show the plain word)."""

    def __str__(self) -> str:
        return str(self.value)


class GPUBackend(_Named):
    """Who answered for a GPU: NVML, or torch for CUDA without NVML, ROCm and Apple MPS."""

    nvml = "nvml"
    cuda = "cuda"
    rocm = "rocm"
    mps = "mps"


class DetectionBackend(_Named):
    """Who found the GPUs of a detection: NVML, torch (ROCm, MPS), or nobody (CPU mode)."""

    nvml = "nvml"
    torch = "torch"
    none = "none"


# No device has less than 1 MiB or more than 1 PiB of memory: a figure outside that range
# is a driver's nonsense, and arithmetic on it (or on NaN and inf) would decide silently.
MIN_DEVICE_MIB = 1.0
MAX_DEVICE_MIB = float(2**30)
# used + free may exceed total by rounding in a binding's byte-to-MiB arithmetic, not more.
_ROUNDING_MIB = 1.0


def printable(text: str) -> str:
    """A name a driver answered, safe to print: control characters become U+FFFD.

    GPU names reach the user's terminal and status.json; an escape sequence in one must
    not act on the terminal.
    """
    return text if text.isprintable() else "".join(c if c.isprintable() else "\ufffd" for c in text)


def memory_nonsense(total_mib: object, used_mib: object, free_mib: object) -> str | None:
    """What is wrong with one device's memory figures, or None when they make sense.

    A pure check shared by detection (a GPU with nonsense figures is named and skipped)
    and the VRAM status (nonsense gives ok=False): drivers have answered NaN, 0,
    negative or used > total, and choosing or refusing on such a figure would be
    silently wrong. A total of exactly 0 from NVML means something else (the device
    shares memory with the host); detection tells that apart before calling this.
    """
    figures: list[float] = []
    for what, value in (("total", total_mib), ("used", used_mib), ("free", free_mib)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{what} memory is {type(value).__name__}, not a number"
        try:
            figure = float(value)
        except OverflowError:  # an integer beyond any float
            return f"{what} memory is an integer too large for any device"
        if not math.isfinite(figure):
            return f"{what} memory is {figure}"
        figures.append(figure)
    total, used, free = figures
    if not MIN_DEVICE_MIB <= total <= MAX_DEVICE_MIB:
        return f"total memory is {total:g} MiB"
    if used < 0:
        return f"used memory is {used:g} MiB"
    if used > total:
        return f"used memory {used:g} MiB > total {total:g} MiB"
    if free < 0:
        return f"free memory is {free:g} MiB"
    if free > total:
        return f"free memory {free:g} MiB > total {total:g} MiB"
    if used + free > total + _ROUNDING_MIB:
        return f"used {used:g} + free {free:g} MiB > total {total:g} MiB"
    return None


@dataclass(frozen=True)
class GPUInfo:
    """One GPU visible to this process. Memory in MiB, as nvidia-smi shows it."""

    index: int  # the CUDA index torch uses (after CUDA_VISIBLE_DEVICES), i.e. cuda:<index>
    name: str
    total_mib: float
    used_mib: float
    free_mib: float
    uuid: str = ""
    nvml_index: int | None = None  # NVML / nvidia-smi index; None when found through torch
    backend: GPUBackend = GPUBackend.nvml

    @property
    def device(self) -> str:
        """The torch device string for this GPU."""
        return "mps" if self.backend is GPUBackend.mps else f"cuda:{self.index}"


@dataclass(frozen=True)
class SystemRAM:
    total_mib: float
    available_mib: float | None  # None where the OS does not say


@dataclass(frozen=True)
class GPUDetection:
    """The result of `detect_gpu()`: every visible GPU, and the one chosen for work."""

    gpus: tuple[GPUInfo, ...]
    chosen: GPUInfo | None
    backend: DetectionBackend
    note: str  # why CPU mode, or how the GPU was chosen: shown by status
    # CPU mode because CUDA_VISIBLE_DEVICES hides the GPUs NVML lists (a launcher's choice,
    # or a typo), as opposed to no GPU or no driver at all.
    hidden_by_visible_devices: bool = False
    ram: SystemRAM = field(default_factory=lambda: read_system_ram())

    @property
    def cpu_mode(self) -> bool:
        return self.chosen is None

    @property
    def device(self) -> str:
        """The torch device string later stages should use."""
        return "cpu" if self.chosen is None else self.chosen.device


def read_system_ram() -> SystemRAM:
    """System memory without psutil: sysconf for the total, /proc/meminfo for what is available."""
    try:
        total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / BYTES_PER_MIB
    except (ValueError, OSError, AttributeError):
        total_mib = 0.0
    available_mib: float | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available_mib = int(line.split()[1]) / 1024
                    break
    except OSError:
        pass
    return SystemRAM(total_mib, available_mib)
