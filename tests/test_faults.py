"""Fault suite: whatever the driver, torch or the environment does wrong, avatar's status
ends in CPU mode with a warning, or in a clear error: never a traceback.

Each fault is injected where it happens for real (a fake NVML failing at one call, a torch
whose import or CUDA initialisation fails, a bad CUDA_VISIBLE_DEVICES, a profile file with
a wrong type) and the outcome is read where a user reads it: the status text built in this
process (load_config -> detection -> VRAM query -> render), or `python -m avatar` itself.
detect_gpu's and the VRAM manager's own unit tests live in test_hardware.py and test_vram.py.
"""

from __future__ import annotations

import importlib.abc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cli_helpers import run_avatar, status_profile, tree_snapshot, write_user_config
from fakes import DETECTION_CALLS, FakeCuda, FakeGPU, FakeNvmlModule, fake_torch

from avatar import detect_gpu, load_config
from avatar.cli.status_view import build_status, render_status

FakeNvml = Callable[..., FakeNvmlModule]
RTX3080 = "NVIDIA GeForce RTX 3080"

HARMLESS_CALLS = ("nvmlShutdown",)  # failing there changes nothing a user sees
STATUS_PATH_CALLS = DETECTION_CALLS + HARMLESS_CALLS


def rtx3080() -> FakeGPU:
    return FakeGPU(RTX3080, total_mib=10240, used_mib=300)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def status_text(overrides: Sequence[str] = ()) -> str:
    """What `python -m avatar` prints, built in this process as cli._app builds it."""
    cfg = load_config(list(overrides))
    detection = detect_gpu(cfg.gpu_index)
    report = build_status(cfg, detection=detection, reason="test")
    return render_status(report)


def active_profile(text: str) -> str:
    return status_profile(text)[0]


@pytest.fixture
def rocm_like_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where another GPU may exist (/dev/kfd is there), so detection tries torch
    when NVML has no driver."""
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/dev/kfd" or real_exists(p))


class _FailingImport(importlib.abc.MetaPathFinder):
    """Makes `import torch` raise `error`, as a broken install (missing CUDA libraries) does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise self.error


def torch_importing_with(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_FailingImport(error), *sys.meta_path])


class _CudaFailing(FakeCuda):
    """A torch.cuda whose calls fail, as they do when the CUDA (or HIP) runtime cannot start."""

    failing: tuple[str, ...] = ()

    def _fail(self, call: str) -> None:
        if call in self.failing:
            raise RuntimeError(f"CUDA error: initialization error (in {call})")

    def is_available(self) -> bool:
        self._fail("is_available")
        return super().is_available()

    def is_initialized(self) -> bool:
        self._fail("is_initialized")
        return super().is_initialized()

    def mem_get_info(self, device: int | None = None) -> tuple[int, int]:
        self._fail("mem_get_info")
        return super().mem_get_info(device)

    def memory_reserved(self, device: int | None = None) -> int:
        self._fail("memory_reserved")
        return super().memory_reserved(device)


# ---------------------------------------------------------------- NVML failing at each call


def test_the_fault_list_names_every_nvml_call_the_status_path_makes(fake_nvml: FakeNvml) -> None:
    nv = fake_nvml([rtx3080()])

    status_text()

    assert set(nv.calls) <= set(STATUS_PATH_CALLS), "add the new NVML call to the fault suite"
    assert set(DETECTION_CALLS) <= set(nv.calls)


@pytest.mark.parametrize("call", DETECTION_CALLS)
def test_nvml_failing_during_detection_gives_cpu_mode_and_a_warning_naming_the_call(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture, call: str
) -> None:
    fake_nvml([rtx3080()], fail_on=call)

    text = status_text()

    assert "CPU mode: NVML failed" in text
    assert active_profile(text) == "cpu"
    assert any(call in w and "CPU mode" in w for w in warnings_logged(caplog))


