"""Completion prompts: the cursor's surroundings cut at line boundaries, snippets as comments
within their budget, the model family's FIM format.

.venv/bin/python -m pytest tests/apps/code_assist/test_prompts.py -q
"""

from __future__ import annotations

from apps.code_assist.prompts import CONTEXT_CHARS, build_prompt, context_blocks, cut_prefix, cut_suffix
from apps.code_assist.repository_index import Snippet
from core_model import load_tokenizer
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
