"""The light CPU voice through avatar against hibari called directly, in one process.

    python benchmarks/light_bench.py              # 31 alternated rounds, about a minute
    python benchmarks/light_bench.py --rounds 41 --out /tmp/light.md

Claim (issue 11): avatar's light engine costs at most 1.05x its own library on the same text.
Both sides load their own model once, then run the same text with the same seed in alternated
rounds (ABBA order, so drift in the machine's load hits both alike); the audio must come out
identical. Each call is timed in wall seconds and in the process's CPU seconds. The claim is
the median of the per-round ratios of CPU seconds: paired rounds, and CPU time does not count
the moments when other processes on a shared machine hold the core. The wall-clock ratio of the
medians is shown beside it. A third row adds avatar's sentence splitting (`split_text`, then
one call per piece, joined), the way a chapter goes through the synthesizer.

The process is pinned to one CPU core (sched_setaffinity) and both engines run onnxruntime
with one intra-op thread, so the real-time factor (seconds per second of audio) is the one-core
figure. Results go to benchmarks/results/light-<machine>.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from run import cpu_model, machine_slug  # this folder: the script's own, on sys.path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
GOAL_RATIO = 1.05  # issue 11: the light engine within 1.05x of its own library
MAX_CHARS_EN = 250  # coqui's English limit, the one the synthesizer splits at
TEXT = (
    "The light voice is for machines without a graphics card. It reads English text aloud "
    "at once, with no download and no network, from a model that ships inside its package. "
    "On the third of March, twelve hundred people heard it read a whole chapter, sentence by "
    "sentence, while the kettle boiled. Was it as good as a cloned voice? No, but it was there "
    "the moment the install finished, and that was the point."
)
SEED = 0


def pin_to_one_core() -> str:
    """Pin this process to one core; says which, or why not."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"core {core}"


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def alternate(
    sides: dict[str, Callable[[], Any]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """Each side once per round, the order reversed every other round: wall and CPU seconds
    per call, and each side's last result."""
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    last: dict[str, Any] = {}
    names = list(sides)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            cpu_start = time.process_time()
            seconds, last[name] = timed(sides[name])
            cpu[name].append(time.process_time() - cpu_start)
            wall[name].append(seconds)
    return wall, cpu, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    pinned = pin_to_one_core()
    import numpy as np
    from hibari import Hibari
    from hibari import dsp as hibari_dsp

    from avatar.stages.voice.light import LightEngine
    from avatar.stages.voice.text import split_text

    load_direct_s, direct = timed(lambda: Hibari(threads=1))
    load_avatar_s, engine = timed(lambda: LightEngine(threads=1))
    pieces = split_text(TEXT, "en", max_chars=MAX_CHARS_EN)

    def through_split() -> Any:
        return np.concatenate([engine.synthesize(p, seed=SEED) for p in pieces])

    sides: dict[str, Callable[[], Any]] = {
        "hibari directly": lambda: direct(TEXT, seed=SEED),
        "avatar LightEngine.synthesize": lambda: engine.synthesize(TEXT, seed=SEED),
        "avatar split_text + synthesize per piece": through_split,
    }
    for call in sides.values():  # warm-up: first-call costs (G2P tables, OOV net) on both sides
        call()
    wall, cpu, last = alternate(sides, args.rounds)
    if not np.array_equal(last["hibari directly"], last["avatar LightEngine.synthesize"]):
        print("error: avatar and hibari made different audio from the same text", file=sys.stderr)
        return 1

    base = "hibari directly"
    rate_hz = engine.sample_rate_hz
    rows = []
    claims = []
    for name in sides:
        wall_s, cpu_s = statistics.median(wall[name]), statistics.median(cpu[name])
        audio_s = len(last[name]) / rate_hz
        cpu_ratio = statistics.median(a / b for a, b in zip(cpu[name], cpu[base], strict=True))
        wall_ratio = wall_s / statistics.median(wall[base])
        rows.append(
            f"| {name} | {wall_s * 1e3:.1f} | {min(wall[name]) * 1e3:.1f} | {cpu_s * 1e3:.1f} | "
            f"{cpu_ratio:.3f}x | {wall_ratio:.3f}x | {audio_s:.2f} | {cpu_s / audio_s:.4f} | "
            f"{wall_s / audio_s:.4f} | {audio_s / wall_s:.0f}x |"
        )
        if name != base:
            verdict = "met" if cpu_ratio <= GOAL_RATIO else "NOT met"
            claims.append(
                f"- {name}: {cpu_ratio:.3f}x hibari directly in CPU time, {wall_ratio:.3f}x in "
                f"wall time (goal <= {GOAL_RATIO}x): {verdict}"
            )

    versions = {p: metadata.version(p) for p in ("hibari-tts", "onnxruntime", "numpy")}
    report = "\n".join(
        [
            "# Light CPU voice (hibari) through avatar vs hibari directly",
            "",
            "| | |",
            "| --- | --- |",
            f"| host | {socket.gethostname()} |",
            f"| CPU | {cpu_model()}, {os.cpu_count()} cores; this run pinned to {pinned} |",
            "| threads | onnxruntime intra-op 1, inter-op 1 (both sides) |",
            f"| versions | {', '.join(f'{k} {v}' for k, v in versions.items())}; "
            f"Python {platform.python_version()}; FFT {hibari_dsp.FFT_BACKEND} |",
            f"| date | {time.strftime('%Y-%m-%d %H:%M %Z')} |",
            f"| text | {len(TEXT)} characters, {len(pieces)} pieces at max_chars="
            f"{MAX_CHARS_EN}, seed {SEED} |",
            f"| model load | hibari {load_direct_s:.2f} s, avatar {load_avatar_s:.2f} s "
            "(first load pays the imports) |",
            "",
            f"{args.rounds} alternated rounds after one warm-up call each. RTF = seconds per "
            "second of audio on one core (lower is better); x realtime is the inverse of the "
            "wall RTF.",
            "",
            "| path | wall median ms | wall min ms | CPU median ms | vs hibari (CPU, paired) "
            "| vs hibari (wall) | audio s | RTF (CPU) | RTF (wall) | x realtime (wall) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "Claims:",
            *claims,
            "",
        ]
    )
    out = args.out or RESULTS_DIR / f"light-{machine_slug()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
