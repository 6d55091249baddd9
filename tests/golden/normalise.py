"""Mask what differs between machines and runs, and nothing else (byte for byte otherwise)."""

from __future__ import annotations

import os
import re
from pathlib import Path

# (pattern, replacement), applied in order after the paths.
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Hydra's log lines: [2026-12-01 20:23:10,929][HYDRA] ...
    (re.compile(r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}\]"), "[<DATE TIME>]"),
    # avatar's default sweep dir: multirun/2026-12-01/20-31-05-0028711 (time, process id)
    (re.compile(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-\d{7}"), "<DATE>/<TIME>-<PID>"),
    # Hydra's default sweep dir: multirun/2026-12-01/20-31-05
    (re.compile(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}"), "<DATE>/<TIME>"),
    # this machine's RAM, in the status view and in status.json
    (
        re.compile(r"System RAM: [\d.]+ GiB, [\d.]+ GiB available"),
        "System RAM: <R> GiB, <A> GiB available",
    ),
    (
        re.compile(r'("ram": \{\s*"total_mib": )[\d.]+(,\s*"available_mib": )[\d.]+'),
        r"\g<1><R>\g<2><A>",
    ),
    # the host a sweep job ran on
    (re.compile(r'"host": "[^"]*"'), '"host": "<HOST>"'),
    # the installed hydra-core / omegaconf (avatar's own version stays)
    (re.compile(r"hydra-core [\w.+]+, omegaconf [\w.+]+"), "hydra-core <V>, omegaconf <V>"),
)


def normalise(text: str, *, cwd: Path, repo_root: Path) -> str:
    """`text` with the case's temp dir as <CWD>, the repo as <REPO>, and PATTERNS masked."""
    paths = {str(cwd): "<CWD>", os.path.realpath(cwd): "<CWD>", str(repo_root): "<REPO>"}
    for path in sorted(paths, key=len, reverse=True):  # the longest first: cwd may be in repo
        text = text.replace(path, paths[path])
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text
