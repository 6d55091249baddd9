"""Checks on a real NVIDIA GPU: status agrees with nvidia-smi, creates no CUDA context,
and CUDA_VISIBLE_DEVICES picks the card it names.

Marked `gpu`; skipped unless NVML really finds a GPU and `nvidia-smi` exists. No
assumption about which GPU or how many: every expectation is read from nvidia-smi or
NVML on the machine itself. Run with `python -m pytest -m gpu`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import real_nvml_env, run_avatar, status_section, status_settings

pytestmark = pytest.mark.gpu

# What a status line for one GPU says, e.g.
# "GPU 0  NVIDIA H100 80GB HBM3  [#.....] 0 / 81559 MiB used, 81559 MiB free  <- in use"
GPU_LINE = re.compile(
    r"^GPU (?P<index>\d+)\s+(?P<name>.+?)\s+\[[#.]+\] (?P<used>\d+) / (?P<total>\d+) MiB used, "
    r"(?P<free>\d+) MiB free"
)
# Status and nvidia-smi read memory at slightly different moments and round differently.
TOLERANCE = 0.01


@dataclass(frozen=True)
class SmiGPU:
    index: int
    uuid: str
    name: str
    total_mib: int
    used_mib: int


def nvidia_smi_gpus() -> list[SmiGPU]:
    out = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=index,uuid,name,memory.total,memory.used",
            "--format=csv,noheader,nounits",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    gpus = []
    for row in out.strip().splitlines():
        index, uuid, name, total, used = (cell.strip() for cell in row.split(","))
        gpus.append(SmiGPU(int(index), uuid, name, int(total), int(used)))
    return gpus


def _real_nvml_gpu_count() -> int:
    """How many GPUs the real NVML finds; 0 without a driver or bindings."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError):
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError:
        return 0
    finally:
        pynvml.nvmlShutdown()


@pytest.fixture(scope="module")
def smi_gpus() -> list[SmiGPU]:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi not found")
    if _real_nvml_gpu_count() == 0:
        pytest.skip("NVML finds no NVIDIA GPU here")
    gpus = nvidia_smi_gpus()
    if not gpus:
        pytest.skip("nvidia-smi lists no GPU")
    return gpus


def status_gpus(stdout: str) -> dict[int, dict[str, str]]:
    """The GPU lines of the status view, by the index status shows."""
    found = {}
    for line in status_section(stdout, "Hardware"):
        match = GPU_LINE.match(line)
        if match:
            found[int(match["index"])] = match.groupdict()
    return found


def close(a: float, b: float, total: float) -> bool:
    return abs(a - b) <= TOLERANCE * total


def test_status_total_and_used_agree_with_nvidia_smi(
    smi_gpus: list[SmiGPU], tmp_path: Path
) -> None:
    before = nvidia_smi_gpus()[0]
    result = run_avatar(cwd=tmp_path, real_nvml=True)
    after = nvidia_smi_gpus()[0]

    assert result.returncode == 0, result.output
    shown = status_gpus(result.stdout)
    assert 0 in shown, result.stdout
    gpu0 = shown[0]
    assert int(gpu0["total"]) == pytest.approx(before.total_mib, rel=TOLERANCE)
    # Used may be 0 on an idle card, so the tolerance is 1 % of the total.
    assert any(close(int(gpu0["used"]), smi.used_mib, smi.total_mib) for smi in (before, after)), (
        f"status used {gpu0['used']} MiB, nvidia-smi {before.used_mib} / {after.used_mib} MiB"
    )
    assert len(shown) == len(smi_gpus)  # every GPU is listed


# Runs in a subprocess: status (or, as a control, torch creating a context), then,
# while the process still lives, which processes hold a CUDA context on any GPU.
PROBE = r"""
import json, os, sys
if sys.argv[1] == "status":
    sys.argv = ["avatar"]
    from avatar.cli.app import main
    main()
else:
    import torch
    torch.cuda.mem_get_info()
torch_imported = "torch" in sys.modules
import pynvml
pynvml.nvmlInit()
pids = []
for i in range(pynvml.nvmlDeviceGetCount()):
    handle = pynvml.nvmlDeviceGetHandleByIndex(i)
    pids += [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
print("PROBE " + json.dumps({"pid": os.getpid(), "pids": pids, "torch": torch_imported}))
"""


def context_holders() -> set[int]:
    """PIDs holding a CUDA context on any GPU now (skips where NVML cannot say)."""
    import pynvml

    pynvml.nvmlInit()
    try:
        pids: set[int] = set()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            pids |= {p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}
        return pids
    except pynvml.NVMLError as exc:
        pytest.skip(f"NVML cannot list the processes on this GPU ({exc}; MIG, WSL or WDDM)")
    finally:
        pynvml.nvmlShutdown()


def run_probe(mode: str, cwd: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=cwd,
        env=real_nvml_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


def holds_a_new_context(probe: dict[str, object], before: set[int]) -> bool:
    """The probe's own PID is listed, or (in a PID namespace, where NVML shows host PIDs)
    a PID that was not there before appeared."""
    pids = set(probe["pids"])  # type: ignore[call-overload]
    return probe["pid"] in pids or bool(pids - before)


def test_status_creates_no_cuda_context_and_imports_no_torch(
    smi_gpus: list[SmiGPU], tmp_path: Path
) -> None:
    before = context_holders()

    probe = run_probe("status", tmp_path)

    assert probe["torch"] is False
    assert not holds_a_new_context(probe, before), probe


def test_the_context_check_sees_a_process_that_does_create_one(
    smi_gpus: list[SmiGPU], tmp_path: Path
) -> None:
    """Control for the test above: the same check notices torch's context."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    before = context_holders()

    probe = run_probe("torch", tmp_path)

    assert holds_a_new_context(probe, before), probe


def test_cuda_visible_devices_with_a_uuid_picks_that_card(
    smi_gpus: list[SmiGPU], tmp_path: Path
) -> None:
    card = smi_gpus[-1]  # the last one, so with several GPUs the choice matters

    result = run_avatar(cwd=tmp_path, real_nvml=True, env={"CUDA_VISIBLE_DEVICES": card.uuid})

    assert result.returncode == 0, result.output
    shown = status_gpus(result.stdout)
    assert list(shown) == [0], result.stdout  # the one visible card is cuda:0
    assert shown[0]["name"] == card.name
    assert int(shown[0]["total"]) == pytest.approx(card.total_mib, rel=TOLERANCE)
    assert status_settings(result.stdout)["device"] == "cuda:0"
