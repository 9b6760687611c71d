"""Syntax checks: error counts per language, and whether a text inserted at a cursor adds errors.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/apps/code_assist/test_syntax.py -q
"""

import pytest

from apps.code_assist import syntax
from apps.code_assist.syntax import bracket_delta, insertion_check, syntax_errors

# language: (a file that parses, the same file broken)
FILES = {
    "python": ("def f(x):\n    return x\n", "def f(x:\n    return x\n"),
    "javascript": ("function f(x) {\n  return x;\n}\n", "function f(x) {\n  return x;\n"),
    "typescript": (
        "function f(x: number): number {\n  return x;\n}\n",
        "function f(x: number): number {\n  return x as;\n}\n",
    ),
    "java": (
        "class A {\n  int f(int x) {\n    return x;\n  }\n}\n",
        "class A {\n  int f(int x) {\n    return x\n  }\n}\n",
    ),
    "go": (
        "package main\n\nfunc f(x int) int {\n\treturn x\n}\n",
        "package main\n\nfunc f(x int) int {\n\treturn x +\n}\n",
    ),
    "cpp": ("int f(int x) {\n  return x;\n}\n", "int f(int x) {\n  return x\n}\n"),
}

# language: (prefix, suffix, an insertion that parses, one that leaves a brace open)
CURSORS = {
    "typescript": (
        "function f(x: number): number {\n  ",
        "\n  return x;\n}\n",
        "const y: number = x;",
        "if (x) {",
    ),
    "java": (
        "class A {\n  int f(int x) {\n    ",
        "\n    return x;\n  }\n}\n",
        "int y = x + 1;",
        "if (x > 0) {",
    ),
    "go": (
        "package main\n\nfunc f(x int) int {\n\t",
        "\n\treturn x\n}\n",
        "y := x + 1\n\t_ = y",
        "if x > 0 {",
    ),
    "cpp": ("int f(int x) {\n  ", "\n  return x;\n}\n", "int y = x + 1;", "if (x) {"),
}

PYTHON_FILE = '''"""A module docstring
with a line at column 0.
"""
import os


@decorator
def first(a, b):
    """Docstring.

text at the function's indentation and below
    """
    result = compute(
        a,
        b,
    )
    if result:
        return result
    else:
        return None


class Thing:
    def method(self):
        for item in self.items:
            yield item
'''


@pytest.mark.parametrize("language", sorted(FILES))
def test_a_file_that_parses_has_no_errors(language):
    assert syntax_errors(FILES[language][0], language) == 0


@pytest.mark.parametrize("language", sorted(FILES))
def test_a_broken_file_has_errors(language):
    assert syntax_errors(FILES[language][1], language) >= 1


def test_python_counts_only_its_first_error():
    assert syntax_errors("def f(:\n    pass\n\ndef g(:\n    pass\n", "python") == 1


def test_an_unknown_language_has_no_check():
    assert syntax_errors("anything (", "cobol") is None
    assert insertion_check(prefix="x", suffix="y", language=None) is None


@pytest.mark.parametrize("language", sorted(CURSORS))
def test_a_statement_inserted_in_a_function_adds_no_errors(language):
    prefix, suffix, good, _ = CURSORS[language]
    assert not insertion_check(prefix=prefix, suffix=suffix, language=language)(good)


@pytest.mark.parametrize("language", sorted(CURSORS))
def test_an_unclosed_brace_inserted_in_a_function_adds_errors(language):
    prefix, suffix, _, bad = CURSORS[language]
    assert insertion_check(prefix=prefix, suffix=suffix, language=language)(bad)


def test_javascript_unclosed_brace_mid_file_adds_errors():
    adds_errors = insertion_check(
        prefix="function f(x) {\n  ", suffix="\n  return x;\n}\n\nfunction g() {}\n", language="javascript"
    )
    assert adds_errors("if (x) {\n    log(x);")
    assert not adds_errors("if (x) {\n    log(x);\n  }")


