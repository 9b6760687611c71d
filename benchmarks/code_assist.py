"""Code-assist figures, one run: line completion on held-out packages, HumanEval and MBPP pass@1,
and completion latency over loopback HTTP.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/code_assist.py            # everything
    .venv/bin/python benchmarks/code_assist.py --quick                      # a smoke run of every section
    .venv/bin/python benchmarks/code_assist.py --sections lines --cases 300

Sections:
- lines: the cursor inside a line of code of a held-out package (`corpus.HELD_OUT_PACKAGES`, never
  trained on), the target the rest of the line. Exact match and edit similarity (1 - Levenshtein /
  longer length) of what the service would return (prompt, token healing, engine, post-processing;
  its first line), for: the code adapter with repository context (the package's own index, the
  current file left out: snippets in the prompt and more to copy from, as the service does), with
  the snippets in the prompt but no copying, and without context, the base model without the
  adapter, and a token 4-gram model
  (stupid backoff) counted over the adapter's training packages; plus the adapter's raw output
  before post-processing, to show what the syntax check drops.
- humaneval, mbpp: pass@1 (greedy) of the embedded base model, every completion executed in the
  sandbox of `evaluation.py`.
- latency: `verticals serve` in its own process with the index of a held-out package (click) as
  its repository context; `POST /code/v1/completions` at cursors in that package with 32 new
  tokens at most, P50/P95 at 1 and 4 concurrent clients.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    aligned_rows,
    comma_separated,
    concurrent_latency,
    environment,
    parse_sections,
    post,
    run_sections,
    section_parser,
    suite_server,
    write_report,
)

SECTIONS = ("lines", "humaneval", "mbpp", "latency")
NGRAM_ORDER = 4
LATENCY_PACKAGE = "click"  # held out; its index serves the latency section's completions as context
NGRAM_MAX_TOKENS = 4_000_000  # of the training packages' text, in file order of a seeded shuffle


# ----------------------------------------------------------------------------- line completion


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein(a, b) / max(len): 1 for equal strings, 0 for nothing in common."""
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return 1 - previous[-1] / max(len(a), len(b))


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]


class NgramModel:
    """Token n-grams with stupid backoff (Brants et al. 2007): the most frequent next token after
    the longest context seen, greedy, until a newline."""

    def __init__(self, tokenizer, order: int = NGRAM_ORDER):
        self.tokenizer, self.order = tokenizer, order
        self.next: dict[tuple[int, ...], Counter] = defaultdict(Counter)

    def fit(self, texts: Iterable[str], *, max_tokens: int) -> int:
        seen = 0
        for text in texts:
            ids = self.tokenizer.encode(text)
            for i in range(1, len(ids)):
                for n in range(1, self.order):
                    if i - n >= 0:
                        self.next[tuple(ids[i - n : i])][ids[i]] += 1
            seen += len(ids)
            if seen >= max_tokens:
                break
        self.best = {context: counts.most_common(1)[0][0] for context, counts in self.next.items()}
        del self.next
        return seen

    def complete_line(self, prefix: str, *, max_tokens: int = 32) -> str:
        ids = self.tokenizer.encode(prefix[-400:])
        start = len(ids)
        for _ in range(max_tokens):
            token = next(
                (self.best[c] for n in range(self.order - 1, 0, -1) if (c := tuple(ids[-n:])) in self.best),
                None,
            )
            if token is None:
                break
            ids.append(token)
            if "\n" in self.tokenizer.decode([token]):
                break
        return first_line(self.tokenizer.decode(ids[start:]))


def bench_lines(args: argparse.Namespace) -> dict:
    from apps.code_assist.corpus import (
        HELD_OUT_PACKAGES,
        TRAINING_PACKAGES,
        line_cases,
        package_files,
        package_root,
    )
    from apps.code_assist.repository_index import RepositoryIndex

    cases = line_cases(HELD_OUT_PACKAGES, count=args.cases, seed=0)
    indexes = {name: RepositoryIndex.build(package_root(name), progress=False) for name in HELD_OUT_PACKAGES}
    predictions = _model_predictions(cases, indexes, adapter=args.adapter)
    files = [f for name in TRAINING_PACKAGES for f in package_files(name)]
    random.Random(0).shuffle(files)
    from core_model import load_tokenizer

    ngram = NgramModel(load_tokenizer("embedded"))
    started = time.perf_counter()
    trained_tokens = ngram.fit((f.read() for f in files), max_tokens=args.ngram_tokens)
    ngram_s = time.perf_counter() - started
    predictions["4-gram baseline"] = [ngram.complete_line(case.prefix) for case in cases]
    rows = {}
    for name, predicted in predictions.items():
        exact = [p.strip() == c.target.strip() for p, c in zip(predicted, cases, strict=True)]
        similarity = [
            edit_similarity(p.strip(), c.target.strip()) for p, c in zip(predicted, cases, strict=True)
        ]
        rows[name] = {
            "exact_match": round(sum(exact) / len(cases), 4),
            "edit_similarity": round(sum(similarity) / len(cases), 4),
        }
    return {
        "cases": len(cases),
        "packages": list(HELD_OUT_PACKAGES),
        "ngram_training_tokens": trained_tokens,
        "ngram_fit_s": round(ngram_s, 1),
        "results": rows,
    }


