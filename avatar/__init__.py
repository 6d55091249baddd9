"""avatar: the foundation of a local talking-avatar pipeline.

Finds the hardware (NVML first, no CUDA context), picks a hardware profile from
the profile YAMLs, composes the configuration with Hydra, and keeps VRAM under
control while later stages load their models one after another.
"""

from avatar.compose import load_config
from avatar.hardware import GPUDetection, GPUInfo, detect_gpu
from avatar.plan import stage_need_mib
from avatar.profiles import get_hardware_profile
from avatar.stage import InsufficientVRAMError, StageRecord
from avatar.vram import VRAMManager, VRAMStatus

__version__ = "0.1.0"

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
