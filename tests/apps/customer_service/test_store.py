"""The customer-service store on a real SQLite file: round trips, errors, and the analytics numbers.

.venv/bin/python -m pytest -q tests/apps/customer_service/test_store.py
"""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, StatementError

from apps.customer_service import database, store
from apps.customer_service.models import AgentAction, Message

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def Session(tmp_path):
    engine = database.make_engine(f"sqlite:///{tmp_path / 'cs.db'}")
    database.upgrade(engine)
    yield database.session_factory(engine)
    engine.dispose()


@pytest.fixture
def session(Session):
    with Session() as session:
        yield session


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def conversation_with_message(session, text="Where is my parcel?"):
    conversation = store.create_conversation(session, customer_ref="crm-1", customer_name="Ada")
    message = store.add_message(session, conversation_id=conversation.id, role="customer", text=text)
    return conversation, message


def draft(session, conversation, message, **timing):
    return store.add_suggestion(
        session,
        conversation_id=conversation.id,
        message_id=message.id,
        kind="draft",
        text="",
        sources=["faq-3"],
        **timing,
    )


def test_foreign_keys_are_enforced(session):
    session.add(Message(conversation_id=999, role="customer", text="orphan"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_a_known_customer_ref_reuses_the_customer(session):
    first = store.create_conversation(session, customer_ref="crm-1")
    second = store.create_conversation(session, customer_ref="crm-1", customer_name="Ada", channel="email")
    anonymous = store.create_conversation(session)
    assert first.customer_id == second.customer_id != anonymous.customer_id
    assert (second.customer.name, second.channel, second.status) == ("Ada", "email", "open")


def test_history_round_trips_messages_and_predictions(Session):
    with Session() as session, session.begin():
        conversation, message = conversation_with_message(session)
        store.add_prediction(
            session,
            message_id=message.id,
            intent="track_order",
            confidence=0.9,
            intent_ranking=[
                {"name": "track_order", "confidence": 0.9},
                {"name": "refund", "confidence": 0.1},
            ],
            entities=[{"entity": "order_id", "value": "A-17", "start": 3, "end": 7}],
            carried_intent=True,
            parse_ms=12.5,
            retrieval_ms=4.0,
            passages=[{"source_id": "faq-3", "score": 0.7}],
            model_version="embedded@1",
        )
        store.add_message(session, conversation_id=conversation.id, role="agent", text="Let me check.")
    with Session() as session:
        history = store.conversation_history(session, conversation.id)
    texts = [(message.role, message.text) for message, _ in history]
    assert texts == [("customer", "Where is my parcel?"), ("agent", "Let me check.")]
    prediction = history[0][1]
    assert prediction.intent_ranking[1] == {"name": "refund", "confidence": 0.1}
    assert prediction.entities[0]["value"] == "A-17" and prediction.passages[0]["source_id"] == "faq-3"
    assert (prediction.carried_intent, prediction.out_of_scope, prediction.parse_ms) == (True, False, 12.5)
    assert history[1][1] is None
    assert history[0][0].created_at.tzinfo is not None


def test_history_last_keeps_the_newest_in_order(session):
    conversation, _ = conversation_with_message(session, text="one")
    for text in ("two", "three"):
        store.add_message(session, conversation_id=conversation.id, role="customer", text=text)
    history = store.conversation_history(session, conversation.id, last=2)
    assert [message.text for message, _ in history] == ["two", "three"]


def test_recent_turns_are_the_history_the_dialogue_state_reads(session):
    conversation, first = conversation_with_message(session, text="one")
    entities = [{"entity": "amount", "value": "20", "start": 0, "end": 2}]
    store.add_prediction(
        session, message_id=first.id, intent="card_lost", confidence=0.9, entities=entities,
        out_of_scope=True, passages=[{"source_id": "faq-1", "score": 0.5}],
    )  # fmt: skip
    for role, text in (("agent", "two"), ("customer", "three")):
        store.add_message(session, conversation_id=conversation.id, role=role, text=text)
    for last in (2, 50):
        history = store.conversation_history(session, conversation.id, last=last)
        turns = store.recent_turns(session, conversation.id, last=last)
        assert [(t.role, t.text) for t, _ in turns] == [(m.role, m.text) for m, _ in history]
        assert [p and (p.intent, p.out_of_scope, p.entities) for _, p in turns] == [
            p and (p.intent, p.out_of_scope, p.entities) for _, p in history
        ]
    (_, parsed), *_ = store.recent_turns(session, conversation.id, last=50)
    assert parsed == store.Parsed("card_lost", True, entities)
    with pytest.raises(store.NotFound):
        store.recent_turns(session, 404, last=5)


def test_a_missing_conversation(session):
    assert store.get_conversation(session, 404) is None
    with pytest.raises(store.NotFound):
        store.add_message(session, conversation_id=404, role="customer", text="hi")
    with pytest.raises(store.NotFound):
        store.conversation_history(session, 404)


def test_a_streamed_draft_is_filled_in_then_acted_on(session):
    conversation, message = conversation_with_message(session)
    suggestion = draft(session, conversation, message)
    assert suggestion.status == "shown"
    store.update_suggestion(session, suggestion_id=suggestion.id, first_token_ms=80.0)
    store.update_suggestion(session, suggestion_id=suggestion.id, total_ms=900.0, text="Hi there")
    action = store.record_action(session, suggestion_id=suggestion.id, action="edited", final_text="Hello!")
    stored = store.get_suggestion(session, suggestion.id)
    assert (stored.status, stored.text, stored.first_token_ms, stored.total_ms) == (
        "edited",
        "Hi there",
        80.0,
        900.0,
    )
    assert stored.actions == [action] and action.final_text == "Hello!"
    assert conversation.suggestions == [stored] and stored.sources == ["faq-3"]


def test_record_action_on_a_missing_suggestion_stores_nothing(session):
    with pytest.raises(store.NotFound):
        store.record_action(session, suggestion_id=404, action="accepted")
    with pytest.raises(ValueError):
        store.record_action(session, suggestion_id=404, action="liked")
    session.commit()
    assert session.scalar(select(func.count(AgentAction.id))) == 0


def test_handoff_and_csat(session):
    conversation, _ = conversation_with_message(session)
    store.set_handoff(session, conversation_id=conversation.id, summary="Parcel lost, wants a refund.")
    store.set_csat(session, conversation_id=conversation.id, score=4)
    assert conversation.status == "handed_off" and conversation.csat == 4
    assert conversation.handoff_summary == "Parcel lost, wants a refund."
    with pytest.raises(ValueError):
        store.set_csat(session, conversation_id=conversation.id, score=6)


def test_list_conversations_newest_first_with_counts_and_preview(session):
    old, _ = conversation_with_message(session, text="first")
    store.add_message(session, conversation_id=old.id, role="agent", text="x" * 200)
    new = store.create_conversation(session)
    quiet = store.create_conversation(session)
    for minutes, conversation in enumerate([old, new, quiet]):
        conversation.created_at = at(minutes)
    store.close_conversation(session, quiet.id)
    rows = store.list_conversations(session)
    assert [(row.id, row.message_count) for row in rows] == [(quiet.id, 0), (new.id, 0), (old.id, 2)]
    assert rows[2].last_message == "x" * store.PREVIEW_CHARS and rows[2].customer_ref == "crm-1"
    assert rows[0].last_message is None
    assert [row.id for row in store.list_conversations(session, status="open", limit=1)] == [new.id]


def make_analytics_set(session):
    """Five customer messages over two hours (latencies 10, 20, 30, 40 in the first hour, 100 in the
    second), four drafts (first tokens 50, 150, 250, 90; accepted, edited, rejected, no action yet)
    and one passage, all at hand-set times."""
    conversation = store.create_conversation(session)
    for minutes, latency, intent in [
        (0, 10, "refund"),
        (10, 20, "track"),
        (20, 30, "refund"),
        (30, 40, "refund"),
    ]:
        message = store.add_message(
            session, conversation_id=conversation.id, role="customer", text="?", latency_ms=latency
        )
        message.created_at = at(minutes)
        store.add_prediction(session, message_id=message.id, intent=intent, confidence=0.8)
    late = store.add_message(
        session, conversation_id=conversation.id, role="customer", text="?", latency_ms=100
    )
    late.created_at = at(70)
    store.add_prediction(session, message_id=late.id, intent="track", confidence=0.8)
    for minutes, first_token, action in [
        (1, 50, "accepted"),
        (11, 150, "edited"),
        (21, 250, "rejected"),
        (71, 90, None),
    ]:
        suggestion = draft(session, conversation, late, first_token_ms=first_token)
        suggestion.created_at = at(minutes)
        if action:
            store.record_action(session, suggestion_id=suggestion.id, action=action)
    passage = store.add_suggestion(
        session, conversation_id=conversation.id, message_id=late.id, kind="passage", text="faq", sources=[]
    )
    passage.created_at = at(72)
    session.flush()


def test_intent_mix(session):
    make_analytics_set(session)
    assert store.intent_mix(session) == [("refund", 3), ("track", 2)]
    assert store.intent_mix(session, since=at(15)) == [("refund", 2), ("track", 1)]


def test_acceptance_rate(session):
    make_analytics_set(session)
    drafts = store.acceptance_rate(session, kind="draft")
    assert drafts == {
        "total": 4,
        "shown": 1,
        "accepted": 1,
        "edited": 1,
        "rejected": 1,
        "acted": 3,
        "rate": pytest.approx(2 / 3),
        "rate_of_total": 0.5,
    }
    assert store.acceptance_rate(session)["shown"] == 2
    nothing = store.acceptance_rate(session, since=at(500))
    assert (nothing["total"], nothing["rate"], nothing["rate_of_total"]) == (0, 0.0, 0.0)


def test_latency_percentiles_per_hour(session):
    make_analytics_set(session)
    assert store.latency_percentiles(session) == [
        {"bucket_start": T0, "count": 4, "p50_ms": 25.0, "p99_ms": pytest.approx(39.7)},
        {"bucket_start": at(60), "count": 1, "p50_ms": 100.0, "p99_ms": 100.0},
    ]
    first_tokens = store.latency_percentiles(session, kind="draft", bucket="day", since=at(5))
    assert first_tokens == [{"bucket_start": at(-9 * 60), "count": 3, "p50_ms": 150.0, "p99_ms": 248.0}]


def test_naive_datetimes_are_refused(session):
    with pytest.raises(StatementError, match="naive datetime"):
        store.intent_mix(session, since=datetime(2026, 1, 1))
