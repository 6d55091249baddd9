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
import math
import operator
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

from avatar.hardware.types import printable
from avatar.units import BYTES_PER_MIB

# NVML's return code for "this device does not report that" (pynvml.NVML_ERROR_NOT_SUPPORTED).
NVML_ERROR_NOT_SUPPORTED = 3
# More devices than this in one answer is nonsense, and looping over them would hang detection.
MAX_DEVICE_COUNT = 4096
# What a module called `pynvml` must have to be NVIDIA's bindings rather than a stray file.
_BINDINGS_API = ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetMemoryInfo")


class NvmlError(Exception):
    """NVML could not answer: bindings or driver missing, or a call failed."""

    def __init__(
        self, message: str, *, library_missing: bool = False, code: int | None = None
    ) -> None:
        super().__init__(message)
        # True when no NVIDIA driver library is there at all: the only case in which
        # another backend (ROCm, Apple MPS through torch) may still find a GPU.
        self.library_missing = library_missing
        self.code = code  # NVML's return code, where the binding raised an NVMLError

    @property
    def not_supported(self) -> bool:
        """The device does not report this (unified-memory devices for their memory)."""
        return self.code == NVML_ERROR_NOT_SUPPORTED


class NvmlMemory(NamedTuple):
    """One device's memory as nvidia-smi reports it, in MiB.

    A named tuple, not a frozen dataclass: VRAMManager.get_status() builds one per
    call, and the goal is to cost little more than the NVML call itself.

    The figures are the driver's, converted but not checked (NaN where the answer was
    not a number): `types.memory_nonsense` is where they are judged.
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
    # None: NVML answered NOT_SUPPORTED for its memory, as a device that shares memory
    # with the host does (unified memory); torch can still say how much it may use.
    memory: NvmlMemory | None


def _said(exc: BaseException) -> str:
    """An exception's text, even when its own __str__ fails.

    pynvml's NVMLError.__str__ asks the driver library for the text, so a broken library
    can fail again while its first failure is being reported.
    """
    try:
        return str(exc) or type(exc).__name__
    except Exception:
        return type(exc).__name__


def _describe(exc: BaseException) -> str:
    """An exception that is not an NVMLError, with its type: that is often the clue."""
    text = _said(exc)
    name = type(exc).__name__
    return name if text == name else f"{name}: {text}"


def _where_pynvml_lives(module: ModuleType | None = None) -> str:
    """The file (or folder) `import pynvml` finds, for messages about a stray one."""
    where: object = getattr(module, "__file__", None) if module is not None else None
    if not where and module is not None:
        where = ", ".join(str(p) for p in getattr(module, "__path__", ()) or ())
    if not where:
        try:
            spec = importlib.util.find_spec("pynvml")
            where = spec.origin if spec is not None else None
        except Exception:  # finding it can fail the way importing it did
            where = None
    return str(where) if where else "an unknown place"


# The driver library pynvml loads on Linux (its `_LoadNvmlLibrary`), and pynvml's own text
# and return code for the error it raises when that fails (NVML_ERROR_LIBRARY_NOT_FOUND).
_LINUX_LIBRARY = "libnvidia-ml.so.1"
LIBRARY_NOT_FOUND = "NVML Shared Library Not Found"
NVML_ERROR_LIBRARY_NOT_FOUND = 12
# A file the nvidia-ml-py distribution installs beside `pynvml.py`: tells its pynvml from another
# module of that name (the tests' fake, or a stray file, which must be imported and checked).
_DIST_INFO_PREFIX = "nvidia_ml_py-"


def _import_pynvml() -> ModuleType:
    if _driver_library_missing():
        raise NvmlError(
            f"nvmlInit: {LIBRARY_NOT_FOUND}",
            library_missing=True,
            code=NVML_ERROR_LIBRARY_NOT_FOUND,
        )
    try:
        import pynvml
    except ImportError as exc:  # the dependency is declared, but a broken env can lack it
        raise NvmlError(
            "the nvidia-ml-py package (module pynvml) is not installed", library_missing=True
        ) from exc
    except Exception as exc:  # a broken install, or a stray pynvml.py that fails to import
        raise NvmlError(
            f"importing pynvml from {_where_pynvml_lives()} failed ({_describe(exc)})"
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
    try:
        spec = importlib.util.find_spec("pynvml")
    except Exception:  # a broken pynvml: the import below reports it
        return False
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


def _check_bindings(module: ModuleType) -> None:
    """Refuse a `pynvml` that is not NVIDIA's bindings, naming the file it came from.

    A file called pynvml.py in the working directory (or anywhere earlier on sys.path)
    hides the installed nvidia-ml-py; without this check, its missing functions would
    surface as AttributeErrors in the middle of detection.
    """
    missing = [name for name in _BINDINGS_API if not callable(getattr(module, name, None))]
    error = getattr(module, "NVMLError", None)
    if not (isinstance(error, type) and issubclass(error, Exception)):
        missing.append("NVMLError")
    if missing:
        raise NvmlError(
            f"the module pynvml imported from {_where_pynvml_lives(module)} is not NVIDIA's "
            f"NVML bindings (it has no {', '.join(missing)}): a file or folder of that name "
            "in the working directory or on PYTHONPATH hides the nvidia-ml-py package; "
            "rename it"
        )


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Nvml:
    """An NVML session. Use as a context manager or call `close()`.

    `pynvml` can be injected so tests run against a small fake module. Whatever the
    bindings raise (NVMLError, or OSError, RuntimeError, AttributeError from a broken
    install) leaves this class as NvmlError, and every figure they answer is converted
    here without trusting its type.
    """

    def __init__(self, pynvml: ModuleType | None = None) -> None:
        self._nv = pynvml if pynvml is not None else _import_pynvml()
        self._open = False
        self._memory_v2: bool | None = None  # unknown until the first memory query
        _check_bindings(self._nv)
        try:
            self._nv.nvmlInit()
        except self._nv.NVMLError as exc:
            not_found = getattr(self._nv, "NVMLError_LibraryNotFound", None)
            missing = isinstance(not_found, type) and isinstance(exc, not_found)
            raise NvmlError(
                f"nvmlInit: {_said(exc)}", library_missing=missing, code=_code(exc)
            ) from exc
        except OSError as exc:  # a broken libnvidia-ml can fail while loading
            raise NvmlError(f"loading libnvidia-ml: {exc}", library_missing=True) from exc
        except Exception as exc:  # the bindings' own bug: still no GPU to be had through them
            raise NvmlError(f"nvmlInit raised {_describe(exc)}") from exc
        self._open = True

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            # Nothing useful to do if shutdown fails: the session is over either way.
            with contextlib.suppress(Exception):
                self._nv.nvmlShutdown()

    def _call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        """Call NVML function `what`: the one place where the bindings' exceptions are caught.

        Looking the function up here too means bindings that lack one (old or stray)
        fail like a driver error, with the function's name.
        """
        try:
            return getattr(self._nv, what)(*args, **kwargs)
        except self._nv.NVMLError as exc:
            raise NvmlError(f"{what}: {_said(exc)}", code=_code(exc)) from exc
        except Exception as exc:  # RuntimeError, OSError, AttributeError, ...: not a crash
            raise NvmlError(f"{what} raised {_describe(exc)}") from exc

    def device_count(self) -> int:
        answer = self._call("nvmlDeviceGetCount")
        try:
            count = operator.index(answer)
        except TypeError:
            count = -1
        if not 0 <= count <= MAX_DEVICE_COUNT:
            raise NvmlError(f"nvmlDeviceGetCount answered {_short_repr(answer)}, not a count")
        return count

    def handle(self, nvml_index: int) -> Any:
        return self._call("nvmlDeviceGetHandleByIndex", nvml_index)

    def handle_by_uuid(self, uuid: str) -> Any:
        return self._call("nvmlDeviceGetHandleByUUID", uuid)

    def name(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetName", handle))

    def uuid(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetUUID", handle))

    def memory(self, handle: Any) -> NvmlMemory:
        """Memory via the v2 structure, which agrees with nvidia-smi.

        Since driver R510 the v1 structure counts driver-reserved memory as used
        (615 MiB on an idle H200); gpustat and nvitop also ask for v2 first and
        fall back to v1 on drivers or bindings that lack it.
        """
        info = None
        if self._memory_v2 is not False:
            v2 = getattr(self._nv, "nvmlMemory_v2", None)
            try:
                info = None if v2 is None else self._nv.nvmlDeviceGetMemoryInfo(handle, version=v2)
            except Exception:  # v2 is optional: v1 below answers, or fails with its reason
                info = None
            if info is not None:
                self._memory_v2 = True
        if info is None:
            info = self._call("nvmlDeviceGetMemoryInfo", handle)
            # v1 answered where v2 did not: remembered, so later calls (one per VRAM
            # status) ask once, not twice. A transient failure of both stays unknown.
            self._memory_v2 = False
        return NvmlMemory(_mib(info, "total"), _mib(info, "used"), _mib(info, "free"))

    def _device_memory(self, handle: Any) -> NvmlMemory | None:
        try:
            return self.memory(handle)
        except NvmlError as exc:
            if exc.not_supported:
                return None
            raise

    def device(self, nvml_index: int) -> NvmlDevice:
        handle = self.handle(nvml_index)
        return NvmlDevice(
            nvml_index, self.name(handle), self.uuid(handle), self._device_memory(handle)
        )

    def device_by_uuid(self, uuid: str, nvml_index: int) -> NvmlDevice:
        handle = self.handle_by_uuid(uuid)
        return NvmlDevice(
            nvml_index, self.name(handle), self.uuid(handle), self._device_memory(handle)
        )


def _mib(info: object, field: str) -> float:
    """One field of NVML's memory structure (bytes) in MiB; NaN where it is not a number."""
    try:
        return float(getattr(info, field)) / BYTES_PER_MIB
    except OverflowError:  # an integer too large for a float
        return math.inf
    except Exception:  # missing field, None, a string: judged as nonsense later
        return math.nan


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _text(value: object) -> str:
    """A name or UUID as text: bytes from old bindings decoded, undecodable bytes replaced.

    A name a driver answers in some other encoding must not stop detection; control
    characters are replaced too, since the name is printed to the user's terminal.
    """
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", errors="replace")
    elif isinstance(value, str):
        text = value
    else:
        text = _short_repr(value)
    return printable(text)
