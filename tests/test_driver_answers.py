"""Driver answers avatar does not expect (issue 10, class 4) and the sizes the VRAM layer
refuses (class 7's VRAM part).

Whatever the NVML bindings answer or raise, detection ends in a usable GPU or in CPU mode
with one warning, never a crash; every figure it returns makes sense (a GPU reporting
nonsense is named and skipped, a device with no memory of its own is asked about through
torch). Each answer is injected where it happens for real: the fake `pynvml` from
tests/fakes.py (in-process, or through AVATAR_FAKE_GPUS in a subprocess), a file called
pynvml.py that hides the bindings, a torch that knows a unified-memory device.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_helpers import run_avatar, status_profile
from fakes import (
    DETECTION_CALLS,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNKNOWN,
    FakeCuda,
    FakeGPU,
    FakeNvmlModule,
    NVMLError,
    fake_pynvml,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from avatar.config import load_config
from avatar.hardware import GPUInfo, detect_gpu
from avatar.hardware.nvml import Nvml
from avatar.hardware.types import GPUBackend
from avatar.vram import VRAMManager

FakeNvml = Callable[..., FakeNvmlModule]
FakeTorchCuda = Callable[..., FakeCuda]

# What broken bindings have raised besides NVMLError.
BINDING_ERRORS = (RuntimeError, OSError, AttributeError, TypeError, ValueError, KeyError)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def rtx3080(**changes: object) -> FakeGPU:
    return FakeGPU(**{"name": "NVIDIA GeForce RTX 3080", "total_mib": 10240, **changes})


def assert_figures_make_sense(gpu: GPUInfo) -> None:
    assert math.isfinite(gpu.total_mib) and gpu.total_mib > 0, gpu
    assert 0 <= gpu.used_mib <= gpu.total_mib, gpu
    assert 0 <= gpu.free_mib <= gpu.total_mib, gpu


# ------------------------------------------------------------------ names


def test_a_gpu_name_that_is_not_utf8_is_shown_with_replacement_characters(
    fake_nvml: FakeNvml,
) -> None:
    fake_nvml([rtx3080(name=b"NVIDIA \xff\xfe RTX 3080")])

    detection = detect_gpu()

    assert detection.chosen is not None
    assert detection.chosen.name == "NVIDIA \ufffd\ufffd RTX 3080"


def test_control_characters_in_a_gpu_name_never_reach_the_terminal(fake_nvml: FakeNvml) -> None:
    fake_nvml([rtx3080(name="RTX\x1b[2J 3080\n")])

    detection = detect_gpu()

    assert detection.chosen is not None
    assert detection.chosen.name.isprintable()
    assert detection.chosen.name.startswith("RTX") and "3080" in detection.chosen.name


# ------------------------------------------------------------------ exceptions


@pytest.mark.parametrize("error", BINDING_ERRORS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("call", DETECTION_CALLS)
def test_a_binding_raising_anything_at_any_call_gives_cpu_mode_and_one_warning(
    fake_nvml: FakeNvml,
    caplog: pytest.LogCaptureFixture,
    call: str,
    error: type[Exception],
) -> None:
    nv = fake_nvml([rtx3080()], fail_on=call, fail_with=error(f"{error.__name__} at {call}"))

    detection = detect_gpu()

    assert call in nv.calls
    assert detection.cpu_mode
    (warning,) = warnings_logged(caplog)
    assert "running in CPU mode" in warning
    assert f"{error.__name__} at {call}" in warning  # what the binding said, for a bug report
    assert nv.initialized == 0  # NVML was shut down again wherever init had succeeded


def test_an_nvml_error_whose_own_text_fails_is_still_reported(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    """pynvml's NVMLError.__str__ asks the driver library, which may fail again."""

    class Unprintable(NVMLError):
        def __str__(self) -> str:
            raise RuntimeError("nvmlErrorString failed")

    fake_nvml([rtx3080()], fail_on="nvmlDeviceGetName", fail_with=Unprintable(NVML_ERROR_UNKNOWN))

    detection = detect_gpu()

    assert detection.cpu_mode
    (warning,) = warnings_logged(caplog)
    assert "nvmlDeviceGetName" in warning and "Unprintable" in warning


