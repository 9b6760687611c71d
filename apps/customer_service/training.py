"""Training the customer-service adapters from the licensed datasets, through the suite's one
adapter-training loop (`core_model.train.train_adapter`).

    verticals cs train intents --epochs 16 --out apps/customer_service/assets/intents  # BANKING77, CC BY 4.0
    verticals cs train slots --epochs 8 --out apps/customer_service/assets/slots       # NLU++, CC BY 4.0
    verticals cs train replies --out apps/customer_service/assets/replies    # SGD Banks (CC BY-SA 4.0)
    verticals cs train intents --epochs 1 --limit 500 --out /tmp/intents     # a quick CPU check

Each reads its dataset from `../shared/datasets` (or `$VERTICALS_DATASETS`), never from a copy in
the project. The intent adapter keeps 10% of BANKING77 train aside (by a stable hash of the text):
it picks the best epoch and calibrates the out-of-scope threshold. The reading functions also feed
`benchmarks/customer_service.py`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core_model import load_tokenizer
from core_model.datasets import dataset_dir
from core_model.train.adapters import AdapterResult, AdapterTrainingConfig, train_adapter

from .dialogue import DEFAULT_CONTEXT_TURNS, DialogueState, draft_messages
from .grounded_replies import grounded_examples
from .intents import DEFAULT_TARGET_PRECISION, calibrate_threshold, write_calibration
from .knowledge_base import DEMO_KB, read_passages
from .slots import nlupp_examples
from .store import Turn

KEPT_ASIDE_PERCENT = 10
SGD_NONE = "NONE"  # SGD's active intent before the customer names one
REPLY_BANK = "the bank"  # the SGD dialogues name no bank
SGD_REPLY_EXAMPLES = 1500  # SGD agent turns among the reply adapter's grounded examples
REPLY_DEV_GROUNDED, REPLY_DEV_DIALOGUE = 200, 100


@dataclass(frozen=True)
class Run:
    """One adapter to train: where, on what base, with which settings."""

    out: Path
    base: str = "embedded"
    epochs: int = 4
    limit: int | None = None  # first N examples of train and of dev only (quick checks)
    progress: bool = True


# ----------------------------------------------------------------------------- datasets


def banking77(split: str) -> list[dict[str, str]]:
    """BANKING77 `train` or `test` as {"text", "label"} examples."""
    path = dataset_dir("banking77") / f"{split}.csv"
    with path.open(newline="", encoding="utf-8") as file:
        return [{"text": row["text"], "label": row["category"]} for row in csv.DictReader(file)]


def kept_aside(text: str) -> bool:
    """True for the ~10% of texts held out of training (a stable hash, the same on every machine)."""
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 100 < KEPT_ASIDE_PERCENT


def sgd_dialogues(split: str) -> list[list[dict[str, Any]]]:
    """SGD Banks dialogues (`train`: Banks_1, `dev`: Banks_2) as lists of turns {"role":
    "customer"|"agent", "text", "bank", "intent", "expressed"}. On customer turns `intent` is the
    Banks frame's active intent (SGD_NONE before one is named) and `expressed` the intent this
    turn itself names (its INFORM_INTENT act), else SGD_NONE; both are None on agent turns.
    `bank`: the turn has a Banks frame (multi-domain dialogues also talk about other services)."""
    raw = json.loads((dataset_dir("sgd_banks") / f"{split}.json").read_text())
    return [[_sgd_turn(turn) for turn in dialogue["turns"]] for dialogue in raw]


def _sgd_turn(turn: dict[str, Any]) -> dict[str, Any]:
    frame = next((f for f in turn["frames"] if f["service"].startswith("Banks")), None)
    row = {"text": turn["utterance"], "bank": frame is not None, "intent": None, "expressed": None}
    if turn["speaker"] != "USER":
        return row | {"role": "agent"}
    frame = frame or {}
    named = [a["values"][0] for a in frame.get("actions", []) if a["act"] == "INFORM_INTENT" and a["values"]]
    intent = frame.get("state", {}).get("active_intent") or SGD_NONE
    return row | {"role": "customer", "intent": intent, "expressed": named[0] if named else SGD_NONE}


def reply_examples(dialogues: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One chat example per agent turn of a bank frame: the last turns before it as context, the
    agent's words as the assistant turn the loss is on."""

    examples = []
    for turns in dialogues:
        for i, turn in enumerate(turns):
            if turn["role"] != "agent" or not turn["bank"] or i == 0:
                continue
            history = [Turn(t["role"], t["text"]) for t in turns[:i]]
            intent = next(
                (t["intent"] for t in reversed(turns[:i]) if t["intent"] not in (None, SGD_NONE)), None
            )
            state = DialogueState(active_intent=intent)
            messages = draft_messages(
                history, [], state, bank=REPLY_BANK, context_turns=DEFAULT_CONTEXT_TURNS
            )
            examples.append({"messages": [*messages, {"role": "assistant", "content": turn["text"]}]})
    return examples


# ----------------------------------------------------------------------------- training


def _config(run: Run, **overrides: Any) -> AdapterTrainingConfig:
    return AdapterTrainingConfig(**{"epochs": run.epochs, "patience": 0, **overrides})


def _train(
    run: Run,
    *,
    task: str,
    train: list[dict[str, Any]],
    dev: list[dict[str, Any]],
    labels: list[str] | None = None,
    **config: Any,
) -> AdapterResult:
    train, dev = (train[: run.limit], dev[: run.limit]) if run.limit else (train, dev)
    return train_adapter(
        run.base,  # by name: loaded in float32, and the adapter records which base it belongs to
        load_tokenizer(run.base),
        task=task,
        train=train,
        dev=dev,
        out_dir=run.out,
        labels=labels,
        config=_config(run, **config),
        progress=run.progress,
    )


