"""Hardware facts (the bottom layer): which GPUs this process can use, found through NVML
first (no CUDA context, no torch) and torch only where NVML cannot answer."""

from avatar.hardware.detect import choose_gpu, detect_gpu
from avatar.hardware.types import DetectionBackend, GPUBackend, GPUDetection, GPUInfo, SystemRAM

__all__ = [
    "DetectionBackend",
    "GPUBackend",
    "GPUDetection",
    "GPUInfo",
    "SystemRAM",
    "choose_gpu",
    "detect_gpu",
]
