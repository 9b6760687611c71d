"""Post-processing of completions: loops, cursor scope, suffix repetition, syntax trimming, blank tails.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/apps/code_assist/test_postprocess.py -q
"""

import pytest

from apps.code_assist import postprocess as postprocess_module
from apps.code_assist.postprocess import (
    MAX_CHECKS,
    cut_loops,
    is_looping,
    is_mid_line,
    postprocess,
    scope_is_settled,
)

PY_FUNCTION = "def f(x):\n    "  # a cursor on a new line of a function body
PY_AFTER = "\n    return x\n"


def test_text_after_the_cursor_makes_it_mid_line_but_auto_closed_brackets_do_not():
    assert is_mid_line(", c)\nnext = 1\n")
    assert not is_mid_line(")]\nnext = 1\n") and not is_mid_line("\nnext = 1\n")


def test_a_loop_within_a_line_is_cut_after_its_first_turn_and_ends_the_completion():
    looping = "bottom_in_in_in_in_in_in_in_in_in_in_in_in\n    return 1"
    assert cut_loops(looping) == "bottom_in" and is_looping(looping)
    out = postprocess(
        "rent + self.width + self.width + self.width + self.width + self.wi",
        prefix="x = self.cur",
        suffix="\n",
        language="python",
    )
    assert out == "rent + self.width"  # cut, then the dangling " +" trimmed to what parses


def test_the_third_identical_line_in_a_row_ends_the_completion_after_the_first():
    assert cut_loops("import a\nimport b\nimport b\nimport b\nimport") == "import a\nimport b"
    assert cut_loops("b = 1\nb = 1\nc") == "b = 1\nb = 1\nc"  # twice can be meant


def test_repeats_that_code_writes_are_not_loops():
    for text in ("x = [0, 0, 0, 0]", "# " + "-" * 60, " " * 40 + "pass", 'b"\\x00\\x00"', "a.b.c.d.e"):
        assert not is_looping(text), text


def test_mid_line_cursor_stops_at_end_of_line():
    out = postprocess("a, b\ny = 2", prefix="x = f(", suffix=", c)\n", language="python")
    assert out == "a, b"


def test_new_line_in_a_python_function_gets_the_block_and_stops_at_dedent():
    completion = "y = x + 1\n    if y:\n        y -= 1\n    return y\n\n\ndef g():\n    pass"
    out = postprocess(completion, prefix=PY_FUNCTION, suffix="\n", language="python")
    assert out == "y = x + 1\n    if y:\n        y -= 1\n    return y"


def test_end_of_a_line_that_opens_a_block_gets_its_body():
    out = postprocess("\n    return x\n\nprint(f(1))", prefix="def f(x):", suffix="\n", language="python")
    assert out == "\n    return x"


def test_end_of_a_line_that_opens_nothing_gets_only_that_line():
    out = postprocess("ute(a)\ny = 2", prefix="x = comp", suffix="\n", language="python")
    assert out == "ute(a)"


def test_an_auto_closed_brace_after_the_cursor_allows_a_block():
    out = postprocess("\n  return 1;\n}", prefix="function f() {", suffix="}\n", language="javascript")
    assert out == "\n  return 1;\n"


def test_a_closing_line_is_kept_when_the_suffix_leaves_the_block_open():
    completion = "\n  return 1;\n}\nfoo();"
    out = postprocess(
        completion, prefix="function f() {", suffix="\n\nfunction g() {}\n", language="javascript"
    )
    assert out == "\n  return 1;\n}"


def test_a_closing_line_is_dropped_when_the_suffix_closes_the_block():
    out = postprocess("\n  return 1;\n}", prefix="function f() {", suffix="\n}\n", language="javascript")
    assert out == "\n  return 1;"


def test_a_completion_line_equal_to_the_next_suffix_line_stops_it():
    out = postprocess("y = x + 1\n    return x\n", prefix=PY_FUNCTION, suffix=PY_AFTER, language="python")
    assert out == "y = x + 1"


def test_a_tail_repeating_the_start_of_the_suffix_is_cut():
    prefix, suffix = "def f(x):\n    y = g(", ")\n    return y\n"
    out = postprocess("x + 1)\n    return y", prefix=prefix, suffix=suffix, language="python")
    assert out == "x + 1"


def test_an_auto_closed_paren_is_not_duplicated():
    out = postprocess("a, b)", prefix="y = g(", suffix=")\n", language="python")
    assert out == "a, b"


def test_a_paren_closing_a_nested_call_is_kept():
    out = postprocess("h(a)", prefix="y = g(", suffix=")\n", language="python")
    assert out == "h(a)"


def test_a_javascript_completion_leaving_a_brace_open_mid_file_is_trimmed_to_one_that_parses():
    prefix, suffix = "function f(x) {\n  ", "\n  return x;\n}\n\nfunction g() {}\n"
    completion = "const y = x + 1;\n  if (y) {\n    log(y);"
    assert postprocess(completion, prefix=prefix, suffix=suffix, language="javascript") == "const y = x + 1;"


