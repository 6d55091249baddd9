"""Thin adapter over NVML (the official nvidia-ml-py bindings, module `pynvml`).

NVML answers without creating a CUDA context and without importing torch, which
is why detection and status go through it first. Every call goes through
`Nvml._call`, so a driver error anywhere becomes one `NvmlError` type and no
caller repeats try/except around pynvml.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

from avatar.units import BYTES_PER_MIB

T = TypeVar("T")


class NvmlError(Exception):
    """NVML could not answer: bindings or driver missing, or a call failed."""

    def __init__(self, message: str, *, library_missing: bool = False) -> None:
        super().__init__(message)
        # True when no NVIDIA driver library is there at all: the only case in which
        # another backend (ROCm, Apple MPS through torch) may still find a GPU.
        self.library_missing = library_missing


class NvmlMemory(NamedTuple):
    """One device's memory as nvidia-smi reports it, in MiB.

    A named tuple, not a frozen dataclass: VRAMManager.get_status() builds one per
    call, and the goal is to cost little more than the NVML call itself.
    """

    total_mib: float
    used_mib: float
    free_mib: float


@dataclass(frozen=True)
class NvmlDevice:
    """What NVML says about one physical GPU (or MIG instance)."""

    nvml_index: int
    name: str
    uuid: str
    memory: NvmlMemory


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:  # the dependency is declared, but a broken env can lack it
        raise NvmlError(
            "the nvidia-ml-py package (module pynvml) is not installed", library_missing=True
        ) from exc
    return pynvml


class Nvml:
    """An NVML session. Use as a context manager or call `close()`.

    `pynvml` can be injected so tests run against a small fake module.
    """

    def __init__(self, pynvml: ModuleType | None = None) -> None:
        self._nv = pynvml if pynvml is not None else _import_pynvml()
        self._open = False
        self._memory_v2: bool | None = None  # unknown until the first memory query
        try:
            self._nv.nvmlInit()
        except self._nv.NVMLError as exc:
            missing = isinstance(exc, getattr(self._nv, "NVMLError_LibraryNotFound", ()))
            raise NvmlError(f"nvmlInit: {exc}", library_missing=missing) from exc
        except OSError as exc:  # a broken libnvidia-ml can fail while loading
            raise NvmlError(f"loading libnvidia-ml: {exc}", library_missing=True) from exc
        self._open = True

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            # Nothing useful to do if shutdown fails: the session is over either way.
            with contextlib.suppress(self._nv.NVMLError):
                self._nv.nvmlShutdown()

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except self._nv.NVMLError as exc:
            raise NvmlError(f"{what}: {exc}") from exc

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount", self._nv.nvmlDeviceGetCount))

    def handle(self, nvml_index: int) -> Any:
        return self._call(
            "nvmlDeviceGetHandleByIndex", self._nv.nvmlDeviceGetHandleByIndex, nvml_index
        )

    def handle_by_uuid(self, uuid: str) -> Any:
        return self._call("nvmlDeviceGetHandleByUUID", self._nv.nvmlDeviceGetHandleByUUID, uuid)

    def name(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetName", self._nv.nvmlDeviceGetName, handle))

    def uuid(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetUUID", self._nv.nvmlDeviceGetUUID, handle))

    def memory(self, handle: Any) -> NvmlMemory:
        """Memory via the v2 structure, which agrees with nvidia-smi.

        Since driver R510 the v1 structure counts driver-reserved memory as used
        (615 MiB on an idle H200); gpustat and nvitop also ask for v2 first and
        fall back to v1 on drivers or bindings that lack it.
        """
        get = self._nv.nvmlDeviceGetMemoryInfo
        info = None
        if self._memory_v2 is not False:
            v2 = getattr(self._nv, "nvmlMemory_v2", None)
            try:
                info = None if v2 is None else get(handle, version=v2)
            except (TypeError, self._nv.NVMLError):
                info = None
            if info is not None:
                self._memory_v2 = True
        if info is None:
            info = self._call("nvmlDeviceGetMemoryInfo", get, handle)
            # v1 answered where v2 did not: remembered, so later calls (one per VRAM
            # status) ask once, not twice. A transient failure of both stays unknown.
            self._memory_v2 = False
        return NvmlMemory(
            info.total / BYTES_PER_MIB, info.used / BYTES_PER_MIB, info.free / BYTES_PER_MIB
        )

    def device(self, nvml_index: int) -> NvmlDevice:
        handle = self.handle(nvml_index)
        return NvmlDevice(nvml_index, self.name(handle), self.uuid(handle), self.memory(handle))

    def device_by_uuid(self, uuid: str, nvml_index: int) -> NvmlDevice:
        handle = self.handle_by_uuid(uuid)
        return NvmlDevice(nvml_index, self.name(handle), self.uuid(handle), self.memory(handle))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
