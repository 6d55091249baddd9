"""One device's memory at one moment, and the sizes the VRAM layer accepts.

Shared by the manager, the stage guard and the plan, so none of them imports another
for its types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from avatar.hardware.types import MAX_DEVICE_MIB

DEFAULT_SAFETY_MARGIN_MIB = 512  # the note's DEC-I4


@dataclass(slots=True)
class VRAMStatus:
    """One device's memory at one moment, in MiB.

    Not frozen: a frozen dataclass pays a setattr call per field, and get_status()
    builds one per call while its goal is to cost little more than the NVML call.

    `torch_reserved_mib` / `torch_allocated_mib` are set only in a process where
    torch already initialised CUDA; otherwise 0.
    """

    device: str  # "cuda:0", "mps" or "cpu"
    total_mib: float
    used_mib: float
    free_mib: float
    torch_reserved_mib: float = 0.0
    torch_allocated_mib: float = 0.0
    ok: bool = True  # False when the query failed and the numbers are zeros

    @property
    def reclaimable_mib(self) -> float:
        """Memory torch holds in its cache but does not use: free for the next model."""
        return max(0.0, self.torch_reserved_mib - self.torch_allocated_mib)

    @property
    def available_mib(self) -> float:
        """What the next model can use: free on the device plus torch's reclaimable cache."""
        return self.free_mib + self.reclaimable_mib


def check_size_mib(name: str, value: object) -> None:
    """Refuse a size the VRAM arithmetic cannot use: not a number, NaN, negative or huge.

    The upper bound is the most memory any device has (1 PiB): a larger size can never
    fit, and a 400-digit integer would end the arithmetic in an OverflowError instead.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"{name} must be a number of MiB, got {_shown(value)}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 MiB, got {_shown(value)}")
    if value > MAX_DEVICE_MIB:
        raise ValueError(
            f"{name} must be at most {MAX_DEVICE_MIB:.0f} MiB (1 PiB, more than any device "
            f"has), got {_shown(value)}"
        )


def _shown(value: object) -> str:
    """A value for a message; a huge integer by its size (str() refuses past 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {math.floor(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
