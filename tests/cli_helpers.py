"""Run the real CLI as a user would: `python -m avatar` in a subprocess, in a temp dir.

The subprocess imports avatar from this working tree (PYTHONPATH = repo root), so
what is tested is the source, installed or not. Its `pynvml` is the fake from
`tests/fake_pynvml` unless `real_nvml=True` (GPU tests only): `gpus=None` is a
machine without an NVIDIA driver, `gpus=[]` a driver with no GPU, so a test's
result never depends on the GPUs of the machine it runs on.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fakes import FakeGPU, fake_nvml_env

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_S = 120
HYDRA_TRAILER = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."
# The one warning detection logs when it falls back to CPU mode (not part of an error message).
CPU_MODE_WARNING = "running in CPU mode"
# The start of a user config that extends avatar's own, as README shows it.
MINE_YAML_HEAD = "defaults:\n  - config\n  - _self_\n"


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def error_message(self) -> str:
        """stderr without the CPU-mode warning and Hydra's HYDRA_FULL_ERROR hint."""
        lines = [
            line
            for line in self.stderr.splitlines()
            if CPU_MODE_WARNING not in line and line.strip() != HYDRA_TRAILER
        ]
        return "\n".join(lines).strip()


def real_nvml_env(**extra: str) -> dict[str, str]:
    """An environment that uses the real pynvml and the source tree (GPU tests)."""
    env = dict(os.environ)
    for name in ("CUDA_VISIBLE_DEVICES", "AVATAR_PROFILE", "HYDRA_FULL_ERROR"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_avatar(
    *args: str,
    cwd: Path,
    gpus: Sequence[FakeGPU] | None = None,
    env: Mapping[str, str] | None = None,
    real_nvml: bool = False,
    module: str = "avatar",
    timeout_s: float = CLI_TIMEOUT_S,
) -> CliResult:
    """`python -m MODULE ARGS` (avatar's status by default, or avatar.speak) in `cwd`;
    `env` adds variables (e.g. AVATAR_PROFILE)."""
    extra = dict(env or {})
    full_env = real_nvml_env(**extra) if real_nvml else fake_nvml_env(gpus, **extra)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root`: relative path -> content hash ("dir" for folders).

    Compare two snapshots to show a command wrote, changed or deleted nothing.
    """
    snapshot: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        snapshot[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


def write_user_config(folder: Path, name: str, text: str) -> Path:
    """A user's config file `folder/name` (folders created), for --config-dir tests."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def status_section(stdout: str, title: str) -> list[str]:
    """The stripped lines of one section of the status view (title line to blank line)."""
    lines = stdout.splitlines()
    assert title in lines, f"no {title!r} section in:\n{stdout}"
    section: list[str] = []
    for line in lines[lines.index(title) + 1 :]:
        if not line.strip():
            break
        section.append(line.strip())
    return section


def status_settings(stdout: str) -> dict[str, str]:
    """The Settings section as key -> value text, e.g. {"steps": "30", ...}."""
    return dict(line.split(None, 1) for line in status_section(stdout, "Settings"))


def status_profile(stdout: str) -> tuple[str, str]:
    """(active profile name, why) from the Profile section."""
    lines = status_section(stdout, "Profile")
    name = lines[0].split(":", 1)[0]
    why = next(line.removeprefix("why: ") for line in lines if line.startswith("why: "))
    return name, why
