"""Small fakes of NVML (`pynvml`) and `torch.cuda`, shared by every test.

In-process: put `fake_pynvml([...])` in `sys.modules["pynvml"]` (the `fake_nvml`
fixture in conftest.py does this) and `fake_torch(FakeCuda(...))` in
`sys.modules["torch"]` (the `fake_torch` fixture). Subprocesses: `fake_nvml_env(...)`
gives an environment whose `pynvml` is `tests/fake_pynvml/pynvml.py`, which builds
the same fake from the `AVATAR_FAKE_GPUS` variable.

Import as `from fakes import FakeGPU, fake_pynvml` (pytest puts tests/ on sys.path).

The fake does what the real bindings do where avatar depends on it: memory in
bytes; `nvmlInit` raising `NVMLError_LibraryNotFound` without a driver; calls
before init raising `NVMLError_Uninitialized`; v1 memory counting the
driver-reserved memory as used (driver R510+), v2 not; NVML ignoring
CUDA_VISIBLE_DEVICES (it always lists every GPU).
"""

from __future__ import annotations

import builtins
import itertools
import json
import math
import os
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
TESTS_DIR = Path(__file__).resolve().parent
FAKE_PYNVML_DIR = TESTS_DIR / "fake_pynvml"  # first on PYTHONPATH: `import pynvml` finds the fake
# Every NVML call avatar's status path makes (detection, then the VRAM query), in order;
# tests/test_faults.py fails when the status path starts calling one not listed here.
DETECTION_CALLS = (
    "nvmlInit",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetMemoryInfo",
)
GPUS_ENV = "AVATAR_FAKE_GPUS"
FAIL_ENV = "AVATAR_FAKE_NVML_FAIL"
HOLD_ENV = "AVATAR_FAKE_NVML_HOLD"  # a folder: later sweep jobs wait in nvmlInit (fake_pynvml)
RAISE_ENV = "AVATAR_FAKE_NVML_RAISE"  # a builtin exception's name: what the failing call raises

_uuid_counter = itertools.count()


@dataclass
class FakeGPU:
    """One fake NVIDIA GPU. Mutable: change `used_mib` to simulate a model loading.

    `used_mib` is what nvidia-smi (and NVML's v2 structure) shows; `reserved_mib` is
    the driver's own share, which the v1 structure adds to used.
    """

    name: str | bytes  # bytes are answered as they are, as old bindings answer (any encoding)
    total_mib: float
    used_mib: float = 0
    uuid: str = ""  # "GPU-..." generated when empty; "MIG-..." for a MIG instance
    reserved_mib: float = 0
    process_pids: tuple[int, ...] = ()  # processes holding a CUDA context on it
    # What the driver answers as free, where it disagrees with total - used - reserved.
    reported_free_mib: float | None = None

    def __post_init__(self) -> None:
        if not self.uuid:
            n = next(_uuid_counter)
            self.uuid = f"GPU-{n:08x}-fake-4000-8000-{n:012x}"

    @property
    def free_mib(self) -> float:
        if self.reported_free_mib is not None:
            return self.reported_free_mib
        return self.total_mib - self.used_mib - self.reserved_mib

    def to_json(self) -> dict[str, Any]:
        """JSON for AVATAR_FAKE_GPUS (NaN and Infinity as Python's json writes them)."""
        name = (
            {"name_hex": self.name.hex()} if isinstance(self.name, bytes) else {"name": self.name}
        )
        return {
            **name,
            "total_mib": self.total_mib,
            "used_mib": self.used_mib,
            "uuid": self.uuid,
            "reserved_mib": self.reserved_mib,
            "reported_free_mib": self.reported_free_mib,
        }


# NVML return codes (the real values), used for str(error) and for `.value`.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_UNKNOWN = 999

_ERROR_TEXT = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):  # the classes below keep pynvml's names
    """Like pynvml.NVMLError: carries the NVML return code in `.value`."""

    def __init__(self, value: int = NVML_ERROR_UNKNOWN) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _ERROR_TEXT.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_Uninitialized(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_UNINITIALIZED)


class NVMLError_NotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_FOUND)


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_LIBRARY_NOT_FOUND)


class NVMLError_FunctionNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_FUNCTION_NOT_FOUND)


@dataclass(frozen=True)
class _Handle:
    gpu: FakeGPU


@dataclass
class _Memory:
    """The fields avatar reads from c_nvmlMemory_t / c_nvmlMemory_v2_t, in bytes."""

    total: int
    free: int
    used: int
    reserved: int = 0
    version: int = 0


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int


class FakeNvmlModule(types.ModuleType):
    """What `fake_pynvml()` returns. Tests may inspect or change its state:

    `gpus` (NVML order), `fail_on` (a function name or None, may be changed
    between calls), `calls` (the names of every NVML function called, in order),
    `initialized` (init/shutdown balance).
    """

    gpus: list[FakeGPU]
    fail_on: str | None
    calls: list[str]
    initialized: int


