"""Fill-in-the-middle prompt templates per model family, chosen by the tokenizer's own tokens.

    template = fim_template(tokenizer)            # "embedded" for ours, "deepseek-coder" for theirs
    prompt = template.prompt(prefix, suffix)      # prefix-suffix-middle (PSM) order
    params = SamplingParams(max_tokens=64, stop_token_ids=template.stop_ids(tokenizer))

Each family was trained with its own sentinel tokens, and a model only fills in the middle when
its prompt uses them (as single special tokens, not their text spelled out in pieces): the
template is therefore picked by which sentinels the tokenizer has, never by a model's name. The
stop tokens end a completion where the family ends a document or a file. This module formats
prompts; it does not tokenize, generate or post-process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class _Vocabulary(Protocol):
    def token_to_id(self, token: str | None) -> int | None: ...


@dataclass(frozen=True)
class FimTemplate:
    family: str
    prefix_token: str
    suffix_token: str
    middle_token: str
    stop_tokens: tuple[str, ...]
    separator: str = ""  # between a sentinel and the text, for families trained with a space

    def prompt(self, prefix: str, suffix: str) -> str:
        """The PSM prompt: the model writes what goes between `prefix` and `suffix`."""
        s = self.separator
        return f"{self.prefix_token}{s}{prefix}{s}{self.suffix_token}{suffix}{s}{self.middle_token}"

    def stop_ids(self, tokenizer: _Vocabulary) -> tuple[int, ...]:
        """Ids of this family's stop tokens that `tokenizer` has (the end-of-text one among them)."""
        ids = (tokenizer.token_to_id(token) for token in self.stop_tokens)
        return tuple(i for i in ids if i is not None)


# In order of preference: the first whose three sentinels are all single tokens is used.
TEMPLATES = (
    # This project's tokenizers (and Qwen2.5-Coder's, which spell the sentinels the same way).
    FimTemplate(
        "embedded",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        ("<|eos|>", "<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|fim_prefix|>"),
    ),
    # DeepSeek-Coder (1.3B to 33B) and DeepSeek-Coder-V2: full-width bars and the "▁" separator.
    FimTemplate(
        "deepseek-coder",
        "<｜fim▁begin｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁end｜>",
        ("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>"),
    ),
    # StarCoder, StarCoder2, SantaCoder.
    FimTemplate(
        "starcoder",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        ("<|endoftext|>", "<file_sep>", "<fim_prefix>"),
    ),
    # Code Llama (its infilling models): sentinels followed by a space.
    FimTemplate("codellama", "<PRE>", "<SUF>", "<MID>", ("<EOT>", "</s>"), separator=" "),
)


def fim_template(tokenizer: _Vocabulary) -> FimTemplate:
    """The template whose sentinels `tokenizer` has; a ValueError when it has none (the model was
    not trained to fill in the middle, and a prompt in another family's format would only confuse it)."""
    for template in TEMPLATES:
        sentinels = (template.prefix_token, template.suffix_token, template.middle_token)
        if all(tokenizer.token_to_id(token) is not None for token in sentinels):
            return template
    families = ", ".join(t.family for t in TEMPLATES)
    raise ValueError(f"this tokenizer has no fill-in-the-middle tokens of any known family ({families})")
