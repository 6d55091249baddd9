"""Thin adapter over NVML (the official nvidia-ml-py bindings, module `pynvml`).

NVML answers without creating a CUDA context and without importing torch, which
is why detection and status go through it first. Every call goes through
`Nvml._call`, so a driver error anywhere becomes one `NvmlError` type and no
caller repeats try/except around pynvml.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
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


# The driver library pynvml loads on Linux (its `_LoadNvmlLibrary`), and pynvml's own text
# for the error it raises when that fails (NVML_ERROR_LIBRARY_NOT_FOUND).
_LINUX_LIBRARY = "libnvidia-ml.so.1"
LIBRARY_NOT_FOUND = "NVML Shared Library Not Found"
# A file the nvidia-ml-py distribution installs beside `pynvml.py`: tells its pynvml from another
# module of that name (the tests' fake, which must be asked, driver or not).
_DIST_INFO_PREFIX = "nvidia_ml_py-"


def _import_pynvml() -> ModuleType:
    if _driver_library_missing():
        raise NvmlError(f"nvmlInit: {LIBRARY_NOT_FOUND}", library_missing=True)
    try:
        import pynvml
    except ImportError as exc:  # the dependency is declared, but a broken env can lack it
        raise NvmlError(
            "the nvidia-ml-py package (module pynvml) is not installed", library_missing=True
        ) from exc
    return pynvml


def _driver_library_missing() -> bool:
    """Whether nvidia-ml-py's pynvml, once imported, could only say "no driver library".

    Importing pynvml (a 5000-line module that also imports ctypes.util and subprocess) is
    about 40 ms of CPU on a 2-core machine, a twentieth of a status run, and on a machine
    without an NVIDIA driver it can only report that the library is missing. On Linux
    pynvml loads `libnvidia-ml.so.1` and nothing else; asking the dynamic loader for it
    first gives the same answer, with the same text, without the import. Any other
    pynvml (already imported, or a module of that name that is not nvidia-ml-py's) is
    imported and asked as before.
    """
    if "pynvml" in sys.modules or not sys.platform.startswith("linux"):
        return False
    spec = importlib.util.find_spec("pynvml")
    if spec is None or spec.origin is None:
        return False  # the import reports the missing bindings
    return _is_nvidia_ml_py(os.path.dirname(spec.origin)) and not _library_loads(_LINUX_LIBRARY)


def _is_nvidia_ml_py(folder: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(e.name.startswith(_DIST_INFO_PREFIX) for e in entries)
    except OSError:
        return False


@functools.cache
def _library_loads(name: str) -> bool:
    """Whether the dynamic loader finds and loads `name`; asked once per process (a driver
    is not installed while a process runs)."""
    import ctypes

    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


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
