"""The code-assist evaluation harness: HumanEval and MBPP problems, a model's samples for them,
their execution in the sandbox, and pass@k.

    problems = load_humaneval()[:10]
    samples = generate_samples(engine, problems, samples=10, temperature=0.8, max_tokens=256)
    report = check_samples(problems, samples)                # runs every sample in `sandbox.py`
    report.table(); report.to_json()
    evaluate_model(benchmark="mbpp", model="embedded", samples=1, temperature=0, limit=20)

`verticals code eval {humaneval,mbpp} --model SOURCE --samples N --temperature T --limit N` wraps
`evaluate_model`. Datasets are read from `$VERTICALS_DATASETS` or `../shared/datasets`
(`core_model.datasets`), never copied into the project.

Both benchmarks are left-to-right completion: the program run for a sample is the problem's
prompt, the model's completion (cut at the problem's stop sequences) and the problem's tests.
pass@k is the unbiased estimator of Chen et al. 2021 (https://arxiv.org/abs/2107.03374).

It is not a sandbox (`sandbox.py` is), and it knows nothing of HTTP or the completion service.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from core_model import load_model, load_tokenizer
from core_model.checkpoint import serving_dtype
from core_model.datasets import dataset_dir
from core_model.engine import Engine, EngineConfig, SamplingParams

from .sandbox import ExecutionResult, run_program

log = logging.getLogger(__name__)

# Chen et al. 2021 (Codex) stop sampling at these: anything at column 0 after the function body.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
# MBPP completions write the whole function, helpers and imports included, so "\ndef" must not stop
# them; these are bigcode-evaluation-harness's MBPP stop words (less its InCoder-only one).
MBPP_STOP_SEQUENCES = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n```")
MBPP_TEST_IDS = range(11, 511)  # the test split of the MBPP README (257 tasks in the sanitized file)
KS = (1, 10, 100)
DEFAULT_TIMEOUT_S = 10.0  # per sample, interpreter start-up included


@dataclass(frozen=True)
class Problem:
    """One benchmark task: what the model completes and the tests that judge the completion."""

    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str  # a completion of `prompt` that passes
    test: str  # statements run after prompt + completion; they raise if the completion is wrong
    imports: str = ""  # run before the prompt (MBPP's test_imports)
    stop: tuple[str, ...] = STOP_SEQUENCES


# ----------------------------------------------------------------------------- datasets


def load_humaneval(root: str | Path | None = None) -> list[Problem]:
    """HumanEval's 164 problems from `<root>/humaneval/HumanEval.jsonl.gz` (root: the datasets
    folder, by default the project's)."""
    path = _dataset_dir("humaneval", root) / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as file:
        records = [json.loads(line) for line in file if line.strip()]
    return [
        Problem(
            task_id=record["task_id"],
            prompt=record["prompt"],
            entry_point=record["entry_point"],
            canonical_solution=record["canonical_solution"],
            test=f"{record['test']}\n\ncheck({record['entry_point']})\n",
        )
        for record in records
    ]


def load_mbpp(root: str | Path | None = None) -> list[Problem]:
    """The test split (task ids 11-510) of sanitized MBPP, from `<root>/mbpp/sanitized-mbpp.json`.

    The prompt is the InCoder-style docstring of bigcode-evaluation-harness: the description and
    the first test, after which the model writes the whole function:

        \"\"\"
        Write a function to find the shared elements from the given two lists.
        assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))
        \"\"\"
    """
    records = json.loads((_dataset_dir("mbpp", root) / "sanitized-mbpp.json").read_text(encoding="utf-8"))
    return [_mbpp_problem(record) for record in records if record["task_id"] in MBPP_TEST_IDS]


def _mbpp_problem(record: dict[str, Any]) -> Problem:
    tests = record["test_list"]
    return Problem(
        task_id=f"Mbpp/{record['task_id']}",
        prompt=f'"""\n{record["prompt"]}\n{tests[0]}\n"""\n',
        entry_point=_called_function(record["code"], tests[0]),
        canonical_solution=record["code"],
        test="\n".join(tests) + "\n",
        imports="".join(f"{line}\n" for line in record["test_imports"]),
        stop=MBPP_STOP_SEQUENCES,
    )


