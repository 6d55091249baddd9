"""split_text: long text into pieces the speech models accept, cut where a reader pauses."""

# The full-width punctuation these tests use is the point of them.
# ruff: noqa: RUF001

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avatar.stages.voice.text import split_text


def non_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


def assert_well_formed(pieces: list[str], text: str, max_chars: int) -> None:
    """What every caller relies on: no empty or padded piece, none too long, nothing lost."""
    for piece in pieces:
        assert piece, pieces
        assert piece == piece.strip(), piece
        assert len(piece) <= max_chars, (len(piece), piece)
    assert non_space("".join(pieces)) == non_space(text)


def test_english_sentences_become_pieces_of_their_own() -> None:
    text = "Hello there. How are you? I am fine! Thanks… See you."
    assert split_text(text, "en", max_chars=250) == [
        "Hello there.",
        "How are you?",
        "I am fine!",
        "Thanks…",
        "See you.",
    ]


def test_abbreviations_initials_decimals_and_lower_case_do_not_end_a_sentence() -> None:
    text = 'Dr. Smith met J. K. Rowling at 3.5 p.m. on the quay. "Really?" she asked.'
    assert split_text(text, "en", max_chars=250) == [
        "Dr. Smith met J. K. Rowling at 3.5 p.m. on the quay.",
        '"Really?" she asked.',
    ]


def test_closing_quotes_stay_with_their_sentence() -> None:
    pieces = split_text('He said "Stop." Then he left.', "en", max_chars=250)
    assert pieces == ['He said "Stop."', "Then he left."]


def test_german_abbreviation_does_not_end_a_sentence() -> None:
    pieces = split_text("Wir kaufen Obst, z.B. Äpfel. Dann gehen wir.", "de", max_chars=250)
    assert pieces == ["Wir kaufen Obst, z.B. Äpfel.", "Dann gehen wir."]


def test_a_600_character_sentence_without_punctuation_is_cut_at_spaces() -> None:
    words = [f"word{i}" for i in range(100)]
    text = " ".join(words)
    assert len(text) > 600
    pieces = split_text(text, "en", max_chars=250)
    assert len(pieces) == 3
    assert_well_formed(pieces, text, 250)
    # cut between words, never inside one
    assert [w for p in pieces for w in p.split(" ")] == words


def test_600_characters_without_spaces_or_punctuation_are_cut_at_max_chars() -> None:
    text = "abcdefghij" * 60
    pieces = split_text(text, "en", max_chars=250)
    assert [len(p) for p in pieces] == [250, 250, 100]
    assert "".join(pieces) == text


def test_long_sentence_is_cut_at_clause_punctuation_before_spaces() -> None:
    text = (
        "When the rain finally stopped over the hills, the shepherds came down to the village, "
        "and everyone in the square started talking at once about the harvest"
    )
    pieces = split_text(text, "en", max_chars=90)
    assert pieces == [
        "When the rain finally stopped over the hills, the shepherds came down to the village,",
        "and everyone in the square started talking at once about the harvest",
    ]


def test_chinese_text_is_cut_after_its_full_stops_without_spaces() -> None:
    text = "今天天气很好。我们去公园吧！你觉得怎么样？「好的。」然后呢"
    assert split_text(text, "zh-cn", max_chars=82) == [
        "今天天气很好。",
        "我们去公园吧！",
        "你觉得怎么样？",
        "「好的。」",
        "然后呢",
    ]


def test_zh_cn_with_underscore_is_read_the_same() -> None:
    text = "今天天气很好。我们去公园吧！"
    assert split_text(text, "zh_cn", max_chars=82) == split_text(text, "zh-cn", max_chars=82)


def test_long_chinese_sentence_is_cut_at_commas_then_at_max_chars() -> None:
    clause = "这是一个很长的句子没有任何标点符号" * 3  # 51 characters
    text = f"{clause}，{clause}{clause}。"
    pieces = split_text(text, "zh-cn", max_chars=82)
    assert pieces[0] == f"{clause}，"
    assert_well_formed(pieces, text, 82)
    assert pieces[-1].endswith("。")


