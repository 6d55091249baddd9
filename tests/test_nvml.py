"""The NVML adapter against the fake pynvml: memory as nvidia-smi shows it, errors as one type."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeGPU, fake_nvml_env, fake_pynvml

from avatar.hardware.nvml import Nvml, NvmlError

# An idle card as a driver >= R510 reports it: nothing used, 615 MiB kept by the driver.
IDLE_H200 = dict(name="NVIDIA H200", total_mib=143771, used_mib=0, reserved_mib=615)


def test_memory_uses_v2_so_driver_reserved_memory_is_not_counted_as_used() -> None:
    with Nvml(fake_pynvml([FakeGPU(**IDLE_H200)])) as nvml:
        memory = nvml.memory(nvml.handle(0))

    assert memory.used_mib == 0  # what nvidia-smi shows
    assert memory.total_mib == 143771
    assert memory.free_mib == 143771 - 615


@pytest.mark.parametrize(
    "options", [{"v2_supported": False}, {"old_bindings": True}], ids=["old driver", "old bindings"]
)
def test_memory_falls_back_to_v1_where_v2_is_unavailable(options: dict[str, bool]) -> None:
    with Nvml(fake_pynvml([FakeGPU(**IDLE_H200)], **options)) as nvml:
        memory = nvml.memory(nvml.handle(0))

    assert memory.used_mib == 615  # v1 counts the driver's share as used
    assert memory.free_mib == 143771 - 615


def test_device_reads_name_uuid_and_memory_in_mib() -> None:
    gpu = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300.5)
    with Nvml(fake_pynvml([gpu])) as nvml:
        device = nvml.device(0)

    assert (device.nvml_index, device.name, device.uuid) == (0, gpu.name, gpu.uuid)
    assert (device.memory.total_mib, device.memory.used_mib) == (10240, 300.5)
    assert device.memory.free_mib == 10240 - 300.5


def test_names_and_uuids_from_old_bindings_are_decoded() -> None:
    gpu = FakeGPU("Tesla T4", total_mib=15360)
    with Nvml(fake_pynvml([gpu], strings_as_bytes=True)) as nvml:
        device = nvml.device(0)

    assert (device.name, device.uuid) == ("Tesla T4", gpu.uuid)


def test_mig_instance_is_read_by_uuid() -> None:
    mig = FakeGPU("NVIDIA A100 MIG 3g.20gb", total_mib=19968, uuid="MIG-1234-abcd")
    with Nvml(fake_pynvml([FakeGPU("NVIDIA A100", 40960)], mig_devices=[mig])) as nvml:
        device = nvml.device_by_uuid("MIG-1234-abcd", nvml_index=-1)

    assert (device.name, device.memory.total_mib) == (mig.name, 19968)


def test_no_driver_is_reported_as_library_missing() -> None:
    with pytest.raises(NvmlError) as raised:
        Nvml(fake_pynvml(library_missing=True))

    assert raised.value.library_missing


def test_missing_bindings_are_reported_as_library_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError

    with pytest.raises(NvmlError, match="nvidia-ml-py") as raised:
        Nvml()

    assert raised.value.library_missing


def test_real_bindings_without_a_driver_are_reported_as_library_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "pynvml")  # the autouse fake: import the real bindings
    real = importlib.import_module("pynvml")
    try:
        real.nvmlInit()
    except real.NVMLError_LibraryNotFound:
        pass
    else:
        real.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")

    with pytest.raises(NvmlError) as raised:
        Nvml(real)

    assert raised.value.library_missing


def test_without_a_driver_the_real_bindings_are_not_imported_and_say_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No driver library: the answer pynvml would give, without its 40 ms import."""
    monkeypatch.delitem(sys.modules, "pynvml")  # the autouse fake: the real bindings
    from avatar.hardware import nvml as adapter

    if adapter._library_loads("libnvidia-ml.so.1") or not sys.platform.startswith("linux"):
        pytest.skip("this machine has an NVIDIA driver library (or is not Linux)")

    with pytest.raises(NvmlError) as shortcut:
        Nvml()
    assert "pynvml" not in sys.modules

    real = importlib.import_module("pynvml")
    with pytest.raises(NvmlError) as asked:
        Nvml(real)
    assert (str(shortcut.value), shortcut.value.library_missing) == (
        str(asked.value),
        asked.value.library_missing,
    )


@pytest.mark.parametrize(
    "function",
    ["nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetName", "nvmlDeviceGetUUID"],
)
def test_a_failing_call_raises_nvml_error_naming_the_call(function: str) -> None:
    nv = fake_pynvml([FakeGPU("RTX 3080", 10240)], fail_on=function)
    with Nvml(nv) as nvml, pytest.raises(NvmlError, match=function) as raised:
        nvml.device(nvml.device_count() - 1)

    assert not raised.value.library_missing


def test_failing_memory_query_raises_even_after_the_v1_fallback() -> None:
    nv = fake_pynvml([FakeGPU("RTX 3080", 10240)], fail_on="nvmlDeviceGetMemoryInfo")
    with Nvml(nv) as nvml, pytest.raises(NvmlError, match="nvmlDeviceGetMemoryInfo"):
        nvml.memory(nvml.handle(0))


def test_a_failing_init_is_not_reported_as_library_missing() -> None:
    with pytest.raises(NvmlError) as raised:
        Nvml(fake_pynvml([FakeGPU("RTX 3080", 10240)], fail_on="nvmlInit"))

    assert not raised.value.library_missing


def test_session_shuts_nvml_down_once_even_when_closed_twice() -> None:
    nv = fake_pynvml([FakeGPU("RTX 3080", 10240)])
    with Nvml(nv) as nvml:
        nvml.device_count()
        nvml.close()

    assert nv.initialized == 0
    assert nv.calls.count("nvmlShutdown") == 1


# --------------------------------------------------- the drop-in pynvml for subprocesses

PROBE = """
import pynvml
try:
    pynvml.nvmlInit()
except pynvml.NVMLError_LibraryNotFound:
    print("library missing")
else:
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            m = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
            print(pynvml.nvmlDeviceGetName(h), m.total // 2**20, m.used // 2**20)
        print("count", pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError as exc:
        print("error", exc)
"""


@pytest.mark.parametrize(
    ("gpus", "fail_on", "expected"),
    [
        (None, None, "library missing"),
        ([], None, "count 0"),
        (
            [FakeGPU("RTX 3080", 10240, 300), FakeGPU("T4", 15360)],
            None,
            "RTX 3080 10240 300\nT4 15360 0\ncount 2",
        ),
        ([FakeGPU("RTX 3080", 10240)], "nvmlDeviceGetName", "error Unknown Error"),
    ],
    ids=["unset", "no gpu", "two gpus", "failing call"],
)
def test_drop_in_pynvml_is_configured_by_the_environment(
    tmp_path: Path, gpus: list[FakeGPU] | None, fail_on: str | None, expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env=fake_nvml_env(gpus, fail_on=fail_on),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