def _called_function(code: str, test: str) -> str:
    """The function of `code` that `test` calls (MBPP names no entry point)."""
    names = re.findall(r"^def\s+(\w+)\s*\(", code, flags=re.MULTILINE)
    called = [name for name in names if re.search(rf"\b{name}\s*\(", test)]
    return (called or names or [""])[0]


def _dataset_dir(name: str, root: str | Path | None) -> Path:
    if root is None:
        return dataset_dir(name)
    path = Path(root) / name
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {name!r} not found at {path}")
    return path


BENCHMARKS: dict[str, Callable[..., list[Problem]]] = {"humaneval": load_humaneval, "mbpp": load_mbpp}


# ----------------------------------------------------------------------------- programs


def truncate(completion: str, *, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """`completion` up to the first stop sequence."""
    cut = min((i for i in (completion.find(stop) for stop in stops) if i >= 0), default=len(completion))
    return completion[:cut]


def program_for(problem: Problem, completion: str) -> str:
    """The whole program run for one sample: imports, prompt, completion, tests."""
    return f"{problem.imports}{problem.prompt}{completion}\n\n{problem.test}"


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k),
    as the product 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the huge binomials."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0  # every draw of k samples holds a passing one
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


# ----------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class ProblemResult:
    task_id: str
    statuses: list[str]  # one sandbox status per sample, in the order of the samples
    first_error: str | None = None  # the last stderr line of the first sample that did not pass

    @property
    def n(self) -> int:
        return len(self.statuses)

    @property
    def c(self) -> int:
        return self.statuses.count("passed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"n": self.n, "c": self.c}


@dataclass(frozen=True)
class EvaluationReport:
    problems: list[ProblemResult]
    pass_at: dict[int, float]  # k -> mean pass@k, for each k in KS that every problem's n reaches
    settings: dict[str, Any] = field(default_factory=dict)  # what was evaluated: benchmark, model, ...

    def to_json(self) -> str:
        return json.dumps(
            {
                "settings": self.settings,
                **{f"pass@{k}": score for k, score in self.pass_at.items()},
                "statuses": dict(self.status_counts()),
                "problems": [problem.to_dict() for problem in self.problems],
            },
            indent=2,
        )

    def status_counts(self) -> Counter[str]:
        return Counter(status for problem in self.problems for status in problem.statuses)

    def table(self) -> str:
        counts = self.status_counts()
        samples = sorted({problem.n for problem in self.problems})
        rows = [(key, str(value)) for key, value in self.settings.items()]
        rows += [
            ("problems", f"{len(self.problems)} (samples each: {', '.join(map(str, samples))})"),
            ("statuses", "  ".join(f"{s} {counts[s]}" for s in ("passed", "failed", "timeout", "memory"))),
        ]
        rows += [(f"pass@{k}", f"{100 * score:.2f}%") for k, score in self.pass_at.items()]
        width = max(len(key) for key, _ in rows)
        return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


def check_samples(
    problems: Sequence[Problem],
    samples: dict[str, list[str]],
    *,
    workers: int = 2,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
) -> EvaluationReport:
    """Runs every sample of every problem in the sandbox, `workers` programs at a time."""
    missing = [problem.task_id for problem in problems if not samples.get(problem.task_id)]
    if missing:
        raise ValueError(f"no samples for {len(missing)} problems, e.g. {missing[:3]}")
    results: list[list[ExecutionResult | None]] = [[None] * len(samples[p.task_id]) for p in problems]
    total = sum(map(len, results))
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=total, desc="checking", unit="sample", disable=not progress) as bar,
    ):
        futures = {
            pool.submit(run_program, program_for(problem, completion), timeout_s=timeout_s): (i, j)
            for i, problem in enumerate(problems)
            for j, completion in enumerate(samples[problem.task_id])
        }
        for future in as_completed(futures):
            i, j = futures[future]
            results[i][j] = future.result()
            bar.update()
    per_problem = [_problem_result(p.task_id, runs) for p, runs in zip(problems, results, strict=True)]
    return EvaluationReport(problems=per_problem, pass_at=_mean_pass_at(per_problem))