def train_intents(run: Run, *, target_precision: float = DEFAULT_TARGET_PRECISION) -> AdapterResult:
    """BANKING77 intents; the kept-aside part picks the epoch and calibrates the threshold."""
    rows = banking77("train")
    train = [r for r in rows if not kept_aside(r["text"])]
    aside = [r for r in rows if kept_aside(r["text"])][: run.limit]
    labels = sorted({r["label"] for r in rows})
    result = _train(
        run,
        task="sequence-classification",
        train=train,
        dev=aside,
        labels=labels,
        rank=16,
        alpha=32.0,
        pooling="mean",
        batch_size=32,
        max_length=64,
        lr=2e-3,
    )
    predictions = result.model.classify([r["text"] for r in aside])
    calibration = calibrate_threshold(
        [p for _, p in predictions],
        [label == r["label"] for (label, _), r in zip(predictions, aside, strict=True)],
        target_precision=target_precision,
    )
    write_calibration(
        result.path,
        {
            **calibration,
            "target_precision": target_precision,
            "examples": len(aside),
            "data": "banking77 train",
        },
    )
    return result


def train_slots(run: Run, *, train_folds: list[int] | None = None, dev_folds: list[int] | None = None):
    """NLU++ banking slots as BIO tags; default: folds 0-17 train, 18-19 pick the epoch."""
    train = nlupp_examples(train_folds if train_folds is not None else list(range(18)))
    dev = nlupp_examples(dev_folds if dev_folds is not None else [18, 19])
    labels = sorted({tag for example in train + dev for tag in example["tags"]})
    strip = lambda examples: [{"tokens": e["tokens"], "tags": e["tags"]} for e in examples]
    return _train(
        run,
        task="token-classification",
        train=strip(train),
        dev=strip(dev),
        labels=labels,
        rank=16,
        alpha=32.0,
        batch_size=16,
        max_length=96,
        lr=2e-3,
        bidirectional=True,
        characters=64,  # account numbers, amounts and names are read by their spelling too
        crf=True,  # the tag sequence as a whole: no I- after O, slot boundaries learned
    )


def train_replies(run: Run) -> AdapterResult:
    """The reply adapter: replies grounded in the passages of the prompt, for BANKING77 messages
    over the demo knowledge base (`grounded_replies.py`), mixed with agent turns of SGD Banks_1
    dialogues (asking for the details of a transfer, confirming it). The kept-aside BANKING77
    messages and Banks_2 turns are the dev set."""
    rows, passages = banking77("train"), read_passages(DEMO_KB)
    train = grounded_examples([r for r in rows if not kept_aside(r["text"])], passages, seed=0)
    dev = grounded_examples([r for r in rows if kept_aside(r["text"])], passages, seed=1)[:REPLY_DEV_GROUNDED]
    rng = random.Random(0)
    dialogue_turns = reply_examples(sgd_dialogues("train"))
    train += rng.sample(dialogue_turns, min(SGD_REPLY_EXAMPLES, len(dialogue_turns)))
    rng.shuffle(train)
    dev += reply_examples(sgd_dialogues("dev"))[:REPLY_DEV_DIALOGUE]
    return _train(
        run, task="lm", train=train, dev=dev, rank=16, alpha=32.0, batch_size=16, max_length=768,
        lr=1e-3, eval_every=100,
    )  # fmt: skip


def sgd_turn_examples(
    dialogues: list[list[dict[str, Any]]], *, target: str = "active", context_turns: int = 0
) -> list[list[dict[str, str]]]:
    """Per dialogue, its Banks customer turns as {"text", "label"} examples. `target="active"`:
    the intent in force at that turn; `"expressed"`: the intent the turn itself names. With
    `context_turns`, the text starts with that many earlier turns ("agent: ... customer: ...")."""
    if target not in ("expressed", "active"):
        raise ValueError(f"target must be 'expressed' or 'active', got {target!r}")
    key = "expressed" if target == "expressed" else "intent"
    examples = []
    for turns in dialogues:
        rows = []
        for i, turn in enumerate(turns):
            if turn["role"] == "customer" and turn["bank"]:
                before = turns[max(0, i - context_turns) : i] if context_turns else []
                context = " ".join(f"{t['role']}: {t['text']}" for t in before)
                text = f"{context} customer: {turn['text']}" if context else turn["text"]
                rows.append({"text": text, "label": turn[key]})
        examples.append(rows)
    return examples


def train_sgd_intents(run: Run, *, target: str = "active", context_turns: int = 0) -> AdapterResult:
    """A classifier of SGD Banks_1 customer turns (`sgd_turn_examples`): the benchmark's
    multi-turn figure compares the turn alone, the turn with the dialogue state, and the turn
    with the turns before it."""
    rows = [
        r
        for d in sgd_turn_examples(sgd_dialogues("train"), target=target, context_turns=context_turns)
        for r in d
    ]
    train = [r for r in rows if not kept_aside(r["text"])]
    dev = [r for r in rows if kept_aside(r["text"])]
    return _train(
        run,
        task="sequence-classification",
        train=train,
        dev=dev,
        rank=8,
        alpha=16.0,
        pooling="mean",
        batch_size=32,
        max_length=48 + 32 * context_turns,
    )
