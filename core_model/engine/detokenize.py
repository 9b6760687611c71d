"""Streaming text out of token ids: an incremental detokenizer and a stop-string matcher.

`IncrementalDetokenizer` turns one id at a time into the new text that is safe to show, never half
of a multi-byte character. `StopStrings` holds back text that might begin a stop string and cuts
the stream where one appears, so a client never sees text that is later taken back. Neither samples,
counts tokens, or checks stop token ids and EOS (the engine does that on ids), and neither knows
about requests: the engine keeps one of each per request.
"""

from __future__ import annotations

from typing import Protocol

# What byte-level BPE decodes an incomplete UTF-8 sequence to.
REPLACEMENT_CHAR = "\ufffd"


class TextDecoder(Protocol):
    """The one method of `core_model.tokenizer.Tokenizer` this module needs."""

    def decode(self, ids: list[int], *, skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Decodes one id at a time and shows text only once its characters are whole.

    The prefix/read offsets of Hugging Face TGI and vLLM: `_window` holds the ids from the prefix
    offset on; those before `_read` (the read offset) are shown and give the decoder its context,
    those after are not shown yet. Each step decodes this window twice and shows the difference
    unless it ends in U+FFFD (a character still missing bytes). Once shown, the window slides, so
    the cost per token stays constant however long the sequence grows.
    """

    def __init__(self, tokenizer: TextDecoder, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._window: list[int] = []
        self._read = 0
        self._text = ""

    @property
    def text(self) -> str:
        """All text shown so far."""
        return self._text

    def add(self, token_id: int) -> str:
        """Take one generated id; return the new text safe to show ("" while a character is partial)."""
        self._window.append(token_id)
        shown, full = self._decode(self._window[: self._read]), self._decode(self._window)
        if len(full) <= len(shown) or full.endswith(REPLACEMENT_CHAR):
            return ""
        return self._show(full[len(shown) :])

    def flush(self) -> str:
        """Return what is held back when generation ends (an unfinished character shows as U+FFFD)."""
        shown, full = self._decode(self._window[: self._read]), self._decode(self._window)
        return self._show(full[len(shown) :]) if len(full) > len(shown) else ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def _show(self, new_text: str) -> str:
        # The ids just shown become the context of the next step; everything before them is dropped.
        self._window = self._window[self._read :]
        self._read = len(self._window)
        self._text += new_text
        return new_text


class StopStrings:
    """Cuts a text stream before the first stop string, never emitting any part of one.

    Only the tail that could still grow into a stop string is held back, at most the longest stop
    minus one character; with no stops, text passes straight through.
    """

    def __init__(self, stops: tuple[str, ...] | list[str] | str = ()) -> None:
        stops = (stops,) if isinstance(stops, str) else tuple(stops)
        if not all(stops):
            raise ValueError(f"stop strings must be non-empty, got {stops!r}")
        self.stops = stops
        self.stopped = False
        self._held = ""

    def feed(self, new_text: str) -> tuple[str, bool]:
        """Return (text safe to emit now, whether a stop string has appeared)."""
        if self.stopped:
            return "", True
        text = self._held + new_text
        cut = min((i for i in (text.find(stop) for stop in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held, self.stopped = "", True
            return text[:cut], True
        keep = self._partial_stop_length(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """Release the held-back text, for when generation ends for another reason."""
        held, self._held = self._held, ""
        return held

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