def _problem_result(task_id: str, runs: Sequence[ExecutionResult | None]) -> ProblemResult:
    done = [run for run in runs if run is not None]  # all of them: every future has completed
    failed = next((run for run in done if not run.passed), None)
    error = None
    if failed is not None:
        error = failed.stderr_tail.strip().rsplit("\n", 1)[-1] or failed.status
    return ProblemResult(task_id=task_id, statuses=[run.status for run in done], first_error=error)


def _mean_pass_at(results: Sequence[ProblemResult]) -> dict[int, float]:
    if not results:
        return {}
    reachable = [k for k in KS if all(result.n >= k for result in results)]
    return {k: sum(pass_at_k(r.n, r.c, k) for r in results) / len(results) for k in reachable}


# ----------------------------------------------------------------------------- generating


def generate_samples(
    engine: Engine,
    problems: Sequence[Problem],
    *,
    samples: int,
    temperature: float,
    max_tokens: int,
    adapter: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list[str]]:
    """`samples` completions per problem, cut at the problem's stop sequences.

    Greedy decoding (temperature 0) is deterministic, so it draws one sample per problem whatever
    `samples` says (pass@1 is then the fraction solved). Prompts go to the engine in batches of
    several times its `max_sequences`, which it runs with continuous batching; sample j of every
    problem is seeded with `seed * samples + j`, so runs with different seeds draw different samples.
    """
    count = 1 if temperature == 0 else samples
    if count < samples:
        log.info("greedy decoding: one sample per problem instead of %d", samples)
    requests = [(problem, j) for problem in problems for j in range(count)]
    completions: dict[str, list[str]] = {problem.task_id: [] for problem in problems}
    batch = 4 * engine.config.max_sequences
    with tqdm(total=len(requests), desc="generating", unit="sample", disable=not progress) as bar:
        for start in range(0, len(requests), batch):
            chunk = requests[start : start + batch]
            params = [
                SamplingParams(
                    max_tokens=max_tokens, temperature=temperature, stop=problem.stop, seed=seed * count + j
                )
                for problem, j in chunk
            ]
            outputs = engine.generate([problem.prompt for problem, _ in chunk], params, adapter=adapter)
            for (problem, _), output in zip(chunk, outputs, strict=True):
                completions[problem.task_id].append(truncate(output.text, stops=problem.stop))
            bar.update(len(chunk))
    return completions


def evaluate_model(
    *,
    benchmark: str,
    model: str = "embedded",
    samples: int = 1,
    temperature: float = 0.0,
    max_tokens: int = 512,
    limit: int | None = None,
    adapter: str | Path | None = None,
    root: str | Path | None = None,
    device: str | None = None,
    workers: int = 2,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationReport:
    """Loads `model` (a preset such as "embedded" or a checkpoint directory, optionally with a PEFT
    LoRA `adapter` directory), samples completions for the first `limit` problems of `benchmark`
    (a key of BENCHMARKS) and checks them."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    problems = BENCHMARKS[benchmark](root)[:limit]
    engine = _engine(model, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    adapter_name = None
    if adapter is not None:
        adapter_name = "evaluated"
        engine.load_adapter(adapter_name, adapter)
    completions = generate_samples(
        engine,
        problems,
        samples=samples,
        temperature=temperature,
        max_tokens=max_tokens,
        adapter=adapter_name,
        seed=seed,
        progress=progress,
    )
    report = check_samples(problems, completions, workers=workers, timeout_s=timeout_s, progress=progress)
    settings = {"benchmark": benchmark, "model": model, "adapter": str(adapter) if adapter else None}
    settings |= {"samples": samples, "temperature": temperature, "max_tokens": max_tokens, "seed": seed}
    return EvaluationReport(problems=report.problems, pass_at=report.pass_at, settings=settings)


def _engine(source: str, *, device: str) -> Engine:
    model = load_model(source, device=device, dtype=serving_dtype(source, device))
    return Engine(model, load_tokenizer(source), EngineConfig.for_serving(model))
