"""Drafted replies: does the reply model answer from the passages it is shown, and cite the right one?

    cases = demo_cases(banking77("test"), knowledge_base, intents)     # the demo knowledge base
    cases = faq_cases(faq_pairs(path), embeddings, intents)            # bank_faq: passages never trained on
    report = evaluate_drafts(cases, engine, adapter="customer-service")

A case is what the console drafts from: a customer message, the passages retrieval shows for it
(the app's hybrid search, `settings.passages` of them), the state with the intent the app's
classifier gives it, and the ids of the passages that answer it. Each draft is generated as the
console does (greedy, copying the passages' sentences as the settings say: `service.draft_sampling`;
the hand-over offered when the classifier finds the message out of scope), snapped to the passages
and cited as the console stores it (`grounded_replies.snapped_to_passages`; `model_raw`: before
that), and scored:

- `cites_shown`: it cites (`[id]`) a passage it was shown, and nothing else;
- `cites_answer`: it cites a passage that answers the message;
- `supported`: the share of its content words (`grounded_replies.content_words`) found in the
  passages shown or cited, the mean over drafts: the words it did not take from them are its own;
- `clean`: it has no control or replacement characters (a byte-level model can write broken
  UTF-8);
- `numbers_right`: of the drafts that write numbers, the share whose numbers all appear in the
  passages shown or cited (a fee or a time limit the model made up is the worst thing a draft can say);
- `hands_over`: it is the hand-over to a colleague (`grounded_replies.FOLLOW_UP`).

Beside them, the same figures for the extractive reply (`grounded_replies.grounded_reply` over the
first passage shown: no model), whose `cites_answer` is retrieval's recall@1: a model that reads
the passages can do better by citing the right one when retrieval ranks it second or third.

It reads datasets from wherever it is given and copies none of them (the benchmark,
`benchmarks/customer_service.py`, calls it).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.embeddings import Embeddings

from core_model.engine import Engine

from .dialogue import CONTROL_CHARACTERS, DialogueState, draft_messages
from .evaluation_retrieval import faq_index
from .grounded_replies import (
    CITATION,
    FOLLOW_UP,
    INTENT_PASSAGES,
    content_words,
    grounded_reply,
    snapped_to_passages,
)
from .intents import IntentClassifier
from .knowledge_base import Passage
from .retrieval import KnowledgeBase
from .service import draft_sampling
from .settings import CustomerServiceSettings
from .store import Turn

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class DraftCase:
    message: str
    passages: list[Passage]  # as retrieval ranks them
    intent: str | None
    answers: frozenset[str]  # the ids of the passages that answer the message
    knowledge_base: Sequence[Passage]  # all its passages (a draft may cite one it was not shown)


def demo_cases(
    messages: Sequence[dict[str, str]],
    knowledge_base: KnowledgeBase,
    intents: IntentClassifier,
    *,
    k: int,
    limit: int | None = None,
) -> list[DraftCase]:
    """BANKING77 rows ({"text", "label"}) whose intent a passage of `knowledge_base` answers
    (`limit`: that many, spread evenly over them)."""
    answered = [m for m in messages if knowledge_base.get(INTENT_PASSAGES.get(m["label"], "")) is not None]
    return _cases(
        [m["text"] for m in answered],
        [frozenset({INTENT_PASSAGES[m["label"]]}) for m in answered],
        knowledge_base,
        intents,
        k=k,
        limit=limit,
    )


def faq_cases(
    pairs: Sequence[tuple[str, str]],
    embeddings: Embeddings,
    intents: IntentClassifier,
    *,
    k: int,
    limit: int | None = None,
) -> list[DraftCase]:
    """One case per distinct question of (question, answer) pairs (`limit`: that many, spread
    evenly), over a knowledge base of all their distinct answers (`evaluation_retrieval.faq_index`)."""
    passages, targets = faq_index(pairs)
    knowledge_base = KnowledgeBase.build(passages, embeddings)
    questions = list(targets)
    answers = [frozenset(targets[q]) for q in questions]
    return _cases(questions, answers, knowledge_base, intents, k=k, limit=limit)


def _cases(
    messages: list[str],
    answers: list[frozenset[str]],
    knowledge_base: KnowledgeBase,
    intents: IntentClassifier,
    *,
    k: int,
    limit: int | None,
) -> list[DraftCase]:
    if limit is not None and limit < len(messages):
        chosen = [round(i * len(messages) / limit) for i in range(limit)]
        messages, answers = [messages[i] for i in chosen], [answers[i] for i in chosen]
    predicted = intents.parse(messages)
    return [
        DraftCase(
            message,
            [hit.passage for hit in knowledge_base.search(message, k=k)],
            None if intent.out_of_scope else intent.name,
            wanted,
            knowledge_base.passages,
        )
        for message, wanted, intent in zip(messages, answers, predicted, strict=True)
    ]


def evaluate_drafts(
    cases: Sequence[DraftCase],
    engine: Engine,
    *,
    adapter: str | None,
    settings: CustomerServiceSettings | None = None,
    examples: int = 3,
) -> dict[str, Any]:
    """{"cases", "model", "model_raw", "extractive": figures, "examples": the first few drafts}."""
    if not cases:
        raise ValueError("no cases to draft for")
    settings = settings or CustomerServiceSettings()
    prompts = [
        engine.tokenizer.apply_chat_template(
            draft_messages(
                [Turn("customer", case.message)],
                case.passages,
                DialogueState(active_intent=case.intent),
                bank=settings.bank_name,
                context_turns=settings.context_turns,
            ),
            add_generation_prompt=True,
        )
        for case in cases
    ]
    params = [
        draft_sampling(settings, engine.tokenizer, case.passages, hand_over=case.intent is None)
        for case in cases
    ]
    outputs = engine.generate(prompts, params, adapter=adapter)
    raw = [output.text.strip() for output in outputs]
    drafts = [
        snapped_to_passages(text, case.passages, case.knowledge_base)
        for text, case in zip(raw, cases, strict=True)
    ]
    extractive = [grounded_reply(case.message, case.passages[0]) for case in cases]
    return {
        "cases": len(cases),
        "model": draft_figures(cases, drafts),
        "model_raw": draft_figures(cases, raw),
        "extractive": draft_figures(cases, extractive),
        "examples": [
            {"message": case.message, "raw": text, "draft": draft}
            for case, text, draft in zip(cases, raw, drafts, strict=False)
        ][:examples],
    }


def draft_figures(cases: Sequence[DraftCase], drafts: Sequence[str]) -> dict[str, float | None]:
    cites_shown, cites_answer, supported, clean, numbers_right = [], [], [], [], []
    hands_over = [draft == FOLLOW_UP for draft in drafts]
    for case, draft in zip(cases, drafts, strict=True):
        cited = set(CITATION.findall(draft))
        shown = {p.source_id for p in case.passages}
        cites_shown.append(bool(cited) and cited <= shown)
        cites_answer.append(bool(cited & case.answers))
        sources = [*case.passages, *(p for p in case.knowledge_base if p.source_id in cited - shown)]
        words = content_words(CITATION.sub(" ", draft))
        known = set().union(*(content_words(f"{p.title} {p.text}") for p in sources))
        supported.append(len(words & known) / len(words) if words else 0.0)
        clean.append(not CONTROL_CHARACTERS.search(draft) and "\ufffd" not in draft)
        if numbers := set(NUMBER.findall(CITATION.sub(" ", draft))):
            numbers_right.append(numbers <= set(NUMBER.findall(" ".join(p.text for p in sources))))
    mean = lambda values: round(statistics.fmean(values), 4)
    return {
        "cites_shown": mean(cites_shown),
        "cites_answer": mean(cites_answer),
        "supported": mean(supported),
        "clean": mean(clean),
        "numbers_right": mean(numbers_right) if numbers_right else None,
        "hands_over": mean(hands_over),
    }