@pytest.mark.parametrize(
    "body",
    ["raise RuntimeError('half-installed bindings')", "raise OSError('libnvidia-ml.so: bad ELF')"],
    ids=["RuntimeError", "OSError"],
)
def test_bindings_that_fail_to_import_give_cpu_mode_and_a_warning_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, body: str
) -> None:
    (tmp_path / "pynvml.py").write_text(body + "\n")
    monkeypatch.delitem(sys.modules, "pynvml")
    monkeypatch.syspath_prepend(str(tmp_path))

    detection = detect_gpu()

    assert detection.cpu_mode
    (warning,) = warnings_logged(caplog)
    assert str(tmp_path / "pynvml.py") in warning
    assert body.split("(")[0].removeprefix("raise ") in warning


@pytest.mark.parametrize(
    "body",
    ["VERSION = 'my own helper'\n", "def nvmlInit():\n    pass\n"],
    ids=["unrelated-module", "part-of-the-api"],
)
def test_a_stray_pynvml_hiding_the_bindings_gives_cpu_mode_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, body: str
) -> None:
    (tmp_path / "pynvml.py").write_text(body)
    monkeypatch.delitem(sys.modules, "pynvml")
    monkeypatch.syspath_prepend(str(tmp_path))

    detection = detect_gpu()

    assert detection.cpu_mode
    (warning,) = warnings_logged(caplog)
    assert str(tmp_path / "pynvml.py") in warning
    assert "rename it" in warning and "running in CPU mode" in warning


def test_a_device_count_that_is_not_a_count_gives_cpu_mode(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    nv = fake_nvml([rtx3080()])
    nv.nvmlDeviceGetCount = lambda: -1  # type: ignore[attr-defined]

    detection = detect_gpu()

    assert detection.cpu_mode
    (warning,) = warnings_logged(caplog)
    assert "nvmlDeviceGetCount answered -1" in warning


# ------------------------------------------------------------------ nonsense figures

NONSENSE = {
    "total-nan": {"total_mib": math.nan},
    "total-inf": {"total_mib": math.inf},
    "total-negative": {"total_mib": -10240},
    "total-below-1-MiB": {"total_mib": 0.25},
    "used-above-total": {"used_mib": 30000},
    "used-negative": {"used_mib": -300},
    "used-nan": {"used_mib": math.nan},
    "free-above-total": {"reported_free_mib": 50000},
    "free-negative": {"reported_free_mib": -1},
    "used-plus-free-above-total": {"used_mib": 20000, "reported_free_mib": 20000},
    "total-huge": {"total_mib": 10**400},
}


@pytest.mark.parametrize("changes", NONSENSE.values(), ids=NONSENSE.keys())
def test_a_gpu_reporting_nonsense_is_named_and_skipped_for_a_sane_one(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture, changes: dict[str, float]
) -> None:
    fake_nvml([FakeGPU("Broken card", **{"total_mib": 24576, **changes}), rtx3080()])

    detection = detect_gpu()

    assert detection.chosen is not None
    assert (detection.chosen.index, detection.chosen.name) == (1, "NVIDIA GeForce RTX 3080")
    assert [gpu.name for gpu in detection.gpus] == ["NVIDIA GeForce RTX 3080"]
    (warning,) = warnings_logged(caplog)
    assert "GPU 0 (Broken card)" in warning and "make no sense" in warning


@pytest.mark.parametrize("changes", NONSENSE.values(), ids=NONSENSE.keys())
def test_a_lone_gpu_reporting_nonsense_gives_the_cpu_profile_not_low_vram(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture, changes: dict[str, float]
) -> None:
    fake_nvml([FakeGPU("Broken card", **{"total_mib": 24576, **changes})])

    cfg = load_config([])

    assert cfg.profile.name == "cpu"
    (warning,) = warnings_logged(caplog)
    assert "Broken card" in warning and "running in CPU mode" in warning


# ------------------------------------------------------------------ unified memory

UNIFIED = {
    "total-0": ({"total_mib": 0, "used_mib": 0}, {}),
    "not-supported": (
        {},
        {
            "fail_on": "nvmlDeviceGetMemoryInfo",
            "fail_with": NVMLError(NVML_ERROR_NOT_SUPPORTED),
        },
    ),
}


@pytest.mark.parametrize(("changes", "options"), UNIFIED.values(), ids=UNIFIED.keys())
def test_a_device_sharing_memory_with_the_host_is_measured_through_torch(
    fake_nvml: FakeNvml,
    fake_torch_cuda: FakeTorchCuda,
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, float],
    options: dict[str, object],
) -> None:
    fake_nvml([FakeGPU(**{"name": "NVIDIA GB10", "total_mib": 0, **changes})], **options)
    fake_torch_cuda(gpu=FakeGPU("NVIDIA GB10", total_mib=122880, used_mib=4096))

    detection = detect_gpu()

    assert detection.chosen is not None
    assert detection.chosen.backend is GPUBackend.cuda
    assert (detection.chosen.total_mib, detection.chosen.free_mib) == (122880, 122880 - 4096)
    assert detection.device == "cuda:0"
    assert warnings_logged(caplog) == []


