"""Replies grounded in the knowledge base: the examples that teach the reply adapter to answer from
the passages in its prompt, what its drafts may copy, and the citations of what they copied.

    examples = grounded_examples(banking77("train"), read_passages(DEMO_KB), seed=0)
    reply = grounded_reply("I lost my card", passage)   # "If you have lost your card ... [card-lost-stolen]"
    sources, weights = copy_sources(passages, tokenizer, hand_over=False)   # SamplingParams.copy_from
    draft = snapped_to_passages(text, passages, knowledge_base)            # "... [card-lost-stolen]"

Each example is a BANKING77 customer message (CC BY 4.0) under the prompt the console sends
(`dialogue.draft_messages`): three knowledge-base passages, one of which answers the message when
its intent has one (`INTENT_PASSAGES`), the others the passages that share the most words with
it. The reply to learn is the answering passage's sentence that shares the most words with the
message (and the next one when it is short), then the passage's id in square brackets; with no
answering passage, a hand-over to a colleague.

A small model would learn the demo knowledge base by heart rather than read its prompt, so each
prompt's passages are changed: another bank's name, other digits in every number, and in some
prompts other ids ("faq-12", "7") or no titles, as other knowledge bases have. The reply follows
the changed text, so the only way to write it is to copy it from the prompt.

It learnt to copy the demo knowledge base, not to read one it never saw: left to write freely over
bank_faq's answers it cites none and makes up its own facts ("You have $1,300.10 in your checking
account"). So the console's drafts copy (`core_model.engine.copying`): the model chooses which of
the shown passages' sentences to write, and when to stop, but writes nothing else.
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from core_model.tokenizer import Tokenizer

from .dialogue import DialogueState, draft_messages
from .knowledge_base import Passage
from .retrieval import tokenize
from .store import Turn

FOLLOW_UP = "Thank you for your message. A colleague will look into this and follow up with you shortly."
PASSAGES_PER_PROMPT = 3
SHORT_SENTENCE_WORDS = 14  # a reply sentence shorter than this takes the next one too
DEMO_BANK = "Harbour & Pine"
OTHER_IDS_SHARE = 0.5  # of prompts whose passages get other ids than the demo's slugs
ID_PREFIXES = ("faq-", "kb-", "help-", "article-", "")
UNTITLED_SHARE = 0.25  # of prompts whose passages have no title (a CSV of answers only)
BANK_NAMES = (
    "Harbour & Pine", "Northgate", "Fairfield", "Copperleaf", "Riverside", "Kestrel", "Bluewater",
    "Ashford", "Greenway", "Silverbirch",
)  # fmt: skip

# BANKING77 intents that a passage of the demo knowledge base (data/demo_kb.md) answers.
INTENT_PASSAGES = {
    "Refund_not_showing_up": "refund-pending",
    "request_refund": "refund-pending",
    "activate_my_card": "card-activate",
    "card_arrival": "card-not-arrived",
    "card_delivery_estimate": "card-not-arrived",
    "change_pin": "card-pin-change",
    "pin_blocked": "card-pin-blocked",
    "declined_card_payment": "card-declined",
    "card_not_working": "card-declined",
    "contactless_not_working": "card-contactless",
    "lost_or_stolen_card": "card-lost-stolen",
    "compromised_card": "fraud-report",
    "cash_withdrawal_not_recognised": "fraud-report",
    "card_payment_not_recognised": "dispute-chargeback",
    "transaction_charged_twice": "dispute-chargeback",
    "cancel_transfer": "transfer-cancel",
    "pending_transfer": "transfer-pending",
    "transfer_not_received_by_recipient": "transfer-pending",
    "balance_not_updated_after_bank_transfer": "transfer-pending",
    "transfer_timing": "transfer-domestic",
    "transfer_fee_charged": "transfer-international",
    "receiving_money": "transfer-incoming",
    "transfer_into_account": "account-top-up",
    "top_up_by_bank_transfer_charge": "account-top-up",
    "terminate_account": "account-close",
    "edit_personal_details": "account-address-change",
    "verify_my_identity": "account-verify-identity",
    "why_verify_identity": "account-verify-identity",
    "unable_to_verify_identity": "account-verify-identity",
    "cash_withdrawal_charge": "atm-fees",
    "declined_cash_withdrawal": "cash-withdrawal-limits",
    "exchange_rate": "exchange-rates",
    "exchange_charge": "exchange-rates",
    "card_payment_wrong_exchange_rate": "exchange-rates",
    "wrong_exchange_rate_for_cash_withdrawal": "exchange-rates",
    "direct_debit_payment_not_recognised": "direct-debits",
    "passcode_forgotten": "app-login",
}

# copy_sources: how much less a passage's sentences weigh per place lower in retrieval's ranking.
# Drafts over 200 messages cited the answering passage (demo knowledge base / bank_faq) 0.395 /
# 0.170 of the time at 0, 0.505 / 0.205 at 1, 0.540 / 0.255 at 3, 0.540 / 0.295 at 6.
RANK_PENALTY = 6.0
SNAP_SIMILARITY = 0.7  # snapped_to_passages: the share of words a draft's sentence shares with a passage's
CITATION = re.compile(r"\[([A-Za-z0-9][A-Za-z0-9._-]*)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def content_words(text: str) -> set[str]:
    """The words that overlap counts: retrieval's BM25 terms (no stop words, plurals singular)."""
    return set(tokenize(text))


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def grounded_reply(question: str, passage: Passage) -> str:
    """The passage's sentence sharing the most content words with the question (the first on a
    tie), the next one too when it is short, then the passage's id: "... [card-lost-stolen]"."""
    parts = sentences(passage.text)
    asked = content_words(question)
    best = max(range(len(parts)), key=lambda i: (len(asked & content_words(parts[i])), -i))
    chosen = (
        parts[best : best + 2] if len(parts[best].split()) < SHORT_SENTENCE_WORDS else parts[best : best + 1]
    )
    return f"{' '.join(chosen)} [{passage.source_id}]"


