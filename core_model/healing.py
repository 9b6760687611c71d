"""Token healing: a prompt cut inside a word ends inside a token.

A byte-level BPE splits ` retur` into pieces (` re`, `tur`) it never uses for ` return`, so a model
trained on whole words has rarely seen what follows them, and continues badly (the cursor of a code
completion is mid-word most of the time). Healing backs the prompt up by its last tokens and lets
the first generated token be any token whose text starts with theirs: the model then picks the
tokenization it knows, ` return`, and the completion is what comes after the text backed off. It
backs up as many tokens (at most `MAX_HEALED_TOKENS`) as some single token can still start with; one
can (the last token itself) unless it holds part of a character only. The technique of Microsoft's
guidance library.

    healed = heal(tokenizer, tokenizer.encode(prompt_text, add_bos=True))
    params = SamplingParams(max_tokens=32, first_token_ids=healed.first_token_ids)
    output = engine.generate([healed.ids], params)[0]
    completion = healed.completion_of(output.text)

Added tokens (special tokens such as the fill-in-the-middle sentinels) are never backed off: a
prompt ending with one is left as it is. It does not generate or sample: the engine's
`SamplingParams.first_token_ids` does.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from dataclasses import dataclass

from .tokenizer import Tokenizer


@dataclass(frozen=True)
class HealedPrompt:
    ids: list[int]
    healed_text: str  # the text backed off ("" when nothing was): every completion starts with it
    first_token_ids: tuple[int, ...]  # the first generated token is one of these (empty: any)

    def completion_of(self, text: str) -> str:
        """A completion of `ids` without the text backed off: the completion of the original prompt."""
        return text[len(self.healed_text) :] if text.startswith(self.healed_text) else text


MAX_HEALED_TOKENS = 3


def heal(tokenizer: Tokenizer, ids: list[int]) -> HealedPrompt:
    """`ids` backed up by their last tokens (rules in the module docstring); a prompt of one
    token, or ending with an added one, comes back whole."""
    if not ids or ids[-1] in tokenizer.backend.get_added_tokens_decoder():
        return HealedPrompt(list(ids), "", ())  # a sentinel ends PSM prompts: no vocabulary needed
    texts, by_first_char = _vocabulary(tokenizer)
    for count in range(min(MAX_HEALED_TOKENS, len(ids) - 1), 0, -1):
        tail = [texts[i] for i in ids[-count:]]
        if not all(tail):
            continue  # an added token
        text = "".join(tail)
        allowed = tuple(i for i in by_first_char.get(text[0], ()) if texts[i].startswith(text))
        if allowed:
            return HealedPrompt(ids[:-count], text, allowed)
    return HealedPrompt(list(ids), "", ())


_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _vocabulary(tokenizer: Tokenizer) -> tuple[list[str], dict[str, list[int]]]:
    """Each id's text ("" for added tokens, which healing never offers) and the ids by first
    character; built once per tokenizer (7 ms for the embedded 8k vocabulary)."""
    if tokenizer not in _VOCABULARIES:
        added = set(tokenizer.backend.get_added_tokens_decoder())
        texts = ["" if i in added else tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
        by_first_char: dict[str, list[int]] = defaultdict(list)
        for i, text in enumerate(texts):
            if text and "\ufffd" not in text:
                by_first_char[text[0]].append(i)
        _VOCABULARIES[tokenizer] = (texts, dict(by_first_char))
    return _VOCABULARIES[tokenizer]
