"""The shipped reply adapter on the embedded model, through the evaluation the benchmark runs:
drafts that copy a passage of the knowledge base and cite it, or hand over to a colleague, on the
demo knowledge base it was trained on and on one it never saw.

.venv/bin/python -m pytest tests/apps/customer_service/test_drafts.py -q
"""

import pytest

from apps.customer_service.evaluation_drafts import demo_cases, evaluate_drafts, faq_cases
from apps.customer_service.grounded_replies import CITATION, FOLLOW_UP, sentences
from apps.customer_service.intents import IntentClassifier
from apps.customer_service.knowledge_base import DEMO_KB, read_passages
from apps.customer_service.retrieval import KnowledgeBase, MiniLMEmbeddings
from apps.customer_service.service import REPLY_ADAPTER
from apps.customer_service.settings import CustomerServiceSettings
from core_model.checkpoint import serving_dtype
from core_model.engine.replicas import EngineSpec, build_engine
from core_model.serve.adapters import register_adapter

MESSAGES = [  # written for this test, in BANKING77's style
    {"text": "my card was stolen this morning, what should I do", "label": "lost_or_stolen_card"},
    {"text": "how can I change the PIN of my card", "label": "change_pin"},
    {"text": "I want to cancel a transfer I just made", "label": "cancel_transfer"},
    {"text": "what exchange rate do you use for payments abroad", "label": "exchange_rate"},
    {"text": "how do I close my account", "label": "terminate_account"},
    {"text": "my new card still has not arrived", "label": "card_arrival"},
]
# A knowledge base the adapter never saw (written for this test): a credit union's FAQ answers.
UNSEEN_FAQ = [
    (
        "how do I order a new chequebook",
        "Chequebooks are ordered online under Services > Chequebook. They arrive within 7 days.",
    ),
    (
        "can I pay my mortgage early",
        "Overpayments of up to 10% of the balance a year are free. Above that a repayment charge applies.",
    ),
    (
        "what is the limit for a standing order",
        "A standing order can pay up to 25,000 a month. Set it up at any branch or online.",
    ),
    (
        "how do I add a joint account holder",
        "Both holders sign the joint account form at a branch with photo identification.",
    ),
]


@pytest.fixture(scope="module")
def setup():
    settings = CustomerServiceSettings()
    engine = build_engine(EngineSpec("embedded", dtype=serving_dtype("embedded", "cpu")))
    register_adapter(engine, REPLY_ADAPTER, settings.reply_adapter)
    return settings, engine, MiniLMEmbeddings(), IntentClassifier.load(settings.intent_adapter)


@pytest.fixture(scope="module")
def report(setup):
    settings, engine, embeddings, intents = setup
    knowledge_base = KnowledgeBase.build(read_passages(DEMO_KB), embeddings)
    cases = demo_cases(MESSAGES, knowledge_base, intents, k=settings.passages)
    return evaluate_drafts(cases, engine, adapter=REPLY_ADAPTER, settings=settings, examples=len(MESSAGES))


def test_drafts_cite_the_passages_shown_and_often_the_one_that_answers(report):
    # The embedded model is small: on these six it cites the answering passage in three, and hands
    # two over to a colleague (the old adapter, trained on dialogues alone, cited none).
    assert report["cases"] == len(MESSAGES)
    model = report["model"]
    assert model["cites_shown"] >= 0.5 and model["cites_answer"] >= 1 / 3, report["examples"]
    assert model["clean"] == 1.0, report["examples"]


def test_a_draft_ends_with_its_turn(report):
    # After its citation, or with the hand-over; before the chat stop it wrote on to max_tokens.
    for example in report["examples"]:
        assert example["draft"].endswith("]") or example["draft"] == FOLLOW_UP, example


def test_drafts_over_a_knowledge_base_never_seen_are_its_sentences(setup):
    # Left to write freely, the adapter answers these with text of its own ("You have $1,300.10
    # in your checking account"); copying, every draft is a shown passage's sentences, cited.
    settings, engine, embeddings, intents = setup
    cases = faq_cases(UNSEEN_FAQ, embeddings, intents, k=settings.passages)
    report = evaluate_drafts(cases, engine, adapter=REPLY_ADAPTER, settings=settings, examples=len(cases))
    for case, example in zip(cases, report["examples"], strict=True):
        if example["draft"] == FOLLOW_UP:
            assert case.intent is None  # only out-of-scope messages are handed over
            continue
        shown = {p.source_id: p for p in case.passages}
        [cited] = CITATION.findall(example["draft"])
        assert cited in shown, example
        body = CITATION.sub("", example["draft"]).strip()
        assert all(sentence in sentences(shown[cited].text) for sentence in sentences(body)), example
    assert report["model"]["cites_shown"] >= 0.75 and report["model"]["numbers_right"] in (None, 1.0)