def test_nvml_failing_to_shut_down_changes_nothing(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml([rtx3080()], fail_on="nvmlShutdown")

    text = status_text()

    assert active_profile(text) == "rtx3080"
    assert RTX3080 in text
    assert warnings_logged(caplog) == []


@pytest.mark.parametrize(
    "call", ["nvmlInit", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetMemoryInfo"]
)
def test_nvml_failing_after_detection_reports_zeros_and_a_warning(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture, call: str
) -> None:
    nv = fake_nvml([rtx3080()])
    cfg = load_config()
    detection = detect_gpu()
    nv.fail_on = call  # the driver goes away between detection and the VRAM query

    report = build_status(cfg, detection=detection, reason="test")
    text = render_status(report)

    assert not report.vram.ok
    assert (report.vram.total_mib, report.vram.free_mib) == (0, 0)
    assert report.check.fits is not True  # no "OK" from numbers that were never read
    assert RTX3080 in text
    assert any("VRAM status query" in w and "failed" in w for w in warnings_logged(caplog))


# ---------------------------------------------------------------- library missing or broken


def _bindings_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError


def _driver_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    pass  # the autouse fake NVML has no driver: nvmlInit raises NVMLError_LibraryNotFound


def _library_fails_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = sys.modules["pynvml"]

    def init() -> None:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file: No such file")

    monkeypatch.setattr(nv, "nvmlInit", init)


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (_bindings_missing, "nvidia-ml-py"),
        (_driver_missing, "NVML Shared Library Not Found"),
        (_library_fails_to_load, "libnvidia-ml.so.1"),
    ],
    ids=["bindings-missing", "driver-missing", "library-fails-to-load"],
)
def test_nvml_library_missing_gives_cpu_mode_and_a_warning_saying_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: Callable[[pytest.MonkeyPatch], None],
    said: str,
) -> None:
    fault(monkeypatch)

    text = status_text()

    assert "CPU mode: no NVIDIA driver found" in text
    assert said in text
    assert active_profile(text) == "cpu"
    assert any(said in w for w in warnings_logged(caplog))


def _version_mismatch(nv: FakeNvmlModule) -> type[Exception]:
    """pynvml's NVMLError_LibRmVersionMismatch (NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18):
    the driver was updated but the kernel module is still the old one (until a reboot)."""

    class NVMLError_LibRmVersionMismatch(nv.NVMLError):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__(18)

        def __str__(self) -> str:
            return "RM has detected an NVML/RM version mismatch."

    return NVMLError_LibRmVersionMismatch


def test_driver_library_mismatch_gives_cpu_mode_without_trying_torch(
    fake_nvml: FakeNvml,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rocm_like_machine: None,
) -> None:
    nv = fake_nvml([rtx3080()])
    mismatch = _version_mismatch(nv)

    def init() -> None:
        raise mismatch()

    monkeypatch.setattr(nv, "nvmlInit", init)
    probed: list[bool] = []

    text = status_text()
    detection = detect_gpu(torch_probe=lambda: probed.append(True) or [])

    assert "CPU mode: NVML failed" in text
    assert "version mismatch" in text
    assert active_profile(text) == "cpu"
    assert any("version mismatch" in w for w in warnings_logged(caplog))
    assert detection.cpu_mode and probed == []  # a driver is there: torch would find no more


# ---------------------------------------------------------------- torch and CUDA failing


@pytest.mark.parametrize(
    "error",
    [
        ImportError("No module named 'torch'"),
        OSError("libcudart.so.13: cannot open shared object file: No such file or directory"),
        RuntimeError("operator torchvision::nms does not exist"),
    ],
    ids=["not-installed", "cuda-libraries-missing", "broken-install"],
)
def test_torch_failing_to_import_gives_cpu_mode_and_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rocm_like_machine: None,
    error: Exception,
) -> None:
    torch_importing_with(monkeypatch, error)

    text = status_text()

    assert "CPU mode: no NVIDIA driver found, and torch" in text
    assert active_profile(text) == "cpu"
    assert any("torch" in w and "CPU mode" in w for w in warnings_logged(caplog))


@pytest.mark.parametrize("failing", ["is_available", "mem_get_info"])
def test_cuda_failing_to_initialise_gives_cpu_mode_and_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rocm_like_machine: None,
    failing: str,
) -> None:
    cuda = _CudaFailing(initialized=False, gpu=FakeGPU("AMD Radeon RX 7900 XTX", 24560))
    cuda.failing = (failing,)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda, hip="6.2"))

    text = status_text()

    assert "CPU mode" in text and "initialization error" in text
    assert active_profile(text) == "cpu"
    assert any("initialization error" in w for w in warnings_logged(caplog))


@pytest.mark.parametrize("failing", ["is_initialized", "memory_reserved"])
def test_torch_failing_in_a_process_that_uses_cuda_never_breaks_status(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    gpu = rtx3080()
    fake_nvml([gpu])
    cuda = _CudaFailing(initialized=True, reserved_mib=1024, allocated_mib=512, gpu=gpu)
    cuda.failing = (failing,)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda))

    text = status_text()

    assert active_profile(text) == "rtx3080"
    assert RTX3080 in text


