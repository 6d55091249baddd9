"""Shared fixtures: fake NVML and torch, and isolation from the host and from Hydra's globals.

Tests marked `gpu` use the real NVML and are skipped where it finds no GPU. Every other
test runs with:
- a `pynvml` that has no driver (so nothing reaches a real GPU by accident; use
  the `fake_nvml` fixture to give it GPUs);
- no CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER, AVATAR_PROFILE or HYDRA_FULL_ERROR from the
  host, and none set by the test left behind;
- Hydra's singletons (ConfigStore, GlobalHydra) and OmegaConf's resolvers
  restored after the test, so one test's `install()` or compose never leaks into the next.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import FakeCuda, FakeGPU, FakeNvmlModule, fake_pynvml, fake_torch
from hydra_state import hydra_state_restored

HOST_ENV_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "AVATAR_PROFILE", "HYDRA_FULL_ERROR")


@functools.cache
def real_nvidia_gpu_present() -> bool:
    """Whether the real NVML answers with at least one GPU (checked once per session)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no bindings, no driver, or a broken one: no GPU tests here
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False
    finally:
        pynvml.nvmlShutdown()


@pytest.fixture(autouse=True)
def isolate_from_host(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real NVML and no host GPU settings, except in tests marked `gpu`."""
    if request.node.get_closest_marker("gpu") is not None:
        if not real_nvidia_gpu_present():
            pytest.skip("needs an NVIDIA GPU and driver (NVML found none)")
        return
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(library_missing=True))
    for name in HOST_ENV_VARS:
        # set, then delete: monkeypatch then also removes a value the test itself sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def restore_hydra_state() -> Iterator[None]:
    """Every test leaves Hydra's and OmegaConf's global state as it found it."""
    with hydra_state_restored():
        yield


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeNvmlModule]:
    """Factory: `fake_nvml([FakeGPU("RTX 3080", 10240)], **options)` installs a fake pynvml.

    Takes the options of `fakes.fake_pynvml` (fail_on, library_missing, v2_supported, ...)
    and returns the fake, whose `calls` and `gpus` a test may inspect or change.
    """

    def install(gpus: list[FakeGPU] | tuple[FakeGPU, ...] = (), **options: Any) -> FakeNvmlModule:
        nv = fake_pynvml(gpus, **options)
        monkeypatch.setitem(sys.modules, "pynvml", nv)
        return nv

    return install


@pytest.fixture
def fake_torch_cuda(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeCuda]:
    """Factory: `fake_torch_cuda(reserved_mib=..., allocated_mib=..., gpu=...)` puts a
    fake `torch` (with that `torch.cuda`) in sys.modules and returns the FakeCuda."""

    def install(**options: Any) -> FakeCuda:
        cuda = FakeCuda(**options)
        monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda))
        return cuda

    return install


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import torch` fail, as where torch is not installed."""
    monkeypatch.setitem(sys.modules, "torch", None)