def test_japanese_text_is_cut_at_sentences_then_commas_then_max_chars() -> None:
    text = (
        "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ、"
        "何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。"
    )
    pieces = split_text(text, "ja", max_chars=20)
    assert pieces[:3] == [
        "吾輩は猫である。",
        "名前はまだ無い。",
        "どこで生れたかとんと見当がつかぬ、",
    ]
    assert_well_formed(pieces, text, 20)
    assert len(pieces) == 5


def test_mixed_scripts_are_cut_at_each_scripts_sentence_ends() -> None:
    text = "This is English. 这是中文。これは日本語です！ यह हिंदी है। هل هذا عربي؟ Back to English."
    assert split_text(text, "en", max_chars=100) == [
        "This is English.",
        "这是中文。",
        "これは日本語です！",
        "यह हिंदी है।",
        "هل هذا عربي؟",
        "Back to English.",
    ]


def test_hindi_word_cut_at_max_chars_keeps_vowel_signs_with_their_letters() -> None:
    text = "हिन्दीहिन्दीहिन्दी"  # no spaces: a hard cut must not strand a vowel sign
    pieces = split_text(text, "hi", max_chars=4)
    assert_well_formed(pieces, text, 4)
    assert all(not ("\u093e" <= p[0] <= "\u094d") for p in pieces)


def test_blank_lines_end_a_piece_and_wrapped_lines_do_not() -> None:
    text = "A line that wraps\nonto the next line\n\n  A new paragraph without a stop"
    assert split_text(text, "en", max_chars=250) == [
        "A line that wraps onto the next line",
        "A new paragraph without a stop",
    ]


@pytest.mark.parametrize("text", ["", " ", "\n\n\t \u3000 \n"])
def test_whitespace_only_text_gives_no_pieces(text: str) -> None:
    assert split_text(text, "en", max_chars=250) == []


def test_max_chars_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        split_text("Hello.", "en", max_chars=0)


# ---------------------------------------------------------------- properties

ALPHABET = st.sampled_from(
    list("abc XYZ.,;!?…\n\t\"'")
    + list("。！？，、「」中文日本語")
    + ["।", "؟", "،", "\u093f", "हि"]
)
TEXTS = st.lists(ALPHABET, max_size=400).map("".join) | st.text(max_size=300)


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, max_chars=st.integers(1, 120), language=st.sampled_from(["en", "zh-cn", "ja"]))
def test_pieces_are_never_empty_never_too_long_and_lose_no_character(
    text: str, max_chars: int, language: str
) -> None:
    assert_well_formed(split_text(text, language, max_chars=max_chars), text, max_chars)


@settings(max_examples=200, deadline=None)
@given(
    sentences=st.lists(st.text(alphabet="中文日本語字", min_size=1, max_size=30), min_size=1),
    max_chars=st.integers(31, 100),
)
def test_every_cjk_sentence_that_fits_is_one_piece(sentences: list[str], max_chars: int) -> None:
    text = "".join(f"{s}。" for s in sentences)
    assert split_text(text, "zh-cn", max_chars=max_chars) == [f"{s}。" for s in sentences]


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=12), min_size=1),
    max_chars=st.integers(12, 80),
)
def test_text_without_punctuation_is_cut_only_between_words(
    words: list[str], max_chars: int
) -> None:
    pieces = split_text(" ".join(words), "en", max_chars=max_chars)
    assert [w for p in pieces for w in p.split(" ")] == words
    # greedy: no two neighbouring pieces would have fitted together
    for left, right in itertools.pairwise(pieces):
        assert len(left) + 1 + len(right) > max_chars


def test_a_full_stop_with_only_spaces_before_it_is_kept() -> None:
    """Found by the property test: ' . ' once raised IndexError."""
    assert split_text(" . ", "en", max_chars=1) == ["."]
