"""README's "Bad input" rules say what the code does: its table of ranges is the schema's
(the ranges live only in the schema's field metadata), and each rule it names is enforced."""

from __future__ import annotations

import re
from pathlib import Path

from avatar.config.schema import range_rules

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BAD_INPUT = README.split("### Bad input", 1)[1].split("\n## ", 1)[0]


def _number(text: str) -> float:
    return float(text) if "." in text else int(text)


def test_readme_ranges_table_is_the_schemas() -> None:
    table = BAD_INPUT.split("<!-- ranges-table", 1)[1]
    listed: dict[str, tuple[float, float]] = {}
    for low, high, keys in re.findall(r"^\| (\S+) to (\S+) \| (.*) \|$", table, flags=re.M):
        for key in re.findall(r"`([^`]+)`", keys):
            assert key not in listed, f"{key} listed twice"
            listed[key] = (_number(low), _number(high))

    assert listed == range_rules()


def test_readme_names_the_reserved_names_and_what_wins() -> None:
    assert "`auto`" in BAD_INPUT and "`config.yaml`" in BAD_INPUT
    assert "replaces it, with a one-line notice on stderr" in BAD_INPUT
    assert "exit status 2" in BAD_INPUT and "HYDRA_FULL_ERROR=1" in BAD_INPUT
