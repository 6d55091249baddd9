"""avatar: the foundation of a local talking-avatar pipeline.

Finds the hardware (NVML first, no CUDA context), picks a hardware profile from
the profile YAMLs, composes the configuration with Hydra, and keeps VRAM under
control while later stages load their models one after another.

This module is the public API and nothing else: the layers below it (see README,
"Architecture") never import it.
"""

from avatar.config import get_hardware_profile, load_config
from avatar.hardware import GPUDetection, GPUInfo, detect_gpu
from avatar.version import __version__
from avatar.vram import (
    InsufficientVRAMError,
    StageRecord,
    VRAMManager,
    VRAMStatus,
    stage_need_mib,
)

__all__ = [
    "GPUDetection",
    "GPUInfo",
    "InsufficientVRAMError",
    "StageRecord",
    "VRAMManager",
    "VRAMStatus",
    "__version__",
    "detect_gpu",
    "get_hardware_profile",
    "load_config",
    "stage_need_mib",
]
