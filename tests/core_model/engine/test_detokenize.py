# .venv/bin/python -m pytest tests/core_model/engine/test_detokenize.py -q
"""Streaming text: whole characters only, special tokens hidden, stop strings cut and never retracted."""

import string
import textwrap
from pathlib import Path

import pytest

from core_model.engine.detokenize import REPLACEMENT_CHAR, IncrementalDetokenizer, StopStrings
from core_model.tokenizer import EOS, Tokenizer, train_tokenizer

MULTIBYTE = "Café naïve — 東京タワー 🚀🎉 ok, ça va? Ünïcödé 👩‍💻 done."
EMOJI = "🚀"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    # ASCII only and a tiny vocab, so every non-ASCII character stays split into byte tokens.
    corpus = [Path(module.__file__).read_text(encoding="utf-8") for module in (textwrap, string)]
    return train_tokenizer([text.encode("ascii", "ignore").decode() for text in corpus], vocab_size=300)


def stream(detok: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    return [detok.add(token_id) for token_id in ids] + [detok.flush()]


def test_chunks_join_to_the_decoded_text(tok):
    chunks = stream(IncrementalDetokenizer(tok), tok.encode(MULTIBYTE))
    assert "".join(chunks) == MULTIBYTE


def test_no_chunk_holds_a_partial_character(tok):
    chunks = stream(IncrementalDetokenizer(tok), tok.encode(MULTIBYTE))
    assert not any(REPLACEMENT_CHAR in chunk for chunk in chunks)


def test_emoji_split_over_byte_tokens_appears_once_whole(tok):
    ids = tok.encode(EMOJI)
    assert len(ids) == 4  # one token per UTF-8 byte: the case under test
    assert stream(IncrementalDetokenizer(tok), ids) == ["", "", "", EMOJI, ""]


def test_text_is_everything_shown(tok):
    detok = IncrementalDetokenizer(tok)
    stream(detok, tok.encode(MULTIBYTE))
    assert detok.text == MULTIBYTE


def test_flush_shows_an_unfinished_character_as_replacement(tok):
    detok = IncrementalDetokenizer(tok)
    held = [detok.add(token_id) for token_id in tok.encode(EMOJI)[:2]]
    assert (held, detok.flush()) == (["", ""], REPLACEMENT_CHAR)


def test_special_tokens_are_hidden_by_default(tok):
    ids = [*tok.encode("hi"), tok.eos_id, *tok.encode(" there")]
    assert "".join(stream(IncrementalDetokenizer(tok), ids)) == "hi there"


def test_special_tokens_shown_when_not_skipped(tok):
    ids = [*tok.encode("hi"), tok.eos_id]
    assert "".join(stream(IncrementalDetokenizer(tok, skip_special_tokens=False), ids)) == f"hi{EOS}"


def test_decodes_a_short_window_not_the_whole_sequence(tok):
    class Recording:
        longest = 0

        def decode(self, ids, *, skip_special_tokens=False):
            self.longest = max(self.longest, len(ids))
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    recording = Recording()
    stream(IncrementalDetokenizer(recording), tok.encode(MULTIBYTE * 5))
    assert recording.longest <= 8  # two emoji of 4 bytes (context, then pending), however long the text


def test_stop_inside_one_feed():
    stops = StopStrings(("</s>",))
    assert stops.feed("hello</s> world") == ("hello", True)


def test_stop_spanning_two_feeds():
    stops = StopStrings(("</s>",))
    assert [stops.feed("hello</"), stops.feed("s> world")] == [("hello", False), ("", True)]


def test_partial_stop_is_held_then_released():
    stops = StopStrings(("</s>",))
    assert [stops.feed("a</"), stops.feed("b")] == [("a", False), ("</b", False)]


def test_flush_releases_held_text():
    stops = StopStrings(("</s>",))
    stops.feed("a</")
    assert stops.flush() == "</"


def test_earliest_of_several_stops_wins():
    stops = StopStrings(("World", "lo"))
    assert stops.feed("Hello World") == ("Hel", True)


def test_no_stops_pass_text_through():
    assert StopStrings(()).feed("anything</") == ("anything</", False)


def test_after_a_stop_nothing_more_is_emitted():
    stops = StopStrings(("x",))
    stops.feed("ax")
    assert stops.feed("more") == ("", True)


def test_empty_stop_string_raises():
    with pytest.raises(ValueError, match="non-empty"):
        StopStrings(("",))