# ---------------------------------------------------------------- CUDA_VISIBLE_DEVICES


def two_gpus() -> list[FakeGPU]:
    return [
        FakeGPU("NVIDIA GeForce RTX 3050", total_mib=4096, used_mib=200),
        FakeGPU(RTX3080, total_mib=10240, used_mib=300),
    ]


@pytest.mark.parametrize(
    ("value", "gpu_shown"),
    [("abc", None), ("GPU-nope", None), ("1,abc", RTX3080), ("0,0", None)],
)
def test_malformed_cuda_visible_devices_gives_a_warning_never_a_crash(
    tmp_path: Path, value: str, gpu_shown: str | None
) -> None:
    result = run_avatar(cwd=tmp_path, gpus=two_gpus(), env={"CUDA_VISIBLE_DEVICES": value})

    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    assert f"CUDA_VISIBLE_DEVICES={value!r}" in result.output
    if gpu_shown is None:
        assert "CPU mode" in result.stdout
        assert status_profile(result.stdout)[0] == "cpu"
    else:
        assert f"GPU 0  {gpu_shown}" in result.stdout


def test_gpu_index_hidden_by_cuda_visible_devices_is_a_clear_error(tmp_path: Path) -> None:
    result = run_avatar(
        "gpu_index=1", cwd=tmp_path, gpus=two_gpus(), env={"CUDA_VISIBLE_DEVICES": "1"}
    )

    assert result.returncode == 1
    assert "Traceback" not in result.output
    message = result.error_message()
    assert message.startswith("Error: gpu_index=1")
    assert "visible GPUs are 0" in message


# ---------------------------------------------------------------- the CLI, end to end


@pytest.mark.parametrize(
    ("gpus", "fail", "said"),
    [
        (None, None, "no NVIDIA driver found"),
        ([], None, "NVML lists no GPU"),
        ([rtx3080()], "nvmlDeviceGetMemoryInfo", "NVML failed (nvmlDeviceGetMemoryInfo"),
    ],
    ids=["no-driver", "driver-without-gpu", "nvml-fails-mid-query"],
)
def test_cli_without_a_usable_gpu_runs_in_cpu_mode_and_says_why(
    tmp_path: Path, gpus: list[FakeGPU] | None, fail: str | None, said: str
) -> None:
    env = {"AVATAR_FAKE_NVML_FAIL": fail} if fail else {}

    result = run_avatar(cwd=tmp_path, gpus=gpus, env=env)

    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    assert f"CPU mode: {said}" in result.stdout
    assert status_profile(result.stdout)[0] == "cpu"
    assert "running in CPU mode" in result.stderr  # the one warning, on stderr
    assert list(tmp_path.iterdir()) == []


PROFILE_KEYS = {
    "name": "big",
    "description": "a user's profile",
    "accelerator": "gpu",
    "vram_min_mib": 40960,
    "nominal_vram_mib": 40960,
    "precision": "fp16",
    "quality": "high",
    "batch_size": 4,
    "steps": 50,
    "safety_margin_mib": 1024,
}


def profile_yaml(**changes: object) -> str:
    return "".join(f"{key}: {value}\n" for key, value in {**PROFILE_KEYS, **changes}.items())


@pytest.mark.parametrize(
    ("changes", "args", "said"),
    [
        ({"vram_min_mib": "lots"}, (), ["big.yaml", "vram_min_mib", "'lots'"]),
        ({"accelerator": "tpu"}, (), ["big.yaml", "accelerator", "'tpu'"]),
        ({"batch_size": "many"}, ("profile=big",), ["profile/big", "batch_size", "'many'"]),
    ],
    ids=["threshold-auto", "accelerator-auto", "batch-size-selected"],
)
def test_a_profile_file_with_a_wrong_type_is_a_clear_error(
    tmp_path: Path, changes: dict[str, object], args: tuple[str, ...], said: list[str]
) -> None:
    config_dir = tmp_path / "conf"
    write_user_config(config_dir / "profile", "big.yaml", profile_yaml(**changes))
    work = tmp_path / "work"
    work.mkdir()
    before = tree_snapshot(tmp_path)

    result = run_avatar("--config-dir", str(config_dir), *args, cwd=work, gpus=[rtx3080()])

    assert result.returncode == 1
    assert "Traceback" not in result.output
    message = result.error_message()
    for part in said:
        assert part in message
    assert tree_snapshot(tmp_path) == before
