"""Fill-in-the-middle prompt templates per model family, chosen by the tokenizer's own tokens.

    template = fim_template(tokenizer)            # "embedded" for ours, "deepseek-coder" for theirs
    prompt = template.prompt(prefix, suffix)      # in the family's order, PSM or SPM
    params = SamplingParams(max_tokens=64, stop_token_ids=template.stop_ids(tokenizer))

Each family was trained with its own sentinel tokens and order, and a model only fills in the
middle when its prompt uses them (as single special tokens, not their text spelled out in
pieces): the template is therefore picked by which tokens the tokenizer has, never by a model's
name. The stop tokens end a completion where the family ends a document or a file. This module
formats prompts; it does not tokenize, generate or post-process.

Two orders (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle"):
- PSM, prefix-suffix-middle: `<PRE>prefix<SUF>suffix<MID>`, then the middle.
- SPM, suffix-prefix-middle, in the paper's variant: `<PRE><SUF>suffix<MID>prefix`, then the
  middle. The prefix runs straight into the middle, so the model continues the text before the
  cursor as plain left-to-right text and reads the suffix as what it must lead to. This project's
  small embedded model fills in the middle far better in this order (the code-assist README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


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
    order: Literal["psm", "spm"] = "psm"
    # More tokens the family's tokenizers have: they tell apart families spelling the sentinels alike.
    marker_tokens: tuple[str, ...] = ()

    def prompt(self, prefix: str, suffix: str) -> str:
        """The prompt after which the model writes what goes between `prefix` and `suffix`."""
        s = self.separator
        if self.order == "spm":
            return f"{self.prefix_token}{s}{self.suffix_token}{suffix}{s}{self.middle_token}{prefix}"
        return f"{self.prefix_token}{s}{prefix}{s}{self.suffix_token}{suffix}{s}{self.middle_token}"

    def stop_ids(self, tokenizer: _Vocabulary) -> tuple[int, ...]:
        """Ids of this family's stop tokens that `tokenizer` has (the end-of-text one among them)."""
        ids = (tokenizer.token_to_id(token) for token in self.stop_tokens)
        return tuple(i for i in ids if i is not None)

    def fits(self, tokenizer: _Vocabulary) -> bool:
        """Whether `tokenizer` has this family's sentinels and markers as single tokens."""
        tokens = (self.prefix_token, self.suffix_token, self.middle_token, *self.marker_tokens)
        return all(tokenizer.token_to_id(token) is not None for token in tokens)


# In order of preference: the first that fits the tokenizer is used.
TEMPLATES = (
    # This project's tokenizers (`core_model.tokenizer`): SPM.
    FimTemplate(
        "embedded",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        ("<|eos|>", "<|fim_prefix|>"),
        order="spm",
        marker_tokens=("<|bos|>", "<|eos|>"),
    ),
    # Qwen2.5-Coder: the same sentinels as ours, PSM.
    FimTemplate(
        "qwen2.5-coder",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|fim_prefix|>"),
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
    """The template that fits the tokenizer's tokens; a ValueError when none does (the model was
    not trained to fill in the middle, and a prompt in another family's format would only confuse it)."""
    for template in TEMPLATES:
        if template.fits(tokenizer):
            return template
    families = ", ".join(t.family for t in TEMPLATES)
    raise ValueError(f"this tokenizer has no fill-in-the-middle tokens of any known family ({families})")
