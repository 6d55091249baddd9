"""README promises that must stay true: its set-up commands are what CI runs, and
its profiles table says what the profile files say (the files are the source of truth)."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _setup_commands() -> list[str]:
    block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_readme_opens_with_install_and_test_commands_that_ci_runs() -> None:
    install, tests = _setup_commands()[:2]
    assert install.endswith("python -m avatar")
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # CI may add -q to pip; otherwise it must run README's commands as written.
    ci_lines = {line.replace(" -q", "") for line in ci.splitlines()}
    assert install in ci_lines
    assert tests in ci_lines


def test_readme_profiles_table_matches_profile_files() -> None:
    table = README.split("<!-- profiles-table", 1)[1].split("\n\n", 1)[0]
    rows = {
        m.group(1): [c.strip() for c in m.group(2).split("|")]
        for m in re.finditer(r"^\| `(\w+)` \|(.*)\|$", table, flags=re.MULTILINE)
    }
    files = sorted((ROOT / "conf" / "profile").glob("*.yaml"))
    assert {f.stem for f in files} == set(rows)
    for path in files:
        profile = OmegaConf.load(path)
        threshold, precision, quality, batch, steps, margin = rows[path.stem]
        if profile.vram_min_mib:
            assert threshold.startswith(f">= {profile.vram_min_mib} MiB"), path.stem
        assert precision == profile.precision
        assert quality == profile.quality
        assert batch == str(profile.batch_size)
        assert steps == str(profile.steps)
        assert margin == f"{profile.safety_margin_mib} MiB"
