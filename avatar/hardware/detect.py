"""Hardware facts: which GPUs this process can use and how much memory they have.

NVML is asked first: it needs no CUDA context and no torch import (0.19 s and
0 MiB of VRAM, against 4 s and 527 MiB through torch on an H200). torch is asked
only where NVML cannot answer and a GPU may still be there (ROCm, Apple MPS).
Every failure ends in CPU mode with one logged warning, never a crash, and every
figure a driver answers is checked: a GPU reporting nonsense (NaN, a negative or
zero total, used > total) is named in a warning and skipped, while a device that
reports no memory of its own (0 or NOT_SUPPORTED: unified memory shared with the
host) is asked about through torch instead.

The decisions here (`parse_visible_devices`, `choose_gpu`) are pure functions;
NVML and torch sit behind `hardware.nvml` and `hardware.torch_probe`; the data
types are in `hardware.types`, CUDA_VISIBLE_DEVICES in `hardware.visible`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from avatar.errors import GPUSelectionError
from avatar.hardware.nvml import Nvml, NvmlError
from avatar.hardware.torch_probe import initialized_torch, probe_gpus
from avatar.hardware.types import (
    DetectionBackend,
    GPUDetection,
    GPUInfo,
    memory_nonsense,
    printable,
)
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


@dataclasses.dataclass
class _NvmlScan:
    """What NVML said about the visible GPUs, sorted into usable, nonsense and shared."""

    gpus: list[GPUInfo] = dataclasses.field(default_factory=list)
    problem: str | None = None  # what is wrong with CUDA_VISIBLE_DEVICES, if anything
    nonsense: list[str] = dataclasses.field(default_factory=list)  # "GPU 1 (name): why", skipped
    shared: list[str] = dataclasses.field(
        default_factory=list
    )  # "GPU 0 (name)": no memory of its own


def _gpus_from_nvml(nvml: Nvml, visible_env: str | None) -> _NvmlScan:
    count = nvml.device_count()
    devices = [nvml.device(i) for i in range(count)]
    visible = parse_visible_devices(visible_env, [d.uuid for d in devices])
    seen = [devices[n] for n in visible.nvml_indices]
    seen += [nvml.device_by_uuid(mig_uuid, nvml_index=-1) for mig_uuid in visible.mig_uuids]
    scan = _NvmlScan(problem=visible.problem)
    # The CUDA index is the position among the visible devices, whether or not a device
    # before it is skipped: torch numbers them so.
    for cuda_index, dev in enumerate(seen):
        label = f"GPU {cuda_index} ({dev.name})"
        mem = dev.memory
        if mem is None or mem.total_mib == 0:
            scan.shared.append(label)
            continue
        wrong = memory_nonsense(mem.total_mib, mem.used_mib, mem.free_mib)
        if wrong is not None:
            scan.nonsense.append(f"{label}: {wrong}")
            continue
        scan.gpus.append(
            GPUInfo(
                index=cuda_index,
                name=dev.name,
                total_mib=mem.total_mib,
                used_mib=mem.used_mib,
                free_mib=mem.free_mib,
                uuid=dev.uuid,
                nvml_index=dev.nvml_index if dev.nvml_index >= 0 else None,
            )
        )
    return scan


def _sane(gpus: Sequence[GPUInfo]) -> tuple[list[GPUInfo], list[str]]:
    """The GPUs (from torch) whose figures make sense, and the others named with why."""
    kept: list[GPUInfo] = []
    nonsense: list[str] = []
    for gpu in gpus:
        name = printable(str(gpu.name))
        wrong = memory_nonsense(gpu.total_mib, gpu.used_mib, gpu.free_mib)
        if wrong is None:
            kept.append(gpu if name == gpu.name else dataclasses.replace(gpu, name=name))
        else:
            nonsense.append(f"GPU {gpu.index} ({name}): {wrong}")
    return kept, nonsense


def _nonsense_note(nonsense: Sequence[str]) -> str:
    return (
        f"skipped {'a GPU' if len(nonsense) == 1 else f'{len(nonsense)} GPUs'} whose driver "
        f"reports memory figures that make no sense ({'; '.join(nonsense)})"
    )


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

    Never raises for hardware trouble: no driver, bindings that are broken or hidden by
    a stray pynvml.py, any exception from any NVML call, torch missing or CUDA
    unavailable all give CPU mode and one logged warning. Every GPU returned has
    figures that make sense (`types.memory_nonsense`); the others are named in a
    warning and skipped. Only a `gpu_index` that names no visible GPU raises
    (GPUSelectionError), since that is a mistake in the user's input.
    """
    environ = os.environ if env is None else env
    visible_env = environ.get("CUDA_VISIBLE_DEVICES")
    try:
        with nvml_factory() as nvml:
            scan = _gpus_from_nvml(nvml, visible_env)
    except NvmlError as exc:
        if not (exc.library_missing and other_gpu_may_exist()):
            why = "no NVIDIA driver found" if exc.library_missing else "NVML failed"
            return _cpu_mode(f"{why} ({exc})", gpu_index=gpu_index)
        return _detect_with_torch(
            gpu_index, torch_probe, "no NVIDIA driver found", "a ROCm or MPS device"
        )
    if scan.shared:
        # NVML knows these GPUs but not their memory: torch can tell how much they may use.
        shared = ", ".join(scan.shared)
        return _detect_with_torch(
            gpu_index,
            torch_probe,
            f"{shared} share{'s' if len(scan.shared) == 1 else ''} memory with the host "
            "(NVML reports no memory of its own)",
            "the GPUs' memory",
        )
    if env is None and scan.gpus:
        _number_cuda_devices_as_nvml(scan.gpus)
    return _choose(
        scan.gpus, gpu_index, DetectionBackend.nvml, problem=scan.problem, nonsense=scan.nonsense
    )


