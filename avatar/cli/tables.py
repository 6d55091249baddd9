"""Plain-text tables and verdict words, shared by the status view and the sweep summary."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def fits_word(fits: bool | None) -> str:
    """A fit verdict as status and the summary print it: yes, NO (stands out), or n/a."""
    return {True: "yes", False: "NO", None: "n/a"}[fits]


def render_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    indent: str = "",
    right: Collection[int] = (),
) -> list[str]:
    """Columns padded to their widest cell (`right`: column indices aligned right), one
    string per line, trailing spaces removed."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        (
            indent
            + "  ".join(
                cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            )
        ).rstrip()
        for row in [header, *rows]
    ]
