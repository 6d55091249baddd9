"""VRAM accounting for sequential model loading: the manager, the stage guard, the plan."""

from avatar.vram.manager import VRAMManager
from avatar.vram.plan import stage_need_mib
from avatar.vram.stage import InsufficientVRAMError, StageRecord
from avatar.vram.status import DEFAULT_SAFETY_MARGIN_MIB, VRAMStatus

__all__ = [
    "DEFAULT_SAFETY_MARGIN_MIB",
    "InsufficientVRAMError",
    "StageRecord",
    "VRAMManager",
    "VRAMStatus",
    "stage_need_mib",
]
