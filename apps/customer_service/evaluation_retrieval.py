"""Retrieval quality on a question-answer FAQ: recall@k and query latency of bm25, vector and hybrid.

    pairs = faq_pairs(dataset_dir("bank_faq") / "BankFAQs.csv")
    report = evaluate_faq_retrieval(pairs, MiniLMEmbeddings())
    report["hybrid"]["recall@5"], report["hybrid"]["p50_ms"], report["queries"], report["passages"]

    python -m apps.customer_service.evaluation_retrieval              # the full bank_faq, ~1 min on CPU
    python -m apps.customer_service.evaluation_retrieval --limit 200  # its first 200 pairs

Each distinct answer is indexed as one passage with no title, so a question never meets its own
text in the index: this measures matching a customer's question to the answer that holds it.
Each distinct question is one query; it is a hit at k when any of its answers is in the top k.
Latency is the wall time of one `KnowledgeBase.search` call (query embedding included), one
query at a time.

It reads a dataset from wherever it is given and copies none of it; it is not the app's benchmark
(`benchmarks/customer_service.py` calls it).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from apps.customer_service.knowledge_base import Passage
from apps.customer_service.retrieval import MODES, KnowledgeBase, MiniLMEmbeddings, SearchMode


def faq_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(question, answer) per row of a CSV with `Question` and `Answer` columns (any case), in file
    order, whitespace collapsed, rows missing either dropped, exact repeats dropped."""
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "question" not in columns or "answer" not in columns:
            found = ", ".join(reader.fieldnames or []) or "nothing"
            raise ValueError(f"{path.name}: needs Question and Answer columns; found {found}")
        cell = lambda row, name: " ".join((row[columns[name]] or "").split())
        pairs = ((cell(row, "question"), cell(row, "answer")) for row in reader)
        return list(dict.fromkeys((q, a) for q, a in pairs if q and a))


def faq_index(pairs: Sequence[tuple[str, str]]) -> tuple[list[Passage], dict[str, set[str]]]:
    """One passage per distinct answer (source id = its position) and, per distinct question, the
    ids of all its answers."""
    answers = list(dict.fromkeys(answer for _, answer in pairs))
    answer_ids = {answer: str(i) for i, answer in enumerate(answers)}
    targets: dict[str, set[str]] = {}
    for question, answer in pairs:
        targets.setdefault(question, set()).add(answer_ids[answer])
    passages = [Passage(source_id=answer_ids[answer], title="", text=answer) for answer in answers]
    return passages, targets


def _score_mode(
    knowledge_base: KnowledgeBase, targets: dict[str, set[str]], *, mode: SearchMode, ks: Sequence[int]
) -> dict[str, float]:
    hits = dict.fromkeys(ks, 0)
    latencies_ms = []
    for question, wanted in targets.items():
        started = time.perf_counter()
        found = knowledge_base.search(question, k=max(ks), mode=mode)
        latencies_ms.append((time.perf_counter() - started) * 1000)
        ids = [hit.passage.source_id for hit in found]
        for k in ks:
            hits[k] += any(source_id in wanted for source_id in ids[:k])
    scores = {f"recall@{k}": hits[k] / len(targets) for k in ks}
    scores["p50_ms"] = float(np.percentile(latencies_ms, 50))
    scores["p95_ms"] = float(np.percentile(latencies_ms, 95))
    return scores


def evaluate_faq_retrieval(
    pairs: Sequence[tuple[str, str]],
    embeddings: Embeddings,
    *,
    ks: Sequence[int] = (1, 5),
    modes: Sequence[SearchMode] = ("bm25", "vector", "hybrid"),
) -> dict[str, Any]:
    """{"queries", "passages", "build_s", and per mode {"recall@k" for each k, "p50_ms", "p95_ms"}}."""
    if not pairs:
        raise ValueError("no (question, answer) pairs to evaluate")
    if unknown := [mode for mode in modes if mode not in MODES]:
        raise ValueError(f"unknown search modes {unknown}; use {', '.join(MODES)}")
    passages, targets = faq_index(pairs)
    started = time.perf_counter()
    knowledge_base = KnowledgeBase.build(passages, embeddings)
    report: dict[str, Any] = {
        "queries": len(targets),
        "passages": len(passages),
        "build_s": time.perf_counter() - started,
    }
    for mode in modes:
        report[mode] = _score_mode(knowledge_base, targets, mode=mode, ks=ks)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, help="Question,Answer CSV (default: bank_faq's BankFAQs.csv)")
    parser.add_argument("--limit", type=int, help="evaluate the first N distinct pairs only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.csv is None:
        from core_model.datasets import dataset_dir

        args.csv = dataset_dir("bank_faq") / "BankFAQs.csv"
    pairs = faq_pairs(args.csv)[: args.limit]
    print(json.dumps(evaluate_faq_retrieval(pairs, MiniLMEmbeddings()), indent=2))


if __name__ == "__main__":
    main()