@pytest.mark.parametrize(("changes", "options"), UNIFIED.values(), ids=UNIFIED.keys())
def test_a_device_sharing_memory_without_torch_gives_cpu_mode_saying_why(
    fake_nvml: FakeNvml,
    no_torch: None,
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, float],
    options: dict[str, object],
) -> None:
    fake_nvml([FakeGPU(**{"name": "NVIDIA GB10", "total_mib": 0, **changes})], **options)

    detection = detect_gpu()

    assert detection.cpu_mode
    (warning,) = warnings_logged(caplog)
    assert "GPU 0 (NVIDIA GB10) shares memory with the host" in warning
    assert "torch is not installed" in warning


def test_nonsense_from_torch_is_skipped_too(
    fake_nvml: FakeNvml, fake_torch_cuda: FakeTorchCuda, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml([FakeGPU("NVIDIA GB10", total_mib=0)])
    fake_torch_cuda(gpu=FakeGPU("NVIDIA GB10", total_mib=-5))

    detection = detect_gpu()

    assert detection.cpu_mode
    (warning,) = warnings_logged(caplog)
    assert "NVIDIA GB10" in warning and "make no sense" in warning


# ------------------------------------------------------------------ VRAM status


@pytest.mark.parametrize(
    "changes",
    [{"used_mib": 20000}, {"total_mib": math.nan}, {"reported_free_mib": -5}],
    ids=["used-above-total", "total-nan", "free-negative"],
)
def test_nonsense_after_detection_gives_a_failed_status_never_nan_arithmetic(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture, changes: dict[str, float]
) -> None:
    card = rtx3080(used_mib=300)
    fake_nvml([card])
    with VRAMManager() as vram:
        assert vram.get_status().ok
        for field, value in changes.items():
            setattr(card, field, value)  # the driver starts answering nonsense

        status = vram.get_status()
        fits = vram.can_load(100, safety_margin_mb=0)

    assert not status.ok
    assert (status.total_mib, status.used_mib, status.free_mib) == (0.0, 0.0, 0.0)
    assert not fits
    assert any("makes no sense" in w for w in warnings_logged(caplog))


# ------------------------------------------------------------------ sizes (class 7)

BAD_SIZES = {
    "negative": ({"required_mb": -1}, ">= 0"),
    "nan": ({"required_mb": math.nan}, "a number of MiB"),
    "inf": ({"required_mb": math.inf}, "at most"),
    "400-digit": ({"required_mb": 10**400}, "at most"),
    "negative-margin": ({"required_mb": 10, "safety_margin_mb": -1}, ">= 0"),
    "nan-margin": ({"required_mb": 10, "safety_margin_mb": math.nan}, "a number of MiB"),
    "huge-margin": ({"required_mb": 10, "safety_margin_mb": 10**400}, "at most"),
    "text": ({"required_mb": "2GB"}, "a number of MiB"),
}


@pytest.mark.parametrize(("sizes", "said"), BAD_SIZES.values(), ids=BAD_SIZES.keys())
def test_a_stage_with_a_bad_size_raises_value_error_in_cpu_mode(
    sizes: dict[str, object], said: str
) -> None:
    vram = VRAMManager()
    assert vram.cpu_mode

    with pytest.raises(ValueError, match=said):
        vram.stage("x", **sizes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=said):
        vram.can_load(**sizes)  # type: ignore[arg-type]
    assert vram.records == []


def test_a_bad_size_raises_before_the_stage_starts_on_a_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml([rtx3080()])
    with VRAMManager() as vram:
        with pytest.raises(ValueError, match="at most"), vram.stage("x", 10**400):
            pytest.fail("the stage ran")  # pragma: no cover
        assert vram.records == []


# ------------------------------------------------------------------ fuzz

# Whatever a driver may answer: numbers of any kind, in MiB (the fake converts to bytes).
ANY_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.just(10**400),
    st.sampled_from([0, 0.0, -0.0, 1, 10240, 24576]),
)
ANY_NAME = st.one_of(st.binary(max_size=24), st.text(max_size=24))
ANY_ERROR = st.sampled_from(
    [
        NVMLError(NVML_ERROR_UNKNOWN),
        NVMLError(NVML_ERROR_NOT_SUPPORTED),
        RuntimeError("driver went away"),
        OSError("libnvidia-ml.so.1: cannot open shared object file"),
        AttributeError("'NoneType' object has no attribute 'contents'"),
        TypeError("an integer is required"),
        ValueError("bad value"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        ZeroDivisionError("division by zero"),
    ]
)
FUZZ_CALLS = (*DETECTION_CALLS, "nvmlShutdown", "nvmlDeviceGetHandleByUUID")


ODD_FIELDS = ("total_mib", "used_mib", "reserved_mib", "reported_free_mib")


@st.composite
def driver_gpus(draw: st.DrawFn) -> FakeGPU:
    """A card with sane figures, some of which (any, all or none) the driver answers oddly."""
    total = draw(st.integers(1, 196608))
    gpu = FakeGPU(name=draw(ANY_NAME), total_mib=total, used_mib=draw(st.integers(0, total)))
    odd_fields = (
        draw(st.sets(st.sampled_from(ODD_FIELDS), min_size=1)) if draw(st.booleans()) else ()
    )
    for field in odd_fields:
        setattr(gpu, field, draw(ANY_NUMBER))
    if draw(st.integers(0, 3)) == 0:  # a device that shares memory with the host
        gpu.total_mib = gpu.used_mib = gpu.reserved_mib = 0
    return gpu


@st.composite
def torch_answers(draw: st.DrawFn) -> Callable[[], list[GPUInfo]]:
    """A torch probe (asked for devices sharing memory): GPUs with any figures, or an error."""
    error = draw(st.none() | st.sampled_from([ImportError("no torch"), RuntimeError("CUDA")]))
    gpus = []
    for index in range(draw(st.integers(0, 2))):
        total = draw(st.integers(1, 196608))
        used = draw(st.integers(0, total))
        figures = {"total_mib": total, "used_mib": used, "free_mib": total - used}
        if draw(st.booleans()):
            for field in draw(st.sets(st.sampled_from(sorted(figures)), min_size=1)):
                figures[field] = draw(ANY_NUMBER)
        gpus.append(GPUInfo(index, draw(st.text(max_size=12)), **figures))

    def probe() -> list[GPUInfo]:
        if error is not None:
            raise error
        return gpus

    return probe


@contextmanager
def warnings_to(records: list[logging.LogRecord]) -> Iterator[None]:
    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("avatar")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gpus=st.lists(driver_gpus(), min_size=1, max_size=3),  # no GPU at all: tested elsewhere
    fail_on=st.none() | st.sampled_from(FUZZ_CALLS),
    fail_with=ANY_ERROR,
    strings_as_bytes=st.booleans(),
    v2_supported=st.booleans(),
    old_bindings=st.booleans(),
    torch_probe=torch_answers(),
)
def test_no_driver_answer_crashes_detection_or_yields_a_nonsense_gpu(
    gpus: list[FakeGPU],
    fail_on: str | None,
    fail_with: Exception,
    strings_as_bytes: bool,
    v2_supported: bool,
    old_bindings: bool,
    torch_probe: Callable[[], list[GPUInfo]],
) -> None:
    nv = fake_pynvml(
        gpus,
        fail_on=fail_on,
        fail_with=fail_with,
        strings_as_bytes=strings_as_bytes,
        v2_supported=v2_supported,
        old_bindings=old_bindings,
    )
    records: list[logging.LogRecord] = []

    with warnings_to(records):
        detection = detect_gpu(
            env={},
            nvml_factory=lambda: Nvml(nv),
            torch_probe=torch_probe,
            other_gpu_may_exist=lambda: False,
        )

    event(f"{detection.backend} with {len(detection.gpus)} GPU(s)")
    for gpu in detection.gpus:
        assert_figures_make_sense(gpu)
        assert gpu.name.isprintable()
    assert detection.chosen is None or detection.chosen in detection.gpus
    if detection.cpu_mode:
        assert len(records) == 1, [r.getMessage() for r in records]
    assert nv.initialized <= 0 or fail_on == "nvmlShutdown"  # never left initialised


