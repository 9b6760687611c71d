"""The evaluation harness: pass@k, stop sequences, the benchmarks' canonical solutions run through
the sandbox, and sampling from the shipped embedded model.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/apps/code_assist/test_evaluation.py -q

The HumanEval and MBPP tests read `$VERTICALS_DATASETS` or `../shared/datasets` and skip without them.
"""

import itertools
import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from apps.code_assist.evaluation import (
    MBPP_STOP_SEQUENCES,
    Problem,
    check_samples,
    evaluate_model,
    generate_samples,
    load_humaneval,
    load_mbpp,
    pass_at_k,
    program_for,
    truncate,
)
from core_model import load_model, load_tokenizer
from core_model.datasets import dataset_dir
from core_model.engine import Engine, EngineConfig


def _needs(name: str) -> None:
    try:
        dataset_dir(name)
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def humaneval() -> list[Problem]:
    _needs("humaneval")
    return load_humaneval()


@pytest.fixture(scope="module")
def mbpp() -> list[Problem]:
    _needs("mbpp")
    return load_mbpp()


@pytest.fixture(scope="module")
def engine() -> Engine:
    model = load_model("embedded", dtype=torch.float32)
    return Engine(model, load_tokenizer("embedded"), EngineConfig(max_cache_tokens=4096))


def _toy(task_id: str = "toy/0") -> Problem:
    return Problem(
        task_id=task_id,
        prompt="def add(a, b):\n",
        entry_point="add",
        canonical_solution="    return a + b\n",
        test="assert add(2, 3) == 5\n",
    )


# ----------------------------------------------------------------------------- pass@k


def _brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
    return sum(any(draw) for draw in draws) / len(draws)


def test_pass_at_k_matches_counting_every_draw_of_k_samples():
    for n in range(1, 7):
        for c, k in itertools.product(range(n + 1), range(1, n + 1)):
            assert math.isclose(pass_at_k(n, c, k), _brute_force_pass_at_k(n, c, k), abs_tol=1e-12)


def test_pass_at_k_is_zero_without_a_passing_sample():
    assert pass_at_k(200, 0, 100) == 0.0


def test_pass_at_k_is_one_when_every_draw_holds_a_passing_sample():
    assert pass_at_k(10, 8, 3) == 1.0


def test_pass_at_k_refuses_k_above_n():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(5, 2, 10)


def test_pass_at_k_stays_finite_for_large_n():
    assert 0.0 < pass_at_k(1000, 3, 100) < 1.0


# ----------------------------------------------------------------------------- programs


def test_truncate_cuts_at_the_first_stop_sequence():
    completion = "    return a + b\n\nprint(add(1, 2))\ndef other():\n"
    assert truncate(completion) == "    return a + b\n"


def test_truncate_keeps_a_completion_without_stop_sequences():
    assert truncate("    return a + b\n") == "    return a + b\n"


def test_mbpp_stops_keep_helper_functions():
    function = "import re\ndef helper(x):\n    return x\ndef solve(x):\n    return helper(x)"
    assert truncate(function + "\nassert solve(1)\n", stops=MBPP_STOP_SEQUENCES) == function


def test_the_program_is_prompt_completion_and_tests():
    program = program_for(_toy(), "    return a + b\n")
    assert program == "def add(a, b):\n    return a + b\n\n\nassert add(2, 3) == 5\n"


def test_a_humaneval_program_calls_check_on_the_entry_point(humaneval):
    problem = humaneval[0]
    assert program_for(problem, "    pass\n").rstrip().endswith(f"check({problem.entry_point})")


def test_mbpp_is_the_test_split_with_a_docstring_prompt_ending_before_the_function(mbpp):
    assert len(mbpp) == 257
    assert all(11 <= int(problem.task_id.split("/")[1]) <= 510 for problem in mbpp)
    first = mbpp[0]
    assert first.prompt.startswith('"""\n') and first.prompt.endswith('\n"""\n')
    assert first.test.splitlines()[0] in first.prompt


# ----------------------------------------------------------------------------- checking


def test_canonical_humaneval_solutions_all_pass(humaneval):
    samples = {problem.task_id: [problem.canonical_solution] for problem in humaneval}
    report = check_samples(humaneval, samples, workers=2, progress=False)
    assert report.status_counts()["passed"] == 164
    assert report.pass_at == {1: 1.0}


def test_canonical_mbpp_solutions_all_pass(mbpp):
    samples = {problem.task_id: [problem.canonical_solution] for problem in mbpp}
    report = check_samples(mbpp, samples, workers=2, progress=False)
    failing = [(p.task_id, p.first_error) for p in report.problems if p.c < p.n]
    assert failing == []


def test_empty_bodies_pass_nothing(humaneval):
    problems = humaneval[:5]
    report = check_samples(problems, {p.task_id: ["    pass\n"] for p in problems}, progress=False)
    assert [p.c for p in report.problems] == [0] * 5
    assert report.pass_at == {1: 0.0}


def test_a_sample_that_loops_forever_counts_as_a_timeout():
    samples = {"toy/0": ["    while True:\n        pass\n", "    return a + b\n"]}
    report = check_samples([_toy()], samples, timeout_s=1, progress=False)
    assert report.problems[0].statuses == ["timeout", "passed"]
    assert report.pass_at == {1: 0.5}


def test_pass_at_k_is_reported_only_for_k_every_problem_reaches():
    problems = [_toy("toy/0"), _toy("toy/1")]
    samples = {"toy/0": ["    return a + b\n"] * 10, "toy/1": ["    return a - b\n"] * 10}
    report = check_samples(problems, samples, progress=False)
    assert report.pass_at == {1: 0.5, 10: 0.5}
    assert json.loads(report.to_json())["pass@10"] == 0.5
    assert "pass@10" in report.table()


def test_a_problem_without_samples_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        check_samples([_toy()], {}, progress=False)


# ----------------------------------------------------------------------------- generating


def test_completions_are_cut_at_the_problems_stop_sequences():
    class EchoEngine:  # returns text running past a stop sequence, as a model without stops would
        config = SimpleNamespace(max_sequences=2)

        def generate(self, prompts, params, adapter=None):
            return [SimpleNamespace(text="    return 1\n\nprint(2)\n") for _ in prompts]

    problems = [_toy("toy/0"), _toy("toy/1"), _toy("toy/2")]
    samples = generate_samples(EchoEngine(), problems, samples=3, temperature=0, max_tokens=8, progress=False)
    assert samples == {problem.task_id: ["    return 1\n"] for problem in problems}


def test_greedy_samples_from_the_embedded_model_are_truncated(engine):
    docstring = '"""\nWrite a function to add two numbers.\nassert add(2, 3) == 5\n"""\n'
    problems = [_toy("toy/0"), replace(_toy("toy/1"), prompt=docstring, stop=MBPP_STOP_SEQUENCES)]
    samples = generate_samples(engine, problems, samples=4, temperature=0, max_tokens=16, progress=False)
    assert [len(samples[p.task_id]) for p in problems] == [1, 1]
    for problem in problems:
        assert not any(stop in samples[problem.task_id][0] for stop in problem.stop)


def test_evaluate_model_samples_and_checks_a_benchmark(humaneval):
    report = evaluate_model(benchmark="humaneval", limit=2, max_tokens=16, device="cpu", progress=False)
    assert [p.task_id for p in report.problems] == ["HumanEval/0", "HumanEval/1"]
    assert report.settings["model"] == "embedded"
    assert set(report.pass_at) == {1}