def test_a_python_completion_breaking_the_file_is_trimmed():
    completion = "y = x + 1\n    if x\n        y += 1"
    assert postprocess(completion, prefix=PY_FUNCTION, suffix=PY_AFTER, language="python") == "y = x + 1"


def test_a_python_completion_breaking_the_file_from_its_first_line_is_dropped():
    assert postprocess("if x\n        x += 1", prefix=PY_FUNCTION, suffix=PY_AFTER, language="python") == ""


@pytest.mark.parametrize("language", ["python", "javascript"])
def test_a_completion_in_an_already_broken_file_is_not_dropped_for_it(language):
    prefix = {
        "python": "def f(x):\n    y = compute(x,",
        "javascript": "function f(x) {\n  const y = compute(x,",
    }
    suffix = {"python": "\n    return y\n", "javascript": "\n  return y;\n}\n"}
    assert postprocess(" 2", prefix=prefix[language], suffix=suffix[language], language=language) == " 2"


# language: (prefix, suffix, completion whose last line breaks the file, what is kept)
BROKEN_LAST_LINE = {
    "go": ("func f(x int) int {\n\t", "\n\treturn x\n}\n", "y := x + 1\n\tif y > 0 {", "y := x + 1"),
    "java": (
        "class A {\n  int f(int x) {\n    ",
        "\n  }\n}\n",
        "int y = x + 1;\n    return y",
        "int y = x + 1;",
    ),
    "cpp": ("int f(int x) {\n  ", "\n  return x;\n}\n", "int y = x + 1;\n  if (y) {", "int y = x + 1;"),
    "typescript": ("function f(x: number) {\n  ", "\n}\n", "const y = x;\n  return y as;", "const y = x;"),
}


@pytest.mark.parametrize("language", sorted(BROKEN_LAST_LINE))
def test_a_broken_last_line_is_trimmed(language):
    prefix, suffix, completion, kept = BROKEN_LAST_LINE[language]
    assert postprocess(completion, prefix=prefix, suffix=suffix, language=language) == kept


def test_an_unknown_language_is_scoped_but_not_syntax_checked():
    assert postprocess("foo(\nbar", prefix="call ", suffix="\n", language="cobol") == "foo("


def test_trailing_blank_lines_are_trimmed():
    assert postprocess("y = 1\n    \n\n", prefix=PY_FUNCTION, suffix=PY_AFTER, language="python") == "y = 1"


def test_a_whitespace_only_completion_is_dropped():
    assert postprocess("   \n  ", prefix=PY_FUNCTION, suffix=PY_AFTER, language="python") == ""


SETTLING = [  # (prefix, suffix, a completion as generated, how many characters settle its scope)
    ("x = f(", ", c)\n", "a, b\ny = 2", len("a, b\n")),  # mid-line: the first line break
    ("x = 1 +", "\n", " 2\nprint(x)\n", len(" 2\n")),  # a line that opens no block
    (
        "def f(x):",
        "\n",
        "\n    y = x\n    return y\n\ndef g():\n",
        len("\n    y = x\n    return y\n\ndef g():\n"),
    ),
    (
        PY_FUNCTION,
        "\n",
        "y = x + 1\n    if y:\n        y -= 1\n    return y\nz = 1\n",
        None,
    ),  # z's line ends it
    ("if x {", "}\n", "\n  y++\n}\nmore\n", len("\n  y++\n}\n")),  # an auto-closed brace after the cursor
]


@pytest.mark.parametrize(("prefix", "suffix", "completion", "settles_at"), SETTLING)
def test_the_scope_settles_on_the_line_that_ends_it_and_stopping_there_keeps_the_same_result(
    prefix, suffix, completion, settles_at
):
    settles_at = settles_at or len(completion)
    settled = [
        scope_is_settled(completion[:n], prefix=prefix, suffix=suffix, language="python")
        for n in range(1, len(completion) + 1)
    ]
    assert settled.index(True) + 1 == settles_at
    assert all(settled[settles_at - 1 :])  # once settled, more text does not reopen it
    early = postprocess(completion[:settles_at], prefix=prefix, suffix=suffix, language="python")
    assert early == postprocess(completion, prefix=prefix, suffix=suffix, language="python")


def test_a_line_opening_a_block_is_not_settled_before_its_body():
    for partial in ("def g(x):\n", "def g(x):\n\n", "def g(x):\n    return"):
        assert not scope_is_settled(partial, prefix="", suffix="\n", language="python")


def test_syntax_checks_per_completion_are_bounded(monkeypatch):
    checks = []

    def counting_check(**kwargs):
        adds_errors = real_check(**kwargs)
        return lambda text: checks.append(text) or adds_errors(text)

    real_check = postprocess_module.insertion_check
    monkeypatch.setattr(postprocess_module, "insertion_check", counting_check)
    completion = "\n".join(["if x"] + [f"y{i} = {i}" for i in range(40)])  # broken from its first line
    assert postprocess(completion, prefix="", suffix="\n", language="python") == ""
    assert len(checks) <= 1 + MAX_CHECKS
