"""Completion prompts: the cursor's surroundings cut at line boundaries, snippets as comments
within their budget, the model family's FIM format; snippets to copy from.

.venv/bin/python -m pytest tests/apps/code_assist/test_prompts.py -q
"""

from __future__ import annotations

from dataclasses import replace

import torch

from apps.code_assist.prompts import (
    CONTEXT_CHARS,
    COPY_MIN_MATCH,
    COPY_UNTIL,
    SnippetTokens,
    build_prompt,
    context_blocks,
    cut_prefix,
    cut_suffix,
    engine_prompt,
)
from apps.code_assist.repository_index import Snippet
from apps.code_assist.settings import CodeAssistSettings
from core_model import load_model, load_tokenizer
from core_model.engine import Engine, EngineConfig, SamplingParams
from core_model.fim import fim_template


def snippet(path: str, body: str) -> Snippet:
    return Snippet(path, body, 1.0, 1, None)


def test_a_long_prefix_keeps_its_end_from_a_line_start():
    prefix = "".join(f"line_{i} = {i}\n" for i in range(200)) + "x = "
    kept = cut_prefix(prefix, 100)
    assert prefix.endswith(kept) and kept.startswith("line_") and len(kept) <= 100


def test_a_long_suffix_keeps_its_start_up_to_a_line_end():
    suffix = "".join(f"line_{i} = {i}\n" for i in range(200))
    kept = cut_suffix(suffix, 100)
    assert suffix.startswith(kept) and kept.endswith("\n") and len(kept) <= 100


def test_snippets_become_commented_blocks_in_the_files_language():
    [(_, block)] = context_blocks([snippet("src/a.ts", "export const a = 1;")], language="typescript")
    assert block == "// Path: src/a.ts\n// export const a = 1;\n"


def test_a_snippet_that_does_not_fit_is_skipped_for_the_next():
    big, small = snippet("big.py", "x = 1\n" * 200), snippet("small.py", "y = 2")
    kept = [s.filepath for s, _ in context_blocks([big, small], language="python")]
    assert kept == ["small.py"]
    assert sum(len(b) for _, b in context_blocks([small] * 100, language="python")) <= CONTEXT_CHARS


def test_the_prompt_is_in_the_tokenizers_fim_format_with_context_first():
    template = fim_template(load_tokenizer("embedded"))
    prompt = build_prompt(
        template,
        prefix="total = ",
        suffix="\n",
        language="python",
        snippets=[snippet("m.py", "def f(): ...")],
    )
    assert prompt.text == "<|fim_prefix|><|fim_suffix|>\n<|fim_middle|># Path: m.py\n# def f(): ...\ntotal = "
    assert [s.filepath for s in prompt.snippets] == ["m.py"]


def test_copying_pulls_a_completion_along_a_snippet_the_line_occurs_in():
    # The shipped adapter on the embedded model, as the service runs it: the line before the
    # cursor occurs in a snippet (kept out of the prompt here), and copying finishes it the way
    # the snippet does; without copying the model writes something of its own.
    tokenizer = load_tokenizer("embedded")
    model = load_model("embedded", dtype=torch.float32)
    engine = Engine(model, tokenizer, EngineConfig.for_serving(model))
    settings = CodeAssistSettings()
    engine.load_adapter("code", settings.adapter)
    template = fim_template(tokenizer)
    prefix = "class Order:\n    def add(self, name, price):\n        self.lines.append((name, "
    written = snippet("shop/cart.py", "        self.lines.append((name, to_cents(price), QUANTITY_ONE))\n")
    prompt = engine_prompt(
        tokenizer, build_prompt(template, prefix=prefix, suffix="\n", language="python").text
    )
    params = SamplingParams(
        max_tokens=16,
        temperature=0,
        stop=("\n",),
        stop_token_ids=template.stop_ids(tokenizer),
        first_token_ids=prompt.first_token_ids,
        copy_from=SnippetTokens(tokenizer).sources([written]),
        copy_min_match=COPY_MIN_MATCH,
        copy_until=COPY_UNTIL,
    )
    copied, free = engine.generate(
        [prompt.ids] * 2, [replace(params, copy_bias=settings.copy_bias), params], adapter="code"
    )
    assert prompt.completion_of(copied.text).startswith("to_cents(price), QUANTITY_ONE))")
    assert "QUANTITY_ONE" not in prompt.completion_of(free.text)