# ------------------------------------------------------------------ the real CLI


@pytest.mark.slow
def test_cli_with_a_stray_pynvml_in_the_working_directory_says_which_file(
    tmp_path: Path,
) -> None:
    stray = tmp_path / "pynvml.py"
    stray.write_text("# a user's own script that happens to be called pynvml\nVERSION = 1\n")

    result = run_avatar(cwd=tmp_path, gpus=[rtx3080()])

    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    assert status_profile(result.stdout)[0] == "cpu"
    warnings = [line for line in result.stderr.splitlines() if "running in CPU mode" in line]
    assert len(warnings) == 1 and str(stray) in warnings[0], result.stderr
    assert "running in CPU mode" not in result.stdout  # warnings go to stderr only


@pytest.mark.slow
@pytest.mark.parametrize("error", ["RuntimeError", "OSError"])
def test_cli_with_a_binding_raising_a_foreign_error_runs_in_cpu_mode(
    tmp_path: Path, error: str
) -> None:
    env = {"AVATAR_FAKE_NVML_FAIL": "nvmlDeviceGetMemoryInfo", "AVATAR_FAKE_NVML_RAISE": error}

    result = run_avatar(cwd=tmp_path, gpus=[rtx3080()], env=env)

    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    assert status_profile(result.stdout)[0] == "cpu"
    assert f"nvmlDeviceGetMemoryInfo raised {error}" in result.stderr


@pytest.mark.slow
def test_cli_names_and_skips_a_gpu_reporting_nonsense_and_shows_an_undecodable_name(
    tmp_path: Path,
) -> None:
    gpus = [
        FakeGPU(b"NVIDIA \xff RTX 3080", total_mib=10240, used_mib=300),
        FakeGPU("Broken card", total_mib=math.nan, used_mib=0),
    ]

    result = run_avatar(cwd=tmp_path, gpus=gpus)

    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    profile, why = status_profile(result.stdout)
    assert profile == "rtx3080" and "NVIDIA \ufffd RTX 3080" in why
    assert "GPU 1 (Broken card): total memory is nan" in result.stderr
    assert "Broken card" not in result.stdout