def fake_pynvml(
    gpus: Iterable[FakeGPU] = (),
    *,
    fail_on: str | None = None,
    fail_with: Exception | None = None,
    library_missing: bool = False,
    v2_supported: bool = True,
    old_bindings: bool = False,
    mig_devices: Iterable[FakeGPU] = (),
    strings_as_bytes: bool = False,
) -> FakeNvmlModule:
    """A module-like fake of nvidia-ml-py's `pynvml` for `gpus` (in NVML order).

    fail_on: name of an NVML function (e.g. "nvmlDeviceGetName") that raises
        NVMLError, as a driver error in the middle of a query would.
    fail_with: what `fail_on` raises instead of NVMLError(UNKNOWN): an NVMLError with
        another code (NOT_SUPPORTED), or what a broken binding raises (RuntimeError, OSError).
    library_missing: no driver: `nvmlInit` raises NVMLError_LibraryNotFound.
    v2_supported: False = an old driver: asking for `nvmlMemory_v2` raises
        NVMLError_FunctionNotFound, v1 still works.
    old_bindings: bindings that predate v2: no `nvmlMemory_v2` attribute and no
        `version` argument (passing one raises TypeError).
    mig_devices: MIG instances, reachable only by UUID (NVML's count leaves them out).
    strings_as_bytes: names and UUIDs come back as bytes, as in old bindings.
    """
    nv = FakeNvmlModule("pynvml")
    nv.__file__ = __file__
    nv.gpus = list(gpus)
    nv.fail_on = fail_on
    nv.calls = []
    nv.initialized = 0
    migs = list(mig_devices)

    for error in (
        NVMLError,
        NVMLError_Uninitialized,
        NVMLError_NotFound,
        NVMLError_LibraryNotFound,
        NVMLError_FunctionNotFound,
    ):
        setattr(nv, error.__name__, error)
    for code in (
        "NVML_ERROR_UNINITIALIZED",
        "NVML_ERROR_NOT_SUPPORTED",
        "NVML_ERROR_NOT_FOUND",
        "NVML_ERROR_LIBRARY_NOT_FOUND",
        "NVML_ERROR_FUNCTION_NOT_FOUND",
        "NVML_ERROR_UNKNOWN",
    ):
        setattr(nv, code, globals()[code])
    v2_version = 0x02000028  # pynvml.nvmlMemory_v2: sizeof(c_nvmlMemory_v2_t) | 2 << 24
    if not old_bindings:
        nv.nvmlMemory_v2 = v2_version

    def api(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Record the call, raise where told, and refuse calls before init."""
        name = fn.__name__

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nv.calls.append(name)
            if nv.fail_on == name:
                raise NVMLError(NVML_ERROR_UNKNOWN) if fail_with is None else fail_with
            if name != "nvmlInit" and nv.initialized <= 0:
                raise NVMLError_Uninitialized()
            return fn(*args, **kwargs)

        wrapper.__name__ = name
        setattr(nv, name, wrapper)
        return wrapper

    def text(value: str | bytes) -> str | bytes:
        return value.encode() if strings_as_bytes and isinstance(value, str) else value

    @api
    def nvmlInit() -> None:
        if library_missing:
            raise NVMLError_LibraryNotFound()
        nv.initialized += 1

    @api
    def nvmlShutdown() -> None:
        nv.initialized -= 1

    @api
    def nvmlDeviceGetCount() -> int:
        return len(nv.gpus)

    @api
    def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
        if not 0 <= index < len(nv.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(nv.gpus[index])

    @api
    def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> _Handle:
        wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in [*nv.gpus, *migs]:
            if gpu.uuid == wanted:
                return _Handle(gpu)
        raise NVMLError_NotFound()

    @api
    def nvmlDeviceGetName(handle: _Handle) -> str | bytes:
        return text(handle.gpu.name)

    @api
    def nvmlDeviceGetUUID(handle: _Handle) -> str | bytes:
        return text(handle.gpu.uuid)

    def memory(handle: _Handle, version: int | None = None) -> _Memory:
        gpu = handle.gpu
        total, used, reserved, free = (
            _bytes(x) for x in (gpu.total_mib, gpu.used_mib, gpu.reserved_mib, gpu.free_mib)
        )
        if not version:  # v1: driver-reserved memory counts as used
            return _Memory(total=total, free=free, used=used + reserved)
        if version != v2_version:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if not v2_supported:
            raise NVMLError_FunctionNotFound()
        return _Memory(total=total, free=free, used=used, reserved=reserved, version=version)

    if old_bindings:

        @api
        def nvmlDeviceGetMemoryInfo(handle: _Handle) -> _Memory:
            return memory(handle)

    else:

        @api
        def nvmlDeviceGetMemoryInfo(handle: _Handle, version: int | None = None) -> _Memory:
            return memory(handle, version)

    @api
    def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[_Process]:
        return [_Process(pid, 0) for pid in handle.gpu.process_pids]

    return nv


def _bytes(mib: float) -> int | float:
    """MiB as the bytes a driver answers; a value no integer holds (NaN, inf) passes as it is."""
    if isinstance(mib, int):
        return mib * MIB
    value = mib * MIB
    return round(value) if math.isfinite(value) else value


def builtin_error(name: str) -> Exception:
    """An instance of the builtin exception called `name` (AVATAR_FAKE_NVML_RAISE)."""
    error = getattr(builtins, name, None)
    if not (isinstance(error, type) and issubclass(error, Exception)):
        raise ValueError(f"{RAISE_ENV}={name!r} names no builtin exception")
    return error(f"fake {name} from the binding")


def gpus_from_json(text: str) -> list[FakeGPU]:
    """FakeGPUs from AVATAR_FAKE_GPUS: a JSON list of {"name", "total_mib", "used_mib", ...}.

    "name_hex" instead of "name" gives a name of raw bytes (JSON holds no bytes).
    """
    gpus = []
    for entry in json.loads(text):
        if "name_hex" in entry:
            entry["name"] = bytes.fromhex(entry.pop("name_hex"))
        gpus.append(FakeGPU(**entry))
    return gpus


def fake_nvml_env(
    gpus: Sequence[FakeGPU] | None,
    *,
    fail_on: str | None = None,
    base: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """An environment for a subprocess whose `import pynvml` gets the fake.

    gpus: the fake GPUs; `[]` = a driver with no GPU; None = no driver at all.
    Starts from `base` (os.environ by default) without CUDA_VISIBLE_DEVICES,
    CUDA_DEVICE_ORDER, AVATAR_PROFILE or HYDRA_FULL_ERROR, so the host's settings never leak in;
    `extra` adds variables (e.g. CUDA_VISIBLE_DEVICES="1,0").
    """
    env = dict(os.environ if base is None else base)
    host_settings = (
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "AVATAR_PROFILE",
        "HYDRA_FULL_ERROR",
    )
    for name in (*host_settings, GPUS_ENV, FAIL_ENV, RAISE_ENV, HOLD_ENV):
        env.pop(name, None)
    path = [str(FAKE_PYNVML_DIR), str(TESTS_DIR.parent)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    if gpus is not None:
        env[GPUS_ENV] = json.dumps([gpu.to_json() for gpu in gpus])
    if fail_on is not None:
        env[FAIL_ENV] = fail_on
    env.update(extra)
    return env


# ---------------------------------------------------------------- torch.cuda


@dataclass
class FakeCuda:
    """The part of `torch.cuda` avatar touches, for one device.

    `empty_cache()` gives torch's unused cache (reserved - allocated) back to
    `gpu` (its used_mib drops), as the real allocator does; `empty_cache_error`
    makes it raise instead. `gpu` also backs `mem_get_info`.
    """

    initialized: bool = True
    reserved_mib: float = 0
    allocated_mib: float = 0
    gpu: FakeGPU | None = None
    empty_cache_error: Exception | None = None
    empty_cache_calls: int = 0
    mem_get_info_calls: int = 0

    def is_initialized(self) -> bool:
        return self.initialized

    def is_available(self) -> bool:
        return self.gpu is not None

    def device_count(self) -> int:
        return 0 if self.gpu is None else 1

    def get_device_name(self, device: int | None = None) -> str:
        assert self.gpu is not None
        return self.gpu.name

    def memory_reserved(self, device: int | None = None) -> int:
        return round(self.reserved_mib * MIB)

    def memory_allocated(self, device: int | None = None) -> int:
        return round(self.allocated_mib * MIB)

    def mem_get_info(self, device: int | None = None) -> tuple[int, int]:
        self.mem_get_info_calls += 1
        assert self.gpu is not None, "mem_get_info on a fake without a GPU"
        self.initialized = True  # the real call creates a context
        return round(self.gpu.free_mib * MIB), round(self.gpu.total_mib * MIB)

    def empty_cache(self) -> None:
        self.empty_cache_calls += 1
        if self.empty_cache_error is not None:
            raise self.empty_cache_error
        freed_mib = self.reserved_mib - self.allocated_mib
        self.reserved_mib = self.allocated_mib
        if self.gpu is not None:
            self.gpu.used_mib -= freed_mib


def fake_torch(cuda: FakeCuda, *, hip: str | None = None) -> types.ModuleType:
    """A module-like fake of `torch` exposing `cuda`, `version.hip` and no MPS backend."""
    torch = types.ModuleType("torch")
    torch.__file__ = __file__
    torch.cuda = cuda  # type: ignore[attr-defined]
    torch.version = types.SimpleNamespace(hip=hip, cuda=None if hip else "12.4")  # type: ignore[attr-defined]
    torch.backends = types.SimpleNamespace(  # type: ignore[attr-defined]
        mps=types.SimpleNamespace(is_available=lambda: False)
    )
    return torch
