"""The real VRAM need of XTTS-v2: the released architecture with random weights, on a GPU.

    python benchmarks/xtts_vram.py                # needs an NVIDIA GPU; about a minute
    python benchmarks/xtts_vram.py --device cpu   # the plumbing only (slow, no VRAM figures)

The released weights cannot be downloaded here, but their architecture is coqui-tts's default
`XttsArgs()` plus the released config's text-token numbers; random weights need exactly the
memory trained ones do. The script builds that model with coqui-tts's own classes, moves it
to the GPU in fp32, clones a 6 s clip and speaks one sentence, and prints the peak that torch
counted (`max_memory_allocated`, `max_memory_reserved`) and the process's memory as NVML sees
it, for cloning and for inference. The figure for conf/voice/xtts_v2.yaml's `vram_mib.fp32`
is the larger NVML-measured delta over the CUDA context, rounded up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "voice"))

# The released XTTS-v2 config.json's text tokens (its vocab.json has 6681 entries).
RELEASED_TEXT_TOKENS = {"gpt_number_text_tokens": 6681, "gpt_start_text_token": 261}
MIB = 1024 * 1024


def nvml_process_mib() -> float | None:
    """This process's GPU memory as NVML reports it (None where NVML cannot say)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return proc.usedGpuMemory / MIB
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from tiny_xtts import write_vocab
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts, XttsArgs

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.zeros(1, device=args.device)  # the context first, so it is not counted below
    context_mib = nvml_process_mib() if cuda else None

    # The released text-token table, set before the model is built (init_models would
    # otherwise size it from the tokenizer); the small test tokenizer's ids fit inside it.
    config = XttsConfig(
        model_args=XttsArgs(
            gpt_use_perceiver_resampler=True, gpt_stop_text_token=0, **RELEASED_TEXT_TOKENS
        )
    )
    model = Xtts(config)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.json"
        write_vocab(vocab)
        model.tokenizer = VoiceBpeTokenizer(vocab_file=str(vocab))
    model.gpt.init_gpt_for_inference(kv_cache=True)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    if not cuda:
        torch.set_num_threads(1)  # a shared CPU: one core
    start = time.perf_counter()
    model = model.to(args.device)
    load_s = time.perf_counter() - start
    weights_mib = torch.cuda.memory_allocated() / MIB if cuda else None
    print(f"built {params / 1e6:.0f} M parameters on {args.device} ({load_s:.1f} s)", flush=True)

    rate = 22_050
    t = np.arange(6 * rate) / rate
    clip = torch.from_numpy((0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32))[None]
    figures: dict[str, tuple[float | None, float | None, float | None]] = {}

    def measure(name: str, call: object) -> object:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result = call()  # type: ignore[operator]
        if cuda:
            torch.cuda.synchronize()
            figures[name] = (
                torch.cuda.max_memory_allocated() / MIB,
                torch.cuda.max_memory_reserved() / MIB,
                nvml_process_mib(),
            )
        return result

    gpt, spk = measure(
        "cloning",
        lambda: (
            model.get_gpt_cond_latents(clip.to(args.device), rate, length=30, chunk_length=4),
            model.get_speaker_embedding(clip.to(args.device), rate),
        ),
    )  # type: ignore[misc]
    measure(
        "inference",
        lambda: model.inference(
            "This is one sentence of speech, about as long as a sentence usually is.",
            "en",
            gpt,
            spk,
        ),
    )
    print(f"XTTS-v2 (released architecture, random weights): {params / 1e6:.0f} M parameters")
    print(f"device {args.device}; moved in {load_s:.1f} s; weights {weights_mib} MiB")
    print(f"CUDA context (NVML, before the model): {context_mib} MiB")
    for name, (allocated, reserved, nvml) in figures.items():
        over = None if nvml is None or context_mib is None else nvml - context_mib
        print(
            f"{name}: peak allocated {allocated:.0f} MiB, peak reserved {reserved:.0f} MiB, "
            f"process (NVML) {nvml} MiB, over the context {over} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
