"""Run the golden cases and render each one's output as one normalised text.

As a script, from the repo root, it writes `tests/golden/expected/<case>.txt`:

    python -m tests.golden.capture            # every case (stale files removed)
    python -m tests.golden.capture help cfg_job   # just these

`tests/test_golden.py` calls `run_case` and compares with those files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .cases import CASES, CASES_BY_NAME, Case
from .normalise import normalise

GOLDEN_DIR = Path(__file__).resolve().parent
EXPECTED_DIR = GOLDEN_DIR / "expected"
TESTS_DIR = GOLDEN_DIR.parent
REPO_ROOT = TESTS_DIR.parent
FAKE_PYNVML_DIR = TESTS_DIR / "fake_pynvml"
CLI_TIMEOUT_S = 120
# Host settings that would change the output; the cases set their own where they need one.
# COLUMNS/LINES: a terminal width would change wrapped text.
UNSET = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "AVATAR_PROFILE",
    "HYDRA_FULL_ERROR",
    "AVATAR_FAKE_GPUS",
    "AVATAR_FAKE_NVML_FAIL",
    "PYTHONWARNINGS",
    "COLUMNS",
    "LINES",
)
# The files of a sweep dir whose text is recorded (each job's status.json as well).
SWEEP_FILES = ("summary.txt", "summary.json")


def case_env(case: Case, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (os.environ) without host settings, the fake NVML and this tree on PYTHONPATH."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in UNSET}
    path = [str(FAKE_PYNVML_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    if case.gpus is not None:
        env["AVATAR_FAKE_GPUS"] = json.dumps(list(case.gpus))
    env.update(case.env)
    return env


def _block(title: str, text: str) -> str:
    """A titled block that keeps whether the text ended with a newline."""
    if text and not text.endswith("\n"):
        text += "\n[no newline at end]\n"
    return f"== {title} ==\n{text}"


def _sweep_blocks(cwd: Path, pattern: str) -> list[str]:
    found = sorted(p for p in cwd.glob(pattern) if p.is_dir())
    if len(found) != 1:
        return [_block("sweep dir", f"{len(found)} dirs match {pattern!r}\n")]
    sweep = found[0]
    listing = sorted(p.relative_to(sweep).as_posix() for p in sweep.rglob("*") if p.is_file())
    blocks = [
        _block(f"files in {sweep.relative_to(cwd).as_posix()}", "".join(f"{p}\n" for p in listing))
    ]
    statuses = sorted(
        sweep.glob("*/status.json"), key=lambda p: (len(p.parent.name), p.parent.name)
    )
    for path in [*(sweep / name for name in SWEEP_FILES), *statuses]:
        if path.is_file():
            blocks.append(
                _block(f"file {path.relative_to(sweep).as_posix()}", path.read_text("utf-8"))
            )
    return blocks


def run_case(case: Case, base_env: Mapping[str, str] | None = None) -> str:
    """Run `python -m avatar` for the case in a fresh temp dir; its normalised record.

    From threads, pass `base_env` (a copy of os.environ taken in the main thread): reading
    os.environ while another thread changes it can fail.
    """
    with tempfile.TemporaryDirectory(prefix="avatar-golden-") as tmp:
        cwd = Path(tmp)
        for rel, text in case.files.items():
            path = cwd / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        args = [arg.replace("{CWD}", str(cwd)) for arg in case.args]
        proc = subprocess.run(
            [sys.executable, "-m", "avatar", *args],
            cwd=cwd,
            env=case_env(case, base_env),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        header = [
            f"case: {case.name}",
            f"command: python -m avatar {' '.join(case.args)}".rstrip(),
            f"env: {' '.join(f'{k}={v}' for k, v in case.env.items())}".rstrip(),
            f"fake gpus: {json.dumps(list(case.gpus)) if case.gpus is not None else 'no driver'}",
            f"files: {', '.join(case.files)}".rstrip(),
        ]
        blocks = [
            "".join(f"# {line}\n" for line in header),
            _block("exit status", f"{proc.returncode}\n"),
            _block("stdout", proc.stdout),
            _block("stderr", proc.stderr),
        ]
        if case.sweep is not None:
            blocks += _sweep_blocks(cwd, case.sweep)
        return normalise("".join(blocks), cwd=cwd, repo_root=REPO_ROOT)


def expected_path(case: Case) -> Path:
    return EXPECTED_DIR / f"{case.name}.txt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parsed = parser.parse_args(argv)
    names = parsed.cases
    cases = [CASES_BY_NAME[n] for n in names] if names else CASES
    EXPECTED_DIR.mkdir(exist_ok=True)
    if not names:
        for stale in EXPECTED_DIR.glob("*.txt"):
            stale.unlink()
    base_env = dict(os.environ)
    with ThreadPoolExecutor(parsed.jobs) as pool:
        texts = pool.map(lambda case: run_case(case, base_env), cases)
        for case, text in zip(cases, texts, strict=True):
            expected_path(case).write_text(text, encoding="utf-8")
            status = text.split("== exit status ==")[1].split()[0]
            print(f"{case.name}: exit status {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