def test_python_if_without_colon_adds_errors():
    adds_errors = insertion_check(prefix="def f(x):\n    ", suffix="\n    return x\n", language="python")
    assert adds_errors("if x\n        x += 1")
    assert not adds_errors("if x:\n        x += 1")


def test_an_already_broken_python_file_is_judged_on_the_insertion():
    adds_errors = insertion_check(
        prefix="def f(x):\n    y = g(a, ", suffix="\n    return y\n", language="python"
    )
    assert not adds_errors("b")  # still unclosed, as before
    assert adds_errors("b))")  # the second paren is the insertion's own error


def test_an_already_broken_javascript_file_is_judged_on_the_insertion():
    adds_errors = insertion_check(
        prefix="function f() {\n  const y = g(a, ", suffix="\n  return y;\n}\n", language="javascript"
    )
    assert not adds_errors("b")
    assert adds_errors("b)) +;")


def test_python_errors_elsewhere_in_the_file_do_not_hide_the_insertions():
    adds_errors = insertion_check(
        prefix="def f(x:\n    pass\n\n\ndef g():\n    ", suffix="\n", language="python"
    )
    assert adds_errors("if x\n        pass")


@pytest.mark.parametrize("max_region_lines", [200, 0])  # 0: start at the cursor's line wherever safe
def test_python_region_check_agrees_with_parsing_the_whole_file(max_region_lines, monkeypatch):
    monkeypatch.setattr(syntax, "MAX_REGION_LINES", max_region_lines)
    lines = PYTHON_FILE.split("\n")
    insertions = ["x = 1", "if x\n{i}    y = 2", "if x:\n{i}    y = 2", "return (", "else:\n{i}    pass"]
    for i in range(1, len(lines) - 1):
        if lines[i].lstrip().startswith(("a,", "b,", "text", "with", '"""')):
            continue  # inside brackets or strings no statement fits: the region check is lenient there
        for indent in {"", lines[i][: len(lines[i]) - len(lines[i].lstrip())]}:
            prefix, suffix = "\n".join(lines[:i]) + "\n" + indent, "\n" + "\n".join(lines[i:])
            adds_errors = insertion_check(prefix=prefix, suffix=suffix, language="python")
            for insertion in (text.replace("{i}", indent) for text in insertions):
                whole_file = syntax_errors(prefix + insertion + suffix, "python") == 1
                assert adds_errors(insertion) == whole_file, (i, indent, insertion)


def test_incremental_reparse_agrees_with_parsing_the_whole_file():
    code = "function f(x) {\n  const y = [x, 1];\n  if (y) {\n    return y;\n  }\n}\n\nconst z = f(2);\n"
    lines = code.split("\n")
    insertions = ["a();", "if (a) {", "}", "b(c => { d(); });", "let s = ')';", "return"]
    for i in range(1, len(lines)):
        prefix, suffix = "\n".join(lines[:i]) + "\n", "\n" + "\n".join(lines[i:])
        adds_errors = insertion_check(prefix=prefix, suffix=suffix, language="javascript")
        for insertion in insertions:
            assert adds_errors(insertion) == (syntax_errors(prefix + insertion + suffix, "javascript") > 0)


def test_bracket_delta_ignores_strings_and_comments():
    assert bracket_delta("f(a, \"(\", '{') // (") == 0
    assert bracket_delta("if (x) {") == 1


def test_a_reparse_past_its_budget_counts_as_adding_errors(monkeypatch):
    monkeypatch.setattr(syntax, "REPARSE_BUDGET", -1.0)  # every reparse is late
    monkeypatch.setattr(syntax, "MIN_REPARSE_BUDGET_S", -1.0)
    rest = "".join(
        f"function f{i}(x) {{\n  return x + {i};\n}}\n" for i in range(200)
    )  # long enough to report progress
    adds_errors = insertion_check(prefix="function f() {\n  ", suffix="\n}\n" + rest, language="javascript")
    assert adds_errors("a();")


def test_brackets_typed_inside_a_comment_add_no_errors():
    adds_errors = insertion_check(
        prefix="const x = 1; // see ", suffix="\nconst y = 2;\n", language="javascript"
    )
    assert not adds_errors("foo(")