def _model_predictions(cases, indexes, *, adapter: str) -> dict[str, list[str]]:
    """What the service returns for each cursor, with its context and copying as it builds them
    (`prompts.cursor_context`), and without."""
    import torch

    from apps.code_assist.postprocess import postprocess
    from apps.code_assist.prompts import (
        COPY_MIN_MATCH,
        COPY_UNTIL,
        SnippetTokens,
        build_prompt,
        cursor_context,
        engine_prompt,
    )
    from apps.code_assist.settings import CodeAssistSettings
    from core_model import load_model, load_tokenizer
    from core_model.engine import Engine, EngineConfig, SamplingParams
    from core_model.fim import fim_template

    tokenizer = load_tokenizer("embedded")
    model = load_model("embedded", dtype=torch.float32)
    engine = Engine(model, tokenizer, EngineConfig.for_serving(model))  # as the suite serves it
    engine.load_adapter("code", adapter)
    template = fim_template(tokenizer)
    stops = template.stop_ids(tokenizer)
    copy_bias = CodeAssistSettings().copy_bias
    snippet_tokens = SnippetTokens(tokenizer)
    runs = {  # adapter, context, copying
        "adapter + context": ("code", True, copy_bias),
        "adapter + context, not copying": ("code", True, 0.0),
        "adapter, no context": ("code", False, 0.0),
        "base, no adapter": (None, False, 0.0),
    }
    out = {}
    for name, (adapter_name, context, bias) in runs.items():
        prompts, params = [], []
        for case in cases:
            ranked = []
            if context:
                ranked = indexes[case.file.package].ranked_snippets(
                    prefix=case.prefix, suffix=case.suffix, filepath=case.file.path, language="python"
                )
            snippets = cursor_context([], ranked, current=case.file.path)
            text = build_prompt(
                template, prefix=case.prefix, suffix=case.suffix, language="python", snippets=snippets.prompt
            ).text
            prompt = engine_prompt(tokenizer, text)
            prompts.append(prompt)
            params.append(
                SamplingParams(
                    max_tokens=48,
                    temperature=0,
                    stop=("\n",),
                    stop_token_ids=stops,
                    first_token_ids=prompt.first_token_ids,
                    copy_from=snippet_tokens.sources(snippets.copy) if bias else (),
                    copy_bias=bias,
                    copy_min_match=COPY_MIN_MATCH,
                    copy_until=COPY_UNTIL,
                )
            )
        started = time.perf_counter()
        outputs = engine.generate([p.ids for p in prompts], params, adapter=adapter_name)
        print(f"  {name}: {len(prompts)} completions in {time.perf_counter() - started:.0f} s", flush=True)
        texts = [p.completion_of(o.text) for p, o in zip(prompts, outputs, strict=True)]
        out[name] = [
            first_line(postprocess(text, prefix=c.prefix, suffix=c.suffix, language="python"))
            for text, c in zip(texts, cases, strict=True)
        ]
        if name == "adapter + context":  # what post-processing (scope, syntax) costs or gains
            out[f"{name}, raw model output"] = [first_line(text) for text in texts]
    return out


# ----------------------------------------------------------------------------- pass@1


def bench_pass_at_1(benchmark: str, args: argparse.Namespace) -> dict:
    from apps.code_assist.evaluation import evaluate_model

    report = evaluate_model(
        benchmark=benchmark, model="embedded", samples=1, temperature=0.0, max_tokens=args.max_tokens,
        limit=args.limit, progress=False,
    )  # fmt: skip
    return {
        "problems": len(report.problems),
        "pass@1": report.pass_at[1],
        "statuses": dict(report.status_counts()),
        "max_tokens": args.max_tokens,
    }


# ----------------------------------------------------------------------------- latency


