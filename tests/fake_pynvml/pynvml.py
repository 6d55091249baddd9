"""Drop-in `pynvml` for subprocess tests: the fake from tests/fakes.py, set up from the env.

Put this folder first on PYTHONPATH (`fakes.fake_nvml_env()` does) and set
AVATAR_FAKE_GPUS to a JSON list such as
`[{"name": "NVIDIA GeForce RTX 3080", "total_mib": 10240, "used_mib": 300}]`
(optional "uuid"): `[]` is a driver with no GPU; unset is no driver at all
(`nvmlInit` raises NVMLError_LibraryNotFound). AVATAR_FAKE_NVML_FAIL=<function name>
makes that NVML function raise NVMLError, or with AVATAR_FAKE_NVML_RAISE=<a builtin
exception's name, e.g. RuntimeError> that exception, as a broken binding would.
"name_hex" in place of "name" gives a name of raw bytes (not necessarily UTF-8).
AVATAR_FAKE_NVML_HOLD=<dir> holds sweep jobs: the first process to call nvmlInit (the
command itself) and the first call of any other process pass, every later call from
another process waits until a signal ends it, so a test can interrupt a sweep with a
known number of jobs done (tickets are files in <dir>).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

_FAKES_PATH = Path(__file__).resolve().parent.parent / "fakes.py"


def _load_fakes():
    """tests/fakes.py by path, so there is one fake, whatever sys.path holds."""
    existing = sys.modules.get("fakes")
    if existing is not None and Path(getattr(existing, "__file__", "")).resolve() == _FAKES_PATH:
        return existing
    spec = importlib.util.spec_from_file_location("_avatar_test_fakes", _FAKES_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


_fakes = _load_fakes()
_gpus_json = os.environ.get(_fakes.GPUS_ENV)
_raise = os.environ.get(_fakes.RAISE_ENV)
_fake = _fakes.fake_pynvml(
    _fakes.gpus_from_json(_gpus_json) if _gpus_json is not None else [],
    library_missing=_gpus_json is None,
    fail_on=os.environ.get(_fakes.FAIL_ENV) or None,
    fail_with=_fakes.builtin_error(_raise) if _raise else None,
)
globals().update({k: v for k, v in vars(_fake).items() if not k.startswith("__")})


def _held(init):
    """nvmlInit behind the AVATAR_FAKE_NVML_HOLD gate (see the module's docstring)."""
    hold = Path(os.environ[_fakes.HOLD_ENV])
    me = str(os.getpid()).encode()

    def _take(name: str) -> bool:
        try:
            fd = os.open(hold / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, me)
        os.close(fd)
        return True

    def gated(*args, **kwargs):
        if not _take("command") and (hold / "command").read_bytes() != me:
            ticket = 0
            while not _take(f"job-{ticket}"):
                ticket += 1
            deadline = time.monotonic() + 300  # a test that failed early leaks no process
            while ticket > 0 and time.monotonic() < deadline:  # until a signal (Ctrl-C)
                time.sleep(0.05)
        return init(*args, **kwargs)

    return gated


if os.environ.get(_fakes.HOLD_ENV):
    nvmlInit = _held(nvmlInit)  # noqa: F821 - set by globals().update above