def changed(passage: Passage, rng: random.Random, *, bank: str, source_id: str, titled: bool) -> Passage:
    """The passage under `source_id`, with `bank` for the demo bank's name, other digits in every
    number, and no title unless `titled`."""
    text = re.sub(r"\d", lambda _: str(rng.randint(0, 9)), passage.text.replace(DEMO_BANK, bank))
    title = passage.title.replace(DEMO_BANK, bank) if titled else ""
    return replace(passage, source_id=source_id, title=title, text=text)


def other_ids(count: int, rng: random.Random) -> list[str]:
    """`count` distinct ids in one of the shapes knowledge bases use: "faq-12", "kb-3", "7"."""
    prefix = rng.choice(ID_PREFIXES)
    numbers = rng.sample(range(1, 400), count)
    return [f"{prefix}{n}" for n in numbers]


def grounded_examples(
    messages: Sequence[dict[str, str]],
    passages: Sequence[Passage],
    *,
    follow_up_share: float = 0.15,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Chat examples (system prompt with passages, the customer's message, the reply to learn)
    for `messages` ({"text", "label"}: BANKING77 rows) whose intent a passage answers, plus about
    `follow_up_share` of hand-overs from the others. Passages not in `passages` are skipped."""
    by_id = {p.source_id: p for p in passages}
    rng = random.Random(seed)
    answered = [m for m in messages if INTENT_PASSAGES.get(m["label"]) in by_id]
    others = [m for m in messages if INTENT_PASSAGES.get(m["label"]) not in by_id]
    follow_ups = round(len(answered) * follow_up_share / (1 - follow_up_share))
    chosen = answered + rng.sample(others, min(follow_ups, len(others)))
    examples = []
    for message in chosen:
        gold = by_id.get(INTENT_PASSAGES.get(message["label"], ""))
        shown = _shown_passages(message["text"], gold, passages, rng)
        bank, titled = rng.choice(BANK_NAMES), rng.random() >= UNTITLED_SHARE
        ids = other_ids(len(shown), rng) if rng.random() < OTHER_IDS_SHARE else [p.source_id for p in shown]
        answer = None
        for i, (passage, source_id) in enumerate(zip(shown, ids, strict=True)):
            shown[i] = changed(passage, rng, bank=bank, source_id=source_id, titled=titled)
            answer = shown[i] if passage is gold else answer
        prompt = draft_messages(
            [Turn("customer", message["text"])],
            shown,
            DialogueState(active_intent=message["label"]),
            bank=f"{bank} Bank",
        )
        reply = grounded_reply(message["text"], answer) if answer else FOLLOW_UP
        examples.append({"messages": [*prompt, {"role": "assistant", "content": reply}]})
    rng.shuffle(examples)
    return examples


def _shown_passages(
    question: str, gold: Passage | None, passages: Sequence[Passage], rng: random.Random
) -> list[Passage]:
    """What retrieval would show: the passages sharing the most words with the question (ties
    broken at random), with `gold` among them at a random place (first half the time)."""
    asked = content_words(question)
    ranked = sorted(
        (p for p in passages if p is not gold),
        key=lambda p: (-len(asked & content_words(f"{p.title} {p.text}")), rng.random()),
    )
    if gold is None:
        return ranked[:PASSAGES_PER_PROMPT]
    shown = ranked[: PASSAGES_PER_PROMPT - 1]
    place = 0 if rng.random() < 0.5 else rng.randint(1, len(shown))
    return [*shown[:place], gold, *shown[place:]]


def snapped_to_passages(
    draft: str,
    passages: Sequence[Passage],
    knowledge_base: Sequence[Passage] = (),
    *,
    min_similarity: float = SNAP_SIMILARITY,
) -> str:
    """The draft as the agent gets it: each of its sentences that is nearly a sentence of a
    passage shown (`min_similarity` of their words in order, any digits alike), or else of any
    passage of the `knowledge_base`, becomes that sentence as the passage has it, and the
    citations become the ids of the passages used. A small model copies a passage's words well
    and its digits badly ("within 4 to 0 working days"), sometimes from a passage it learnt
    rather than one it was shown; a fee or a time limit must come from the passage, never from the
    model. Sentences that match none stay as written, and so do the model's citations when none
    matched."""
    body = CITATION.sub(" ", draft).strip()
    if not body:
        return draft
    shown = [(sentence, passage.source_id) for passage in passages for sentence in sentences(passage.text)]
    known = [
        (sentence, passage.source_id) for passage in knowledge_base for sentence in sentences(passage.text)
    ]
    kept, cited = [], []
    for sentence in sentences(body):
        match = _closest(sentence, shown, min_similarity) or _closest(sentence, known, min_similarity)
        if match is not None:
            sentence, source_id = match
            cited.append(source_id)
        kept.append(sentence)
    citations = [f"[{i}]" for i in dict.fromkeys(cited)] or [m.group(0) for m in CITATION.finditer(draft)]
    return " ".join([*kept, *citations])


def copy_sources(
    passages: Sequence[Passage], tokenizer: Tokenizer, *, hand_over: bool
) -> tuple[tuple[tuple[int, ...], ...], tuple[float, ...]]:
    """What a draft may copy (`core_model.engine.copying`) and the weights of each: each
    passage's sentences, alone or with the next one, and the hand-over when `hand_over`, each
    followed by the end of the turn; so a draft copied through is one or two sentences of a
    passage, or the hand-over. A passage ranked lower by retrieval weighs `RANK_PENALTY` less
    per place.

    The hand-over is offered only when the caller says so: offered always, the reply adapter
    chose it for a third of the messages that a shown passage answers."""
    end = tokenizer.chat_stop_ids[:1]
    weighted: dict[str, float] = {FOLLOW_UP: 0.0} if hand_over else {}
    for rank, passage in enumerate(passages):
        # One line each: the lookup runs on from the prompt, which ends with a newline.
        parts = [" ".join(sentence.split()) for sentence in sentences(passage.text)]
        for text in [*parts, *(f"{first} {second}" for first, second in zip(parts, parts[1:], strict=False))]:
            weighted.setdefault(text, -RANK_PENALTY * rank)
    return tuple((*tokenizer.encode(text), *end) for text in weighted), tuple(weighted.values())


def _closest(sentence: str, sources: list[tuple[str, str]], min_similarity: float) -> tuple[str, str] | None:
    """The (sentence, source id) of `sources` most like `sentence`, if at least `min_similarity`."""
    best, best_score = None, 0.0
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(_words(sentence))  # compared with each source in turn: its index is built once
    for source in sources:
        matcher.set_seq1(_words(source[0]))
        floor = max(min_similarity, best_score)  # the cheap upper bounds first
        if matcher.real_quick_ratio() < floor or matcher.quick_ratio() < floor:
            continue
        score = matcher.ratio()
        if score >= min_similarity and (best is None or score > best_score):
            best, best_score = source, score
    return best


def _words(text: str) -> list[str]:
    """Lowercased words with every digit as 0: a sentence with other digits is the same sentence."""
    return re.sub(r"\d", "0", text.lower()).split()