def _detect_with_torch(
    gpu_index: int | None,
    torch_probe: Callable[[], list[GPUInfo]] | None,
    context: str,
    looking_for: str,
) -> GPUDetection:
    found, why_none = _gpus_from_torch(torch_probe, looking_for)
    if not found:
        return _cpu_mode(f"{context}, and {why_none}", gpu_index=gpu_index)
    gpus, nonsense = _sane(found)
    if not gpus:
        return _cpu_mode(f"{context}, and torch {_nonsense_note(nonsense)}", gpu_index=gpu_index)
    return _choose(gpus, gpu_index, DetectionBackend.torch, nonsense=nonsense)


def _choose(
    gpus: list[GPUInfo],
    gpu_index: int | None,
    backend: DetectionBackend,
    *,
    problem: str | None = None,
    nonsense: Sequence[str] = (),
) -> GPUDetection:
    if not gpus:
        if nonsense:
            return _cpu_mode(_nonsense_note(nonsense), gpu_index=gpu_index)
        return _cpu_mode(
            problem or "NVML lists no GPU", hidden=problem is not None, gpu_index=gpu_index
        )
    if nonsense:
        log.warning("%s", _nonsense_note(nonsense))
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
    torch_probe: Callable[[], list[GPUInfo]] | None, looking_for: str
) -> tuple[list[GPUInfo], str]:
    """GPUs through torch, and why there are none when the list is empty."""
    if torch_probe is None:
        torch_probe = probe_gpus
    try:
        gpus = list(torch_probe())
    except ImportError:
        return [], f"torch is not installed to look for {looking_for}"
    except Exception as exc:  # a backend's initialisation can fail in many ways
        return [], f"torch failed while looking for {looking_for} ({exc})"
    if not gpus:
        what = "no ROCm or MPS device" if looking_for.endswith("device") else "no GPU"
        return [], f"torch sees {what}"
    return gpus, ""


def _cpu_mode(note: str, *, hidden: bool = False, gpu_index: int | None = None) -> GPUDetection:
    """CPU mode, with its one warning. A `gpu_index` the user set is named in it: with no
    GPU visible it cannot be honoured, and silence would hide that it was ignored."""
    ignored = "" if gpu_index is None else f" (gpu_index={gpu_index} is ignored: no GPU is visible)"
    log.warning("%s; running in CPU mode%s", note, ignored)
    return GPUDetection((), None, DetectionBackend.none, note, hidden_by_visible_devices=hidden)
