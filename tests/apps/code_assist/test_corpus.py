"""The code adapter's text: cuts that put the file back together, held-out packages kept apart,
licences recorded, line cases on code only.

.venv/bin/python -m pytest tests/apps/code_assist/test_corpus.py -q
"""

from __future__ import annotations

import random

import pytest

from apps.code_assist import corpus


@pytest.mark.parametrize("cut", [corpus.cut_line, corpus.cut_block, corpus.cut_span])
def test_every_cut_puts_the_file_back_together(cut):
    text = "import os\n\n\ndef f(a):\n    if a:\n        return os.sep\n    return None\n"
    rng = random.Random(0)
    for _ in range(50):
        prefix, middle, suffix = cut(text, rng)
        assert prefix + middle + suffix == text and middle


def test_a_line_cut_ends_the_middle_at_the_end_of_its_line():
    rng = random.Random(1)
    for _ in range(20):
        prefix, middle, suffix = corpus.cut_line("a = 1\nbb = 22\n", rng)
        assert "\n" not in middle and suffix.startswith("\n")


def test_held_out_packages_are_not_training_packages_and_all_are_permissively_licensed():
    assert not set(corpus.HELD_OUT_PACKAGES) & set(corpus.TRAINING_PACKAGES)
    found = corpus.licences(corpus.HELD_OUT_PACKAGES)
    assert set(found) == set(corpus.HELD_OUT_PACKAGES) and all("(" in value for value in found.values())


def test_package_files_leave_tests_and_vendored_code_out():
    files = corpus.package_files("h11")
    assert files and all(f.path.endswith(".py") for f in files)
    assert not any(part in ("tests", "_vendor") for f in files for part in f.path.split("/")[:-1])


def test_fim_examples_cut_with_the_serving_budgets_and_half_carry_context():
    examples = corpus.fim_examples(["idna"], count=40, seed=0, progress=False)
    assert len(examples) == 40 and all(e["middle"].strip() for e in examples)
    assert 5 <= sum("# Path: " in e["prefix"] for e in examples) <= 35


def test_line_cases_are_cursors_inside_code_lines():
    cases = corpus.line_cases(["h11"], count=30, seed=0)
    for case in cases:
        line = case.prefix[case.prefix.rfind("\n") + 1 :] + case.target
        assert not line.lstrip().startswith("#") and "\n" not in case.target and case.suffix.startswith("\n")


def test_lines_of_a_docstring_are_prose():
    text = 'def f():\n    """One.\n\n    Two.\n    """\n    return 1\n'
    assert corpus.prose_lines(text) == {2, 3, 4, 5}
