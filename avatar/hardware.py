"""Hardware facts: which GPUs this process can use and how much memory they have.

NVML is asked first: it needs no CUDA context and no torch import (0.19 s and
0 MiB of VRAM, against 4 s and 527 MiB through torch on an H200). torch is asked
only where NVML cannot answer and a GPU may still be there (ROCm, Apple MPS).
Every failure ends in CPU mode with one logged warning, never a crash.

The decisions here (`parse_visible_devices`, `choose_gpu`) are pure functions;
NVML and torch sit behind `avatar.nvml` and `avatar.torch_probe`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from avatar.errors import GPUSelectionError
from avatar.nvml import Nvml, NvmlError

log = logging.getLogger("avatar.hardware")


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
    backend: str = "nvml"  # nvml | cuda | rocm | mps

    @property
    def device(self) -> str:
        """The torch device string for this GPU."""
        return "mps" if self.backend == "mps" else f"cuda:{self.index}"


@dataclass(frozen=True)
class SystemRAM:
    total_mib: float
    available_mib: float | None  # None where the OS does not say


@dataclass(frozen=True)
class GPUDetection:
    """The result of `detect_gpu()`: every visible GPU, and the one chosen for work."""

    gpus: tuple[GPUInfo, ...]
    chosen: GPUInfo | None
    backend: str  # nvml | torch | none
    note: str  # why CPU mode, or how the GPU was chosen: shown by status
    ram: SystemRAM = field(default_factory=lambda: read_system_ram())

    @property
    def cpu_mode(self) -> bool:
        return self.chosen is None

    @property
    def device(self) -> str:
        """The torch device string later stages should use."""
        return "cpu" if self.chosen is None else self.chosen.device


@dataclass(frozen=True)
class VisibleDevices:
    """Which NVML devices CUDA_VISIBLE_DEVICES exposes, in CUDA order."""

    nvml_indices: tuple[int, ...]  # position in this tuple is the CUDA index
    mig_uuids: tuple[str, ...] = ()  # MIG instances, read by UUID after the GPUs above
    problem: str | None = None  # set when an entry was invalid or nothing is visible


def parse_visible_devices(value: str | None, gpu_uuids: Sequence[str]) -> VisibleDevices:
    """Map CUDA_VISIBLE_DEVICES onto NVML devices, the way the CUDA runtime reads it.

    `gpu_uuids` are the UUIDs of NVML devices 0..n-1. NVML itself ignores the
    variable, which is why this mapping exists. The rules are CUDA's, as PyTorch
    mirrors them (`torch.cuda._parse_visible_devices`): the first entry decides the
    kind (indices, `GPU-` UUIDs or `MIG-` UUIDs; a unique UUID prefix is enough);
    an index is read like strtoul (`1gpu2` is 1); parsing stops at the first entry
    that is negative, out of range, unknown or of another kind, so `-1` or an empty
    value hides every GPU; a GPU named twice hides every GPU.
    """
    count = len(gpu_uuids)
    if value is None:
        return VisibleDevices(tuple(range(count)))
    if not value.strip():
        return VisibleDevices((), problem="CUDA_VISIBLE_DEVICES is empty, so no GPU is visible")
    entries = [raw.strip() for raw in value.split(",")]
    kind = next((k for k in ("GPU-", "MIG-") if entries[0].startswith(k)), None)
    # First the list as written (a repeat hides every GPU, even past an index out of range),
    # then each entry resolved to a device (the first that names none ends the list).
    written: list[int | str] = []  # indices as read, or UUIDs as written
    stop: str | None = None
    for entry in entries:
        key = _ordinal(entry) if kind is None else entry
        if key in written:
            return _named_twice(value)
        if (
            key is None
            or (isinstance(key, int) and key < 0)
            or (kind and not entry.startswith(kind))
        ):
            stop = entry
            break
        written.append(key)
    chosen: list[int] = []
    migs: list[str] = []
    for key in written:
        if kind == "MIG-":
            migs.append(str(key))  # read by UUID; NVML says whether it exists
            continue
        index = key if isinstance(key, int) else _uuid_index(key, gpu_uuids)
        if index is None or not 0 <= index < count:
            stop = str(key)
            break
        if index in chosen:  # two prefixes of one UUID
            return _named_twice(value)
        chosen.append(index)
    if stop is None:
        return VisibleDevices(tuple(chosen), tuple(migs))
    hidden = "no GPU is visible" if not chosen and not migs else "later entries are ignored"
    return VisibleDevices(
        tuple(chosen),
        tuple(migs),
        problem=(
            f"CUDA_VISIBLE_DEVICES={value!r}: entry {stop!r} names no GPU on this machine "
            f"(valid: indices 0..{count - 1}, or GPU UUIDs as nvidia-smi -L lists them), "
            f"so {hidden}, as in CUDA"
        ),
    )


def _named_twice(value: str) -> VisibleDevices:
    return VisibleDevices(
        (),
        problem=(
            f"CUDA_VISIBLE_DEVICES={value!r} names a GPU twice, so no GPU is visible, as in CUDA"
        ),
    )


_LEADING_INTEGER = re.compile(r"[+-]?[0-9]+")


def _ordinal(entry: str) -> int | None:
    """The integer an entry starts with, as strtoul reads it; None if it starts with none."""
    match = _LEADING_INTEGER.match(entry)
    return int(match.group()) if match else None


def _uuid_index(entry: str, gpu_uuids: Sequence[str]) -> int | None:
    """The NVML index of the one GPU whose UUID starts with `entry`; None if none or several."""
    if not entry.startswith("GPU-"):
        return None
    matches = [i for i, uuid in enumerate(gpu_uuids) if uuid.startswith(entry)]
    return matches[0] if len(matches) == 1 else None


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


def read_system_ram() -> SystemRAM:
    """System memory without psutil: sysconf for the total, /proc/meminfo for what is available."""
    try:
        total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1024 * 1024)
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
        backend = "nvml"
        if env is None and gpus:
            _number_cuda_devices_as_nvml(gpus)
    except NvmlError as exc:
        if not (exc.library_missing and other_gpu_may_exist()):
            why = "no NVIDIA driver found" if exc.library_missing else "NVML failed"
            return _cpu_mode(f"{why} ({exc})")
        gpus, why_none = _gpus_from_torch(torch_probe)
        problem, backend = None, "torch"
        if not gpus:
            return _cpu_mode(f"no NVIDIA driver found, and {why_none}")
    if not gpus:
        return _cpu_mode(problem or "NVML lists no GPU")
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
    if "torch" in sys.modules and len({gpu.name for gpu in gpus}) > 1:
        from avatar.torch_probe import initialized_torch

        if initialized_torch() is not None:
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
        from avatar.torch_probe import probe_gpus as torch_probe
    try:
        gpus = torch_probe()
    except ImportError:
        return [], "torch is not installed to look for a ROCm or MPS device"
    except Exception as exc:  # a backend's initialisation can fail in many ways
        return [], f"torch failed while looking for a ROCm or MPS device ({exc})"
    return gpus, "torch sees no ROCm or MPS device"


def _cpu_mode(note: str) -> GPUDetection:
    log.warning("%s; running in CPU mode", note)
    return GPUDetection((), None, "none", note)
