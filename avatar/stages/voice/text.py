"""Long text into pieces a speech model accepts, cut where a reader would pause.

XTTS-v2 refuses more than 400 tokens per call and coqui's own splitter needs spaCy (not a
dependency of coqui-tts), so avatar splits text itself, with rules small enough to read:

1. Paragraphs (a blank line) and sentences end pieces. A sentence ends after `.` `!` `?` `…`
   followed by a space (closing quotes and brackets stay with it), or after the full stops
   that need no space: the Chinese/Japanese full stop, exclamation and question marks (`。`
   and the full-width forms), Devanagari danda `।` and `॥`, the Arabic question mark and the
   Urdu full stop.
   A `.` does not end a sentence before a lower-case letter, after a single capital letter
   ("J. K. Rowling") or after a known abbreviation ("Dr.", "z.B.").
2. A sentence longer than `max_chars` is cut after clause punctuation (`,` `;` `:` `—` and
   their CJK and Arabic forms), packing clauses together up to `max_chars`.
3. A clause still too long is cut at spaces, packing words up to `max_chars`.
4. A word still too long (Chinese or Japanese without punctuation, or any 600-character run
   without spaces) is cut every `max_chars` characters, never before a combining mark.

Runs of whitespace inside a piece become one space; every other character is kept, in order.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# Characters that close a sentence or quotation after its full stop: they stay with it.
_CLOSERS = "\"'”’»)\\]}」』）】》〉〕"  # noqa: RUF001
# Latin-script ends: need whitespace after them (so "3.5", "e.g.x" and URLs stay whole).
_LATIN_END = re.compile(rf"[.!?…]+[{_CLOSERS}]*(?=\s)")
# Ends that need no space after them.
_TIGHT_END = re.compile(rf"[。！？．｡।॥؟۔]+[{_CLOSERS}]*")  # noqa: RUF001
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
_WHITESPACE = re.compile(r"\s+")
# Clause cuts: after Latin clause punctuation and a space, or right after CJK/Arabic ones.
_CLAUSE_CUT = re.compile(rf"[,;:—–][{_CLOSERS}]*\s+|[，、；：،؛]+[{_CLOSERS}]*\s*")  # noqa: RUF001
_SPACE_CUT = re.compile(r"\s+")

# Words whose trailing "." is an abbreviation, not a full stop (lower-case, without the dot).
_ABBREVIATIONS: dict[str, str] = {
    "en": "mr mrs ms dr prof st jr sr vs etc e.g i.e no fig approx dept mt ave gen col lt sgt",
    "de": "z.b d.h u.a usw bzw nr dr prof hr fr str ca vgl s.o",
    "fr": "m mm mme mlle dr pr st ste av bd etc p.ex cf",
    "es": "sr sra srta dr dra ud uds etc pág p.ej núm",
    "it": "sig sigra dott prof ecc pag es",
    "pt": "sr sra dr dra prof etc pág ex",
    "nl": "dhr mevr dr prof bijv enz nr blz",
    "pl": "dr prof np itd itp ul nr",
    "cs": "dr prof např atd ul č",
    "ru": "г гг т.е т.д т.п др проф ул",  # noqa: RUF001
    "tr": "dr prof vb vs",
    "hu": "dr prof pl stb",
}


def split_text(text: str, language: str, *, max_chars: int) -> list[str]:
    """`text` as pieces of at most `max_chars` characters, in order, cut at sentence ends
    first, then at clause punctuation, then at spaces, and only then anywhere.

    `language` is an XTTS code (`zh_cn` is read as `zh-cn`); it selects the abbreviations
    that do not end a sentence. The full stops of every script are recognised whatever the
    language, since a text mixing scripts is common. Returns no empty pieces (whitespace-only
    text gives `[]`); joining the pieces loses no character other than whitespace.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    code = language.strip().lower().replace("_", "-")
    abbreviations = frozenset(_ABBREVIATIONS.get(code, "").split())
    pieces: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        for sentence in _sentences(paragraph, abbreviations):
            flat = _WHITESPACE.sub(" ", sentence).strip()
            if flat:
                pieces.extend(_fit(flat, max_chars))
    return pieces


def _sentences(paragraph: str, abbreviations: frozenset[str]) -> list[str]:
    """The paragraph cut after each sentence end (whitespace left on the pieces)."""
    ends = {m.end() for m in _TIGHT_END.finditer(paragraph)}
    for m in _LATIN_END.finditer(paragraph):
        if _ends_sentence(paragraph, m, abbreviations):
            ends.add(m.end())
    sentences, start = [], 0
    for end in sorted(ends):
        sentences.append(paragraph[start:end])
        start = end
    sentences.append(paragraph[start:])
    return sentences


def _ends_sentence(paragraph: str, match: re.Match[str], abbreviations: frozenset[str]) -> bool:
    """Whether a Latin full stop really ends a sentence (see the module docstring)."""
    following = paragraph[match.end() :].lstrip()
    if following[:1].islower():
        return False
    mark = match.group().rstrip(_CLOSERS)
    if mark != ".":  # "!", "?", "…", "..." and the like always end one
        return True
    before = paragraph[: match.start()].rsplit(None, 1)  # [] when only spaces precede it
    word = before[-1] if before else ""
    word = word.lstrip("\"'“‘([{«")  # noqa: RUF001
    if len(word) == 1 and word.isupper():
        return False
    return word.lower() not in abbreviations


def _fit(sentence: str, max_chars: int) -> list[str]:
    """`sentence` (whitespace already collapsed) in pieces of at most `max_chars`."""
    cutters: list[Callable[[str], list[str]]] = [
        lambda s: _cut_after(s, _CLAUSE_CUT),
        lambda s: _cut_after(s, _SPACE_CUT),
        lambda s: _cut_every(s, max_chars),
    ]
    return _fit_with(sentence, max_chars, cutters)


def _fit_with(text: str, max_chars: int, cutters: list[Callable[[str], list[str]]]) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    cut, *finer = cutters
    pieces: list[str] = []
    for packed in _pack(cut(text), max_chars):
        if len(packed) <= max_chars:
            pieces.append(packed)
        else:
            pieces.extend(_fit_with(packed, max_chars, finer))
    return pieces


def _cut_after(text: str, pattern: re.Pattern[str]) -> list[str]:
    """`text` cut after each match of `pattern` (the match stays on the left part)."""
    parts, start = [], 0
    for m in pattern.finditer(text):
        if m.end() > start:
            parts.append(text[start : m.end()])
            start = m.end()
    parts.append(text[start:])
    return [p for p in parts if p]


def _cut_every(text: str, max_chars: int) -> list[str]:
    """`text` in runs of `max_chars` characters; a run never starts with a combining mark
    (a Devanagari vowel sign or an accent) while it can give it back to the run before."""
    parts, start = [], 0
    while len(text) - start > max_chars:
        end = start + max_chars
        while end - 1 > start and unicodedata.category(text[end])[0] == "M":
            end -= 1
        parts.append(text[start:end])
        start = end
    parts.append(text[start:])
    return parts


def _pack(parts: list[str], max_chars: int) -> list[str]:
    """Consecutive parts joined while the stripped result fits in `max_chars`; stripped."""
    packed: list[str] = []
    current = ""
    for part in parts:
        if current and len((current + part).strip()) > max_chars:
            packed.append(current.strip())
            current = part
        else:
            current += part
    packed.append(current.strip())
    return [p for p in packed if p]
