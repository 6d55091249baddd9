"""XTTS-v2 through avatar against coqui-tts called directly, in one process, on the tiny checkpoint.

    python benchmarks/voice_bench.py               # about two minutes on a 2-core machine
    python benchmarks/voice_bench.py --rounds 9 --sentences 8 --out /tmp/voice.md

Claims (issue 11), each a ratio measured in the same run:
1. Synthesis: avatar's `Synthesizer.speak()` (voice lookup, cached latents, splitting, joining)
   against coqui-tts's `Xtts.inference()` on the same model object, latents, text and seed:
   at most 1.05x. Alternated rounds (ABBA); the claim is the median of the per-round ratios
   of CPU seconds (paired, and blind to other processes holding the core), the wall-clock
   ratio of the medians beside it.
2. A voice's second use: its cloning phase (cache lookup and load) against the first use's
   (compute the latents and cache them): at most 5 %.
3. N sentences in one run (one model load) against N times one sentence's inference: within
   1.1x.

The checkpoint is the tests' tiny random XTTS-v2 (tests/voice/tiny_xtts.py), built from
coqui-tts's own classes: the GPT is a toy while HiFi-GAN and the speaker encoder have their
real sizes, so ratios of avatar's overhead are meaningful, absolute speeds are not the
released model's. The process is pinned to one core and torch runs one thread. Results go to
benchmarks/results/voice-<machine>.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests" / "voice")]

from light_bench import alternate, machine_slug, pin_to_one_core  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
SENTENCE = "The quick brown fox jumps over the lazy dog."
SEED = 0


def make_clip(path: Path, seconds: float = 3.0) -> Path:
    """A voice-like reference clip (harmonics with a loudness wobble), 22,050 Hz mono."""
    import numpy as np
    import soundfile

    rate = 22_050
    t = np.arange(round(seconds * rate)) / rate
    mono = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in (1, 2, 3))
    mono = 0.3 * mono / np.max(np.abs(mono)) * (0.75 + 0.25 * np.sin(2 * np.pi * 3 * t))
    soundfile.write(path, mono, rate)
    return path


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sentences", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    pinned = pin_to_one_core()
    import torch

    torch.set_num_threads(1)
    from tiny_xtts import build_tiny_xtts

    from avatar.config import load_config
    from avatar.stages.voice.store import VoiceStore
    from avatar.stages.voice.synthesizer import Synthesizer

    work = Path(tempfile.mkdtemp(prefix="voice-bench-"))
    try:
        checkpoint = build_tiny_xtts(work / "ckpt")
        store = VoiceStore(work / "voices")
        voice = store.add("bench", [make_clip(work / "clip.wav")], "en")
        cfg = load_config(
            ["voice=xtts_v2", f"voice.checkpoint_dir={checkpoint}", f"voices_dir={store.root}"]
        )
        ids = work / "ids.json"

        # 2. cloning: first use (computed) against second use (reused), fresh cache each round
        first: list[float] = []
        second: list[float] = []
        with Synthesizer(cfg, store=store, id_cache_file=ids) as synth:
            for _ in range(args.rounds):
                shutil.rmtree(voice.cache_dir, ignore_errors=True)
                a = synth.speak("Hi.", speaker="bench")
                b = synth.speak("Hi.", speaker="bench")
                assert (a.latents, b.latents) == ("computed", "reused")
                first.append(a.clone_s)
                second.append(b.clone_s)

            # 1. synthesis: avatar's speak() against coqui's inference(), same everything
            model = synth._model
            latents = torch.load(next(voice.cache_dir.glob("*.pt")), weights_only=True)
            v = cfg.voice

            def direct() -> Any:
                torch.manual_seed(SEED)
                return model.inference(
                    SENTENCE,
                    "en",
                    latents["gpt_cond_latent"],
                    latents["speaker_embedding"],
                    temperature=v.temperature,
                    repetition_penalty=v.repetition_penalty,
                    top_k=v.top_k,
                    top_p=v.top_p,
                    speed=v.speed,
                )["wav"]

            def through_avatar() -> Any:
                torch.manual_seed(SEED)
                return synth.speak(SENTENCE, speaker="bench").audio

            wall, cpu, last = alternate(
                {"avatar": through_avatar, "coqui": direct}, args.rounds * 2 + 1
            )
            same = bool((abs(last["avatar"] - last["coqui"]) < 1e-6).all())

            # 3. N sentences in one speak() against N x one sentence
            n = args.sentences
            many = " ".join([SENTENCE] * n)

            def n_in_one() -> Any:
                return synth.speak(many, speaker="bench")

            def one() -> Any:
                return synth.speak(SENTENCE, speaker="bench")

            wall_n, cpu_n, last_n = alternate({"n": n_in_one, "one": one}, args.rounds)
            pieces = last_n["n"].pieces
            audio_n, audio_one = last_n["n"].audio_s, last_n["one"].audio_s
        loads = 1  # the whole benchmark above ran inside one `with`: one model load
        load_s = synth.load_s
    finally:
        shutil.rmtree(work, ignore_errors=True)

    synth_ratio = median_ratio(cpu["avatar"], cpu["coqui"])
    synth_wall = statistics.median(wall["avatar"]) / statistics.median(wall["coqui"])
    clone_ratio = statistics.median(second) / statistics.median(first)
    n_ratio = median_ratio(cpu_n["n"], [x * n for x in cpu_n["one"]])
    n_wall = statistics.median(wall_n["n"]) / (n * statistics.median(wall_n["one"]))
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("torch", "coqui-tts", "transformers")
    )
    rows = [
        (
            "speak() / coqui-tts inference(), same model, latents, text, seed",
            f"{synth_ratio:.3f}x CPU (wall {synth_wall:.3f}x); "
            f"{statistics.median(cpu['avatar']) * 1000:.0f} vs "
            f"{statistics.median(cpu['coqui']) * 1000:.0f} ms; same audio: {same}",
            "<= 1.05x",
        ),
        (
            "second use of a voice: cloning phase / first use's",
            f"{clone_ratio * 100:.2f} % ({statistics.median(second) * 1000:.1f} ms vs "
            f"{statistics.median(first) * 1000:.0f} ms)",
            "<= 5 %",
        ),
        (
            f"{n} sentences in one run / {n} x one sentence",
            f"{n_ratio:.3f}x CPU (wall {n_wall:.3f}x); {pieces} pieces, {loads} model load "
            f"({load_s:.2f} s); audio {audio_n:.2f} s vs {n} x {audio_one:.2f} s",
            "<= 1.1x",
        ),
    ]
    lines = [
        f"# Voice benchmark (XTTS-v2, tiny random checkpoint) on {machine_slug()}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {versions}; torch threads 1, "
        f"pinned to {pinned}; {args.rounds} rounds (synthesis: {args.rounds * 2 + 1}).",
        "",
        "| claim | measured | goal |",
        "| --- | --- | --- |",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        "Ratios of CPU seconds are medians of paired (alternated) rounds; wall ratios are of",
        "medians. The tiny checkpoint proves avatar's overhead, not the released model's speed.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or RESULTS_DIR / f"voice-{machine_slug()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
