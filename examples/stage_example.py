"""A tiny pipeline: each stage gets its config from load_config() and loads its model
through VRAMManager.stage(), one model in VRAM at a time.

    python examples/stage_example.py                       # the auto profile, its stages
    python examples/stage_example.py profile=low_vram lipsync=musetalk

The overrides are the same as `python -m avatar`'s. The "models" are synthetic
stand-ins (a few torch layers, or a bytearray without torch) small enough to run
on the CPU; a real stage would load XTTS-v2, Wav2Lip, ... where `load_model` is.
"""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig

from avatar import InsufficientVRAMError, VRAMManager, load_config
from avatar.cli.status_view import render_records
from avatar.errors import AvatarUserError

MIB = 1024 * 1024
EXAMPLE_MODEL_MIB = 16  # the stand-in's size; a real model is what its stage declares


def load_model(stage_cfg: DictConfig, device: str) -> Any:
    """A stand-in for the stage's model, on `device`."""
    try:
        import torch
    except ImportError:
        return bytearray(EXAMPLE_MODEL_MIB * MIB)
    dtype = torch.float16 if str(stage_cfg.precision.value) == "fp16" else torch.float32
    width = 1024
    layers = max(1, EXAMPLE_MODEL_MIB * MIB // (width * width * torch.finfo(dtype).bits // 8))
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)]).to(
        device=device, dtype=dtype
    )


def run_model(model: Any, device: str) -> None:
    try:
        import torch
    except ImportError:
        return
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        model(torch.ones(8, 1024, device=device, dtype=dtype))


def start_cuda(device: str) -> None:
    """Create the CUDA context before the first stage, so it is not counted as a stage's."""
    if device.startswith("cuda"):
        import torch

        torch.zeros(1, device=device)


def main(argv: list[str]) -> int:
    try:
        cfg = load_config(argv)  # exactly what `python -m avatar <argv>` composes
    except AvatarUserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    manager = VRAMManager(gpu_index=cfg.gpu_index)
    try:
        start_cuda(manager.device)
        for entry in cfg.pipeline.stages:
            name = entry.value  # voice, lipsync, enhance
            stage_cfg = cfg[name]  # the chosen option's model, knobs and VRAM figures
            # Refused before anything loads when the stage's declared need (at the
            # profile's precision and batch size) + the safety margin does not fit.
            with manager.stage(name, config=cfg) as record:
                model = load_model(stage_cfg, record.device)
                run_model(model, record.device)
                del model  # drop it inside the block, so cleanup can give the VRAM back
            print(f"{name}: {stage_cfg.model} ran on {record.device}")
    except InsufficientVRAMError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    finally:
        manager.close()
    print("\n".join(render_records(manager.records)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