def bench_latency(args: argparse.Namespace) -> dict:
    from apps.code_assist.corpus import line_cases, package_root
    from apps.code_assist.repository_index import RepositoryIndex

    # Every request a cursor of its own: a repeated prompt would be served from the prefix cache.
    per_run = [(c + 1) * args.requests for c in args.concurrency]  # the warm-up's and each client's
    firsts = list(itertools.accumulate(per_run, initial=0))
    cases = line_cases([LATENCY_PACKAGE], count=sum(per_run), seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        index = RepositoryIndex.build(package_root(LATENCY_PACKAGE), progress=False).save(Path(tmp, "index"))
        options = [
            "--no-customer-service",
            "--code-database",
            f"sqlite:///{tmp}/code.db",
            "--code-index",
            str(index),
            "--code-max-tokens",
            "32",
            "--engine-replicas",
            args.engine_replicas,
        ]
        if args.copy_bias is not None:
            options += ["--code-copy-bias", str(args.copy_bias)]
        with suite_server(options, log=Path(tmp, "server.log")) as url:
            return {
                f"c{c}": _latency(url, cases[first:], clients=c, requests=args.requests)
                for c, first in zip(args.concurrency, firsts, strict=False)
            }


def _latency(url: str, cases, *, clients: int, requests: int) -> dict:
    """Client c (the warm-up is c = clients) sends cases[c * requests : (c + 1) * requests]."""

    def send(http, _, client: int, i: int) -> None:
        case = cases[client * requests + i]
        segments = {"prefix": case.prefix, "suffix": case.suffix, "filepath": case.file.path}
        post(http, "/code/v1/completions", json={"language": "python", "segments": segments})

    return concurrent_latency(url, clients=clients, requests=requests, send=send, percentiles=(50, 95))


# ----------------------------------------------------------------------------- report


def table(report: dict) -> list[str]:
    lines = []
    if "lines" in report:
        where = ", ".join(report["lines"]["packages"])
        lines += [f"\nLine completion, {report['lines']['cases']} cursors in {where} (held out)"]
        rows = [["model", "exact match", "edit similarity"]]
        rows += [
            [name, f"{r['exact_match']:.3f}", f"{r['edit_similarity']:.3f}"]
            for name, r in report["lines"]["results"].items()
        ]
        lines += aligned_rows(rows)
    passes = [b for b in ("humaneval", "mbpp") if b in report]
    if passes:
        lines += ["\npass@1 (greedy) of the embedded base model, sandboxed"]
        rows = [["benchmark", "problems", "pass@1", "statuses"]]
        rows += [
            [
                b,
                str(report[b]["problems"]),
                f"{100 * report[b]['pass@1']:.2f}%",
                json.dumps(report[b]["statuses"]),
            ]
            for b in passes
        ]
        lines += aligned_rows(rows)
    if "latency" in report:
        lines += ["\nPOST /code/v1/completions over loopback, at most 32 new tokens"]
        rows = [["clients", "requests", "P50 ms", "P95 ms", "req/s"]]
        rows += [
            [
                str(r["clients"]),
                str(r["requests"]),
                str(r["p50_ms"]),
                str(r["p95_ms"]),
                str(r["requests_per_s"]),
            ]
            for k, r in report["latency"].items()
            if k.startswith("c")
        ]
        lines += aligned_rows(rows)
    return lines


def main(argv: list[str] | None = None) -> dict:
    from apps.code_assist.settings import ASSETS

    parser = section_parser(__doc__, SECTIONS, results="code_assist.json")
    parser.add_argument("--quick", action="store_true", help="small slices of every section")
    parser.add_argument("--adapter", default=str(ASSETS / "fim"))
    parser.add_argument("--cases", type=int, default=300, help="line-completion cursors")
    parser.add_argument(
        "--ngram-tokens", type=int, default=NGRAM_MAX_TOKENS, help="the baseline's training tokens"
    )
    parser.add_argument("--limit", type=int, help="problems per pass@1 benchmark (quick runs)")
    parser.add_argument("--max-tokens", type=int, default=256, help="per pass@1 completion")
    parser.add_argument("--concurrency", type=comma_separated(int), default=[1, 4])
    parser.add_argument("--requests", type=int, default=30, help="completions per client")
    parser.add_argument(
        "--copy-bias", type=float, help="latency: the server's --code-copy-bias (default: its own)"
    )
    parser.add_argument(
        "--engine-replicas", default="auto", help="latency: the server's --engine-replicas (default auto)"
    )
    args = parse_sections(parser, argv)
    if args.quick:
        args.cases, args.limit, args.max_tokens, args.requests, args.ngram_tokens = 12, 3, 32, 3, 100_000
    benches = {
        "lines": bench_lines,
        "humaneval": lambda a: bench_pass_at_1("humaneval", a),
        "mbpp": lambda a: bench_pass_at_1("mbpp", a),
        "latency": bench_latency,
    }
    report: dict = {"environment": environment(["cpu"]), "quick": args.quick}
    run_sections(report, sections=SECTIONS, chosen=args.sections, benches=benches, args=args)
    print("\n".join(table(report)))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
