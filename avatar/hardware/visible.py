"""CUDA_VISIBLE_DEVICES read the way the CUDA runtime reads it: a pure function.

NVML ignores the variable and lists every device, so mapping it onto NVML's devices
is avatar's job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VisibleDevices:
    """Which NVML devices CUDA_VISIBLE_DEVICES exposes, in CUDA order."""

    nvml_indices: tuple[int, ...]  # position in this tuple is the CUDA index
    mig_uuids: tuple[str, ...] = ()  # MIG instances, read by UUID after the GPUs above
    problem: str | None = None  # set when an entry was invalid or nothing is visible


def parse_visible_devices(value: str | None, gpu_uuids: Sequence[str]) -> VisibleDevices:
    """Map CUDA_VISIBLE_DEVICES onto NVML devices, the way the CUDA runtime reads it.

    `gpu_uuids` are the UUIDs of NVML devices 0..n-1. NVML itself ignores the
    variable, which is why this mapping exists. The rules are CUDA's, as PyTorch
    mirrors them (`torch.cuda._parse_visible_devices`): the first entry decides the
    kind (indices, `GPU-` UUIDs or `MIG-` UUIDs; a unique UUID prefix is enough);
    an index is read like strtoul (`1gpu2` is 1); parsing stops at the first entry
    that is negative, out of range, unknown or of another kind, so `-1` or an empty
    value hides every GPU; a GPU named twice hides every GPU.
    """
    count = len(gpu_uuids)
    if value is None:
        return VisibleDevices(tuple(range(count)))
    if not value.strip():
        return VisibleDevices((), problem="CUDA_VISIBLE_DEVICES is empty, so no GPU is visible")
    entries = [raw.strip() for raw in value.split(",")]
    kind = next((k for k in ("GPU-", "MIG-") if entries[0].startswith(k)), None)
    # First the list as written (a repeat hides every GPU, even past an index out of range),
    # then each entry resolved to a device (the first that names none ends the list).
    written: list[int | str] = []  # indices as read, or UUIDs as written
    stop: str | None = None
    for entry in entries:
        key = _ordinal(entry) if kind is None else entry
        if key in written:
            return _named_twice(value)
        if (
            key is None
            or (isinstance(key, int) and key < 0)
            or (kind and not entry.startswith(kind))
        ):
            stop = entry
            break
        written.append(key)
    chosen: list[int] = []
    migs: list[str] = []
    for key in written:
        if kind == "MIG-":
            migs.append(str(key))  # read by UUID; NVML says whether it exists
            continue
        index = key if isinstance(key, int) else _uuid_index(key, gpu_uuids)
        if index is None or not 0 <= index < count:
            stop = str(key)
            break
        if index in chosen:  # two prefixes of one UUID
            return _named_twice(value)
        chosen.append(index)
    if stop is None:
        return VisibleDevices(tuple(chosen), tuple(migs))
    hidden = "no GPU is visible" if not chosen and not migs else "later entries are ignored"
    return VisibleDevices(
        tuple(chosen),
        tuple(migs),
        problem=(
            f"CUDA_VISIBLE_DEVICES={value!r}: entry {stop!r} names no GPU on this machine "
            f"(valid: indices 0..{count - 1}, or GPU UUIDs as nvidia-smi -L lists them), "
            f"so {hidden}, as in CUDA"
        ),
    )


def _named_twice(value: str) -> VisibleDevices:
    return VisibleDevices(
        (),
        problem=(
            f"CUDA_VISIBLE_DEVICES={value!r} names a GPU twice, so no GPU is visible, as in CUDA"
        ),
    )


_LEADING_INTEGER = re.compile(r"[+-]?[0-9]+")


def _ordinal(entry: str) -> int | None:
    """The integer an entry starts with, as strtoul reads it; None if it starts with none."""
    match = _LEADING_INTEGER.match(entry)
    return int(match.group()) if match else None


def _uuid_index(entry: str, gpu_uuids: Sequence[str]) -> int | None:
    """The NVML index of the one GPU whose UUID starts with `entry`; None if none or several."""
    if not entry.startswith("GPU-"):
        return None
    matches = [i for i, uuid in enumerate(gpu_uuids) if uuid.startswith(entry)]
    return matches[0] if len(matches) == 1 else None
