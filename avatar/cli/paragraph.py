"""Hydra's and OmegaConf's multi-line error messages as avatar's one paragraph.

Used by the command line (a composition error ends the command) and by the sweeper
(a sweep point that does not compose fails alone, with this paragraph as its error).
"""

from __future__ import annotations

_OMEGACONF_CONTEXT = ("object_type=", "reference_type=")


def one_paragraph(parts: list[str]) -> str:
    """Hydra's and OmegaConf's multi-line messages as one paragraph.

    OmegaConf's context lines keep the key and drop the types (they repeat the text);
    Hydra's list of options becomes a comma-separated list, its search path is dropped.
    """
    said: list[str] = []
    for raw in (line for part in parts for line in part.splitlines()):
        line = raw.strip()
        if not line or line.startswith(_OMEGACONF_CONTEXT):
            continue
        if line.startswith("Config search path"):
            break
        if line.startswith("full_key:"):
            line = f"(key: {line.removeprefix('full_key:').strip()})"
        elif raw.startswith("\t") and said and said[-1].endswith((":", ",")):
            line += ","
        elif said and not said[-1].endswith((".", ":", ",")):
            said[-1] += "."
        said.append(line)
    if said and said[-1].endswith(","):
        said[-1] = said[-1][:-1] + "."
    return " ".join(said)


def exception_paragraph(exc: BaseException) -> str:
    """A Hydra or OmegaConf exception, with the OmegaConf error it wraps, as one paragraph."""
    from omegaconf.errors import OmegaConfBaseException

    parts = [str(exc)]
    if isinstance(exc.__cause__, OmegaConfBaseException):
        parts.append(str(exc.__cause__))
    return one_paragraph(parts)
