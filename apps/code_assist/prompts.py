"""Completion prompts: the text around the cursor and the repository's snippets, cut to the
budgets the code adapter was trained with, in the model family's fill-in-the-middle format.

    prompt = build_prompt(fim_template(tokenizer), prefix=before, suffix=after, language="python",
                          snippets=[Snippet("pkg/db.py", "def connect(url): ...")])
    engine.generate([prompt.text], ...)

Snippets go at the top of the prefix as line comments under a `Path:` line per file, as Tabby
does: the prompt stays a plausible source file, and the model reads the snippets as what comes
before. The same budgets cut the training examples (`training.py`) and the served prompts, so
the adapter sees at training time what it is given at serving time. `engine_prompt` turns the
text into the token ids the engine is given, healed (`core_model.healing`): the cursor is mostly
in the middle of a word.

The prompt has room for a few hundred characters of snippets; far more of them are given to the
engine as text to copy from (`SnippetTokens`, `core_model.engine.copying`): once the last
`COPY_MIN_MATCH` tokens of the completion so far (the line before the cursor included) occur in
one of them, the tokens that continue it there are raised by the settings' `copy_bias`, up to the
end of the line. The
embedded model does not copy from its prompt's snippets by itself (repository context in the
prompt alone scored level with none); pulled along them, it completes a line the repository
already writes elsewhere.

This module does not retrieve snippets (`repository_index.py`), generate or post-process.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from apps.code_assist.languages import line_comment
from apps.code_assist.repository_index import Snippet, fit_budget
from core_model.fim import FimTemplate
from core_model.healing import HealedPrompt, heal
from core_model.tokenizer import Tokenizer

# Characters, not tokens: the editor's text is cut before tokenizing (about 3.4 characters per
# token on Python with the embedded tokenizer: about 300 tokens on average, plus up to 64 generated).
PREFIX_CHARS = 700
SUFFIX_CHARS = 200
CONTEXT_CHARS = 400
# Snippet bodies asked of the index: more than fits, as the commented blocks are cut to CONTEXT_CHARS.
CANDIDATE_CHARS = 2 * CONTEXT_CHARS
PROMPT_SNIPPETS = 4  # at most, of those
# Snippet bodies given to copy from, and how many tokens of the text must match one before it
# pulls: chosen on 300 cursors of the held-out packages (`line_cases` seed 1), not the benchmark's.
COPY_CHARS = 12_000
COPY_SNIPPETS = 24
COPY_MIN_MATCH = 3
# Copying ends at the end of the line: pulled on past it, completions copied the snippet's next
# lines to the token limit (26 tokens on average against 16, for no gain on the line itself).
COPY_UNTIL = ("\n",)


class SnippetLike(Protocol):
    filepath: str
    body: str


@dataclass(frozen=True)
class CompletionPrompt:
    text: str  # what the engine is given
    context: str  # the commented snippets at its top ("" when none)
    prefix: str  # the part of the editor's prefix that was kept
    suffix: str  # the part of the editor's suffix that was kept
    snippets: tuple[SnippetLike, ...] = ()  # those whose blocks fit the context budget


def cut_prefix(prefix: str, limit: int = PREFIX_CHARS) -> str:
    """The last `limit` characters of `prefix`, starting at a line boundary when one is near."""
    if len(prefix) <= limit:
        return prefix
    kept = prefix[-limit:]
    newline = kept.find("\n")
    return kept[newline + 1 :] if 0 <= newline < limit // 4 else kept


def cut_suffix(suffix: str, limit: int = SUFFIX_CHARS) -> str:
    """The first `limit` characters of `suffix`, ending at a line boundary when one is near."""
    if len(suffix) <= limit:
        return suffix
    kept = suffix[:limit]
    newline = kept.rfind("\n")
    return kept[: newline + 1] if newline >= limit * 3 // 4 else kept


def context_blocks(
    snippets: Sequence[SnippetLike], *, language: str | None, limit: int = CONTEXT_CHARS
) -> list[tuple[SnippetLike, str]]:
    """The snippets that fit, each with its commented block (`# Path: FILE` then the body, each
    line commented), in the given order (best first): a snippet is kept whole or left out, so
    the blocks total at most `limit` characters."""
    comment = line_comment(language)
    kept: list[tuple[SnippetLike, str]] = []
    used = 0
    for snippet in snippets:
        lines = [f"{comment} Path: {snippet.filepath}"]
        lines += [f"{comment} {line}".rstrip() for line in snippet.body.strip("\n").splitlines()]
        block = "\n".join(lines) + "\n"
        if used + len(block) <= limit:
            kept.append((snippet, block))
            used += len(block)
    return kept


def render_context(
    snippets: Sequence[SnippetLike], *, language: str | None, limit: int = CONTEXT_CHARS
) -> str:
    """The commented blocks of the snippets that fit `limit`, as they open the prompt."""
    return "".join(block for _, block in context_blocks(snippets, language=language, limit=limit))


def build_prompt(
    template: FimTemplate,
    *,
    prefix: str,
    suffix: str,
    language: str | None,
    snippets: Sequence[SnippetLike] = (),
) -> CompletionPrompt:
    """The fill-in-the-middle prompt for a cursor between `prefix` and `suffix`."""
    blocks = context_blocks(snippets, language=language)
    context = "".join(block for _, block in blocks)
    kept_prefix, kept_suffix = cut_prefix(prefix), cut_suffix(suffix)
    return CompletionPrompt(
        text=template.prompt(context + kept_prefix, kept_suffix),
        context=context,
        prefix=kept_prefix,
        suffix=kept_suffix,
        snippets=tuple(snippet for snippet, _ in blocks),
    )


@dataclass(frozen=True)
class CursorContext:
    prompt: list[Snippet]  # for the prompt, which fits a few of them (`build_prompt`)
    copy: list[Snippet]  # to copy from (`SnippetTokens`)


def cursor_context(
    given: Sequence[Snippet], ranked: Sequence[Snippet], *, current: str | None
) -> CursorContext:
    """The editor's snippets (`given`: it knows what the cursor refers to), then the index's
    (`ranked`, best first): as many as the prompt's budget asks for, and as many as copying does;
    leaving out empty ones, repeated bodies and those of the `current` file."""
    for_prompt = fit_budget(ranked, budget_chars=CANDIDATE_CHARS, k=PROMPT_SNIPPETS)
    for_copy = fit_budget(ranked, budget_chars=COPY_CHARS, k=COPY_SNIPPETS)
    return CursorContext(
        prompt=_distinct([*given, *for_prompt], current=current),
        copy=_distinct([*given, *for_copy], current=current),
    )


def _distinct(snippets: list[Snippet], *, current: str | None) -> list[Snippet]:
    seen, kept = set(), []
    for snippet in snippets:
        if snippet.body.strip() and snippet.body not in seen and snippet.filepath != current:
            seen.add(snippet.body)
            kept.append(snippet)
    return kept


class SnippetTokens:
    """Snippet bodies as token ids, for `SamplingParams.copy_from`, the last `size` remembered: an
    index's chunks come back request after request, and encoding 24 of them costs about 6 ms."""

    def __init__(self, tokenizer: Tokenizer, size: int = 2048) -> None:
        self._encode = functools.lru_cache(maxsize=size)(lambda body: tuple(tokenizer.encode(body)))

    def sources(self, snippets: Sequence[SnippetLike]) -> tuple[tuple[int, ...], ...]:
        return tuple(self._encode(snippet.body) for snippet in snippets)


def engine_prompt(tokenizer: Tokenizer, text: str, *, healed: bool = True) -> HealedPrompt:
    """The prompt's token ids, backed up by the tokens the completion must start with unless
    `healed` is off (generate with `first_token_ids`, then take `completion_of` the output)."""
    ids = tokenizer.encode(text, add_bos=tokenizer.bos_id is not None)
    return heal(tokenizer, ids) if healed else HealedPrompt(ids, "", ())
