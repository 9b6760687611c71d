"""Customer-service figures, one run: intents, key information, retrieval, multi-turn, latency.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/customer_service.py   # everything (20-32 min on 2 cores)
    .venv/bin/python benchmarks/customer_service.py --quick          # a smoke run of every section
    .venv/bin/python benchmarks/customer_service.py --sections latency,retrieval

Sections:
- intents: BANKING77 test accuracy and macro-F1 of the shipped classifier (LoRA + head on the
  embedded model) next to TF-IDF + logistic regression trained here on the same examples; the
  out-of-scope threshold's coverage and the accuracy of what it keeps.
- slots: NLU++ banking slot span F1 (strict), cross-validated in the authors' "large" setup
  (train on 18 folds, test on 2; `--slot-splits` of the 10 splits).
- retrieval: bank_faq, each question retrieves its own answer: recall@1/@5 for BM25, vectors
  and the hybrid the app uses.
- multiturn: per-turn active-intent accuracy on SGD Banks_2 dialogues (dev), a classifier trained
  here on Banks_1 turns, each turn alone vs with the dialogue state carried over turns.
- replies: drafted replies generated greedily by the engine with the reply adapter, over the passages
  the app's retrieval shows (`apps/customer_service/evaluation_drafts.py`): BANKING77 test messages
  over the demo knowledge base, and bank_faq questions over bank_faq's answers (passages the
  adapter never saw). How often a draft cites a shown passage and the answering one, the share of
  its words found in the passages, next to the extractive reply (the first passage's best
  sentence, no model).
- latency: the suite served over loopback HTTP with a fresh SQLite file: `POST /messages`
  (parse + retrieval + storage, no generation) P50/P99 at 1 and 8 concurrent clients, and the time
  to the first draft token P50/P99.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    aligned_rows,
    comma_separated,
    concurrent_latency,
    environment,
    parse_sections,
    percentile,
    post,
    run_sections,
    section_parser,
    suite_server,
    write_report,
)

SECTIONS = ("intents", "slots", "retrieval", "multiturn", "replies", "latency")


# ----------------------------------------------------------------------------- intents


def bench_intents(args: argparse.Namespace) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    from apps.customer_service.intents import IntentClassifier
    from apps.customer_service.training import banking77, kept_aside

    train = [r for r in banking77("train") if not kept_aside(r["text"])]
    test = banking77("test")[: args.limit]
    gold = [r["label"] for r in test]
    started = time.perf_counter()
    baseline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=20, max_iter=2000),
    )
    baseline.fit([r["text"] for r in train], [r["label"] for r in train])
    baseline_s = time.perf_counter() - started
    theirs = list(baseline.predict([r["text"] for r in test]))
    classifier = IntentClassifier.load(args.intent_adapter)
    results = classifier.parse([r["text"] for r in test])
    ours = [r.name for r in results]
    kept = [(r.name == g) for r, g in zip(results, gold, strict=True) if not r.out_of_scope]
    return {
        "test_examples": len(test),
        "ours_accuracy": accuracy_score(gold, ours),
        "ours_macro_f1": f1_score(gold, ours, average="macro"),
        "baseline_accuracy": accuracy_score(gold, theirs),
        "baseline_macro_f1": f1_score(gold, theirs, average="macro"),
        "baseline_train_s": round(baseline_s, 1),
        "threshold": classifier.threshold,
        "coverage": len(kept) / len(test),
        "accuracy_of_kept": sum(kept) / max(1, len(kept)),
    }


# ----------------------------------------------------------------------------- slots


def bench_slots(args: argparse.Namespace) -> dict:
    from apps.customer_service.slots import (
        SlotExtractor,
        cross_validation_splits,
        nlupp_examples,
        span_scores,
    )
    from apps.customer_service.training import Run, train_slots

    splits = cross_validation_splits()[: args.slot_splits]
    per_split = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (train_folds, test_folds) in enumerate(splits):
            dev_folds, fit_folds = train_folds[-1:], train_folds[:-1]
            run = Run(out=Path(tmp) / f"split{n}", epochs=args.slot_epochs, limit=args.limit, progress=False)
            train_slots(run, train_folds=fit_folds, dev_folds=dev_folds)
            extractor = SlotExtractor.load(run.out, validators=False)
            test = nlupp_examples(test_folds)
            predicted = extractor.extract([e["text"] for e in test])
            scores = span_scores(
                [[tuple(s) for s in e["spans"]] for e in test],
                [[(x.entity, x.start, x.end) for x in entities] for entities in predicted],
            )
            per_split.append(scores)
            print(f"slots split {n} (test folds {test_folds}): span F1 {scores['f1']:.3f}", flush=True)
    f1s = [s["f1"] for s in per_split]
    return {
        "setup": "large: train on 18 folds (one of them picks the epoch), test on 2",
        "splits": len(per_split),
        "span_f1_mean": statistics.mean(f1s),
        "span_f1_std": statistics.pstdev(f1s),
        "per_split_f1": f1s,
        "per_type_f1_first_split": per_split[0].get("per_type", {}),
    }


# ----------------------------------------------------------------------------- retrieval


def bench_retrieval(args: argparse.Namespace) -> dict:
    from apps.customer_service.evaluation_retrieval import evaluate_faq_retrieval, faq_pairs
    from apps.customer_service.retrieval import MiniLMEmbeddings
    from core_model.datasets import dataset_dir

    pairs = faq_pairs(dataset_dir("bank_faq") / "BankFAQs.csv")[: args.limit]
    return evaluate_faq_retrieval(pairs, MiniLMEmbeddings(), ks=(1, 5))


# ----------------------------------------------------------------------------- replies


def bench_replies(args: argparse.Namespace) -> dict:
    from apps.customer_service.evaluation_drafts import demo_cases, evaluate_drafts, faq_cases
    from apps.customer_service.evaluation_retrieval import faq_pairs
    from apps.customer_service.intents import IntentClassifier
    from apps.customer_service.knowledge_base import DEMO_KB, read_passages
    from apps.customer_service.retrieval import KnowledgeBase, MiniLMEmbeddings
    from apps.customer_service.service import REPLY_ADAPTER
    from apps.customer_service.settings import CustomerServiceSettings
    from apps.customer_service.training import banking77
    from core_model.checkpoint import serving_dtype
    from core_model.datasets import dataset_dir
    from core_model.engine.replicas import EngineSpec, build_engine
    from core_model.serve.adapters import register_adapter

    settings, embeddings = CustomerServiceSettings(), MiniLMEmbeddings()
    intents = IntentClassifier.load(args.intent_adapter)
    engine = build_engine(EngineSpec("embedded", dtype=serving_dtype("embedded", "cpu")))
    register_adapter(engine, REPLY_ADAPTER, args.reply_adapter)
    demo_kb = KnowledgeBase.build(read_passages(DEMO_KB), embeddings)
    pairs = faq_pairs(dataset_dir("bank_faq") / "BankFAQs.csv")
    cases = {
        "demo": demo_cases(banking77("test"), demo_kb, intents, k=settings.passages, limit=args.reply_cases),
        "bank_faq": faq_cases(pairs, embeddings, intents, k=settings.passages, limit=args.reply_cases),
    }
    report = {"adapter": args.reply_adapter}
    free = replace(settings, draft_copy_bias=0.0)  # the model writes as it likes
    for name, chosen in cases.items():
        report[name] = evaluate_drafts(chosen, engine, adapter=REPLY_ADAPTER, settings=settings)
        report[name]["free"] = evaluate_drafts(chosen, engine, adapter=REPLY_ADAPTER, settings=free)["model"]
    return report


# ----------------------------------------------------------------------------- multi-turn


def bench_multiturn(args: argparse.Namespace) -> dict:
    """Three classifiers of SGD turns, trained here on Banks_1, tested on Banks_2: the turn alone
    (the active intent), the turn with the dialogue state carrying intents over turns (the
    console's mechanism; tried on the active-intent classifier and on one of the intents turns
    name), and the turn with the two turns before it in its input."""
    from apps.customer_service.dialogue import DialogueState
    from apps.customer_service.intents import IntentClassifier
    from apps.customer_service.training import (
        SGD_NONE,
        Run,
        sgd_dialogues,
        sgd_turn_examples,
        train_sgd_intents,
    )

    dialogues = sgd_dialogues("dev")[: args.limit]
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for target, context_turns in (("active", 0), ("expressed", 0), ("active", 2)):
            name = f"{target}_context{context_turns}"
            run = Run(out=Path(tmp) / name, epochs=args.sgd_epochs, limit=args.limit, progress=False)
            model = train_sgd_intents(run, target=target, context_turns=context_turns).model
            classifier = IntentClassifier(model, threshold=args.sgd_threshold)
            gold_examples = sgd_turn_examples(dialogues, target="active", context_turns=context_turns)
            right_alone = right_state = total = 0
            for rows in gold_examples:
                state = DialogueState()
                for row, parse in zip(rows, classifier.parse([r["text"] for r in rows]), strict=True):
                    confident = parse.name != SGD_NONE and not parse.out_of_scope
                    state = state.advance(intent=parse.name, confident=confident, entities=[])
                    right_alone += parse.name == row["label"]
                    right_state += (state.active_intent or SGD_NONE) == row["label"]
                    total += 1
            accuracy[name] = right_alone / total
            if context_turns == 0:
                accuracy[f"{name}_with_state"] = right_state / total
    return {
        "dialogues": len(dialogues),
        "turns": total,
        "accuracy_without_context": accuracy["active_context0"],
        "accuracy_with_context": accuracy["active_context2"],
        "accuracy_with_state": accuracy["active_context0_with_state"],
        "accuracy": accuracy,
        "threshold": args.sgd_threshold,
        "train": "SGD Banks_1 customer turns (train); 'active' learns the intent in force, 'expressed' "
        "the intent the turn names; contextN: the N turns before it in the input",
        "test": "SGD Banks_2 customer turns (dev); with_state: the dialogue state carries intents over turns",
    }


# ----------------------------------------------------------------------------- latency


def bench_latency(args: argparse.Namespace) -> dict:
    """The suite in its own process (as `verticals serve` runs it), with a fresh database."""
    with tempfile.TemporaryDirectory() as tmp:
        options = [
            "--cs-database", f"sqlite:///{tmp}/cs.db", "--cs-index-dir", f"{tmp}/kb",
            "--cs-intent-adapter", args.intent_adapter, "--no-code-assist",
        ]  # fmt: skip
        with suite_server(options, log=Path(tmp, "server.log")) as url:
            report = {f"messages_c{c}": _message_latency(url, c, args.requests) for c in args.concurrency}
            report["draft"] = _draft_latency(url, args.drafts)
    return report


MESSAGES = (
    "I lost my card yesterday and I think someone used it",
    "How long does an international transfer take?",
    "my card ending in 4321 was declined at a shop",
    "Can I change my PIN in the app?",
    "I was charged twice for the same payment of £25.40",
    "What is the fee for sending money abroad to IBAN GB82 WEST 1234 5698 7654 32?",
)


def _message_latency(url: str, clients: int, requests: int) -> dict:
    def send(http, conversation: int, client: int, i: int) -> None:
        text = MESSAGES[(client + i) % len(MESSAGES)]
        post(http, f"/cs/conversations/{conversation}/messages", json={"role": "customer", "text": text})

    return concurrent_latency(
        url, clients=clients, requests=requests, send=send,
        setup=lambda http: post(http, "/cs/conversations", json={}).json()["id"],
    )  # fmt: skip


def _draft_latency(url: str, drafts: int) -> dict:
    import httpx

    first_tokens, totals = [], []
    with httpx.Client(base_url=url, timeout=120) as http:
        for i in range(drafts):
            conversation = http.post("/cs/conversations", json={}).json()["id"]
            http.post(
                f"/cs/conversations/{conversation}/messages",
                json={"role": "customer", "text": MESSAGES[i % len(MESSAGES)]},
            ).raise_for_status()
            started, first = time.perf_counter(), None
            with http.stream("GET", f"/cs/conversations/{conversation}/draft") as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if line.startswith("event: delta") and first is None:
                        first = (time.perf_counter() - started) * 1000
            totals.append((time.perf_counter() - started) * 1000)
            first_tokens.append(first if first is not None else totals[-1])
    return {
        "drafts": drafts,
        "first_token_p50_ms": round(percentile(first_tokens, 50), 1),
        "first_token_p99_ms": round(percentile(first_tokens, 99), 1),
        "total_p50_ms": round(percentile(totals, 50), 1),
    }


# ----------------------------------------------------------------------------- report


def table(report: dict) -> list[str]:
    rows = [["figure", "ours", "peer / other", "goal"]]
    if intents := report.get("intents"):
        rows.append(
            [
                "BANKING77 accuracy",
                f"{intents['ours_accuracy']:.4f}",
                f"{intents['baseline_accuracy']:.4f} (TF-IDF+LR)",
                ">= 0.94",
            ]
        )
        rows.append(
            [
                "BANKING77 macro-F1",
                f"{intents['ours_macro_f1']:.4f}",
                f"{intents['baseline_macro_f1']:.4f} (TF-IDF+LR)",
                "",
            ]
        )
        rows.append(
            [
                "in-scope coverage / acc. kept",
                f"{intents['coverage']:.3f} / {intents['accuracy_of_kept']:.3f}",
                f"threshold {intents['threshold']}",
                "",
            ]
        )
    if slots := report.get("slots"):
        rows.append(
            [
                f"NLU++ slot span F1 ({slots['splits']} splits)",
                f"{slots['span_f1_mean']:.4f}",
                f"std {slots['span_f1_std']:.4f}",
                "",
            ]
        )
    if retrieval := report.get("retrieval"):
        for mode in ("bm25", "vector", "hybrid"):
            if mode in retrieval:
                r = retrieval[mode]
                rows.append(
                    [f"bank_faq recall@1 / @5 ({mode})", f"{r['recall@1']:.3f} / {r['recall@5']:.3f}", "", ""]
                )
    if multiturn := report.get("multiturn"):
        rows.append(
            [
                "SGD active-intent accuracy",
                f"{multiturn['accuracy_with_context']:.4f} (2 turns before)",
                f"{multiturn['accuracy_without_context']:.4f} (turn alone)",
                "",
            ]
        )
        rows.append(["  turn alone + dialogue state", f"{multiturn['accuracy_with_state']:.4f}", "", ""])
    if replies := report.get("replies"):
        number = lambda value: "-" if value is None else f"{value:.3f}"
        for name in ("demo", "bank_faq"):
            ours, free, theirs = (replies[name][key] for key in ("model", "free", "extractive"))
            rows.append(
                [
                    f"drafts cite shown / answer ({name})",
                    f"{ours['cites_shown']:.3f} / {ours['cites_answer']:.3f}",
                    f"extractive {theirs['cites_shown']:.3f} / {theirs['cites_answer']:.3f}; "
                    f"not copying {free['cites_shown']:.3f} / {free['cites_answer']:.3f}",
                    "",
                ]
            )
            rows.append(
                [
                    f"  words from passages / numbers right ({name})",
                    f"{ours['supported']:.3f} / {number(ours['numbers_right'])}",
                    f"not copying {free['supported']:.3f} / {number(free['numbers_right'])}",
                    "",
                ]
            )
    if latency := report.get("latency"):
        for key, value in latency.items():
            if key.startswith("messages_c"):
                rows.append(
                    [
                        f"POST /messages, {value['clients']} clients",
                        f"P50 {value['p50_ms']} / P99 {value['p99_ms']} ms",
                        f"{value['requests_per_s']} req/s",
                        "P99 < 200 ms at 8",
                    ]
                )
        draft = latency["draft"]
        rows.append(
            [
                "draft first token",
                f"P50 {draft['first_token_p50_ms']} / P99 {draft['first_token_p99_ms']} ms",
                f"total P50 {draft['total_p50_ms']} ms",
                "< 1 s",
            ]
        )
    return aligned_rows(rows)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    from apps.customer_service.settings import ASSETS

    parser = section_parser(__doc__, SECTIONS, results="customer_service.json")
    parser.add_argument("--quick", action="store_true", help="small slices of every section")
    parser.add_argument("--intent-adapter", default=str(ASSETS / "intents"))
    parser.add_argument("--slot-splits", type=int, default=10)
    parser.add_argument("--slot-epochs", type=int, default=4)
    parser.add_argument("--sgd-epochs", type=int, default=2)
    parser.add_argument("--sgd-threshold", type=float, default=0.5)
    parser.add_argument("--concurrency", type=comma_separated(int), default=[1, 8])
    parser.add_argument("--requests", type=int, default=40, help="messages per client")
    parser.add_argument("--drafts", type=int, default=20, help="drafts timed in the latency section")
    parser.add_argument("--reply-adapter", default=str(ASSETS / "replies"))
    parser.add_argument(
        "--reply-cases", type=int, default=200, help="drafts scored per set in the replies section"
    )
    parser.add_argument("--limit", type=int, help="examples per section (quick runs)")
    args = parse_sections(parser, argv)
    if args.quick:
        args.limit, args.slot_splits, args.slot_epochs, args.sgd_epochs = 200, 1, 1, 1
        args.requests, args.drafts, args.reply_cases = 5, 2, 10
    benches = {"intents": bench_intents, "slots": bench_slots, "retrieval": bench_retrieval}
    benches |= {"multiturn": bench_multiturn, "replies": bench_replies, "latency": bench_latency}
    report: dict = {"environment": environment(["cpu"]), "quick": args.quick}
    run_sections(report, sections=SECTIONS, chosen=args.sections, benches=benches, args=args)
    print("\n".join(table(report)))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
