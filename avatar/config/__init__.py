"""Configuration: the schema, profile choice and Hydra composition (`load_config`).

Above the hardware layer (profile choice reads the detected GPU), below the VRAM
layer (the plan reads the composed stage configs).
"""

from avatar.config.compose import load_config
from avatar.config.profiles import get_hardware_profile, pick_profile

__all__ = ["get_hardware_profile", "load_config", "pick_profile"]
