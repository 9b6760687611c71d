"""The console's HTTP client against the real suite on loopback (`verticals serve` in a subprocess),
plus its SSE framing and its errors, which need no server.

.venv/bin/python -m pytest tests/apps/customer_service/test_console_client.py -q
.venv/bin/python -m pytest tests/apps/customer_service/test_console_client.py -q -m "not slow"  # no server
"""

import subprocess
import sys

import pytest

from apps.customer_service.console_client import ApiError, ApiUnreachable, ConsoleClient, parse_sse
from apps.customer_service.grounded_replies import snapped_to_passages
from apps.customer_service.knowledge_base import DEMO_KB, read_passages

from .conftest import ROOT, free_port

LOST_CARD = "I lost my card yesterday, it ends in 4321"


@pytest.fixture(scope="module")
def client(suite_url):
    with ConsoleClient(suite_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def lost_card(client):
    """A conversation with one customer message, and what posting it returned."""
    conversation = client.create_conversation(customer_name="Ada Lovelace")
    return conversation.id, client.post_message(conversation.id, role="customer", text=LOST_CARD)


# ----------------------------------------------------------------------------- without a server


def test_sse_events_are_split_on_blank_lines_with_their_json_data():
    lines = ["event: start", 'data: {"suggestion_id": 7, "sources": ["faq-1"]}', "", "event: delta"]
    lines += [
        'data: {"text":',
        'data: "Hello"}',
        "",
        ": keep-alive comment",
        "event: done",
        'data: {"id": 7}',
        "",
    ]
    assert list(parse_sse(lines)) == [
        ("start", {"suggestion_id": 7, "sources": ["faq-1"]}),
        ("delta", {"text": "Hello"}),  # two data lines, one JSON document
        ("done", {"id": 7}),
    ]


def test_sse_delivers_an_event_cut_off_before_its_blank_line():
    assert list(parse_sse(["event: error", 'data: {"message": "engine stopped"}'])) == [
        ("error", {"message": "engine stopped"})
    ]


def test_an_unreachable_suite_is_an_error_that_says_how_to_start_it():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with ConsoleClient(url, timeout=5) as client, pytest.raises(ApiUnreachable) as raised:
        client.list_conversations()
    assert raised.value.status is None
    assert raised.value.message == f"cannot reach the suite at {url}: start it with `make run`"


def test_the_console_imports_no_torch():
    check = "import sys, apps.customer_service.ui; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# ----------------------------------------------------------------------------- against the suite


@pytest.mark.slow
def test_a_new_conversation_is_listed(client):
    created = client.create_conversation(customer_ref="crm-42")
    listed = {summary.id: summary for summary in client.list_conversations(limit=500)}
    assert listed[created.id].customer_ref == "crm-42" and listed[created.id].messages == 0


@pytest.mark.slow
def test_parse_is_shaped_like_rasa(client):
    parse = client.parse(LOST_CARD)
    confidences = [option.confidence for option in parse.intent_ranking]
    assert parse.text == LOST_CARD and parse.intent.name == parse.intent_ranking[0].name
    assert confidences == sorted(confidences, reverse=True) and 0 <= parse.intent.confidence <= 1
    assert all(LOST_CARD[e.start : e.end] for e in parse.entities)


@pytest.mark.slow
def test_a_customer_message_comes_back_parsed_with_passages_and_suggestions(lost_card):
    _, posted = lost_card
    assert posted.message.role == "customer" and posted.message.text == LOST_CARD
    assert posted.parse is not None and posted.parse.intent.name and posted.latency_ms > 0
    assert posted.passages and all(passage.source_id for passage in posted.passages)
    assert posted.suggestions and {s.kind for s in posted.suggestions} <= {"passage", "draft"}


@pytest.mark.slow
def test_the_conversation_keeps_the_message_and_its_parse(client, lost_card):
    conversation_id, posted = lost_card
    conversation = client.get_conversation(conversation_id)
    assert conversation.customer_name == "Ada Lovelace"
    assert [m.id for m in conversation.messages][:1] == [posted.message.id]
    assert conversation.messages[0].parse.intent.name == posted.parse.intent.name


@pytest.mark.slow
def test_the_draft_streams_start_then_deltas_then_the_finished_suggestion(client, lost_card):
    conversation_id, _ = lost_card
    events = list(client.stream_draft(conversation_id))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) <= {"delta"}, kinds
    start, done = events[0][1], events[-1][1]
    assert done["id"] == start["suggestion_id"] and done["kind"] == "draft"
    streamed = "".join(data["text"] for kind, data in events if kind == "delta").strip()
    demo = {p.source_id: p for p in read_passages(DEMO_KB)}  # the knowledge base the suite serves
    shown = [demo[source] for source in start["sources"]]
    assert done["text"] == snapped_to_passages(streamed, shown, list(demo.values()))  # as stored
    assert done["first_token_ms"] is None or done["first_token_ms"] <= done["total_ms"]


@pytest.mark.slow
def test_feedback_records_the_agents_action(client, lost_card):
    _, posted = lost_card
    suggestion = posted.suggestions[0]
    assert (
        client.feedback(suggestion.id, action="edited", final_text="Your card is frozen.").status == "edited"
    )


@pytest.mark.slow
def test_handoff_returns_the_summary_the_conversation_then_keeps(client, lost_card):
    conversation_id, _ = lost_card
    handed = client.handoff(conversation_id)
    assert handed.conversation_id == conversation_id and handed.summary
    assert client.get_conversation(conversation_id).handoff_summary == handed.summary


@pytest.mark.slow
def test_the_knowledge_base_answers_with_source_ids(client):
    found = client.search("my card was stolen", k=2)
    assert found.query == "my card was stolen" and 1 <= len(found.passages) <= 2
    assert all(passage.source_id and passage.text for passage in found.passages)


@pytest.mark.slow
def test_analytics_count_the_parsed_messages_and_shown_suggestions(client, lost_card):
    _, posted = lost_card
    analytics = client.analytics()
    assert posted.parse.intent.name in {row.name for row in analytics.intent_mix}
    assert sum(analytics.suggestions.get(k, 0) for k in ("shown", "accepted", "edited", "rejected")) >= 1
    assert analytics.message_latency and analytics.message_latency[-1].p50_ms > 0


@pytest.mark.slow
def test_an_unknown_conversation_is_a_404_with_the_apis_message(client):
    with pytest.raises(ApiError) as raised:
        client.get_conversation(987_654_321)
    message = raised.value.message
    assert raised.value.status == 404 and "failed with HTTP" not in message and "Traceback" not in message


@pytest.mark.slow
def test_an_empty_message_is_refused_with_the_reason(client, lost_card):
    conversation_id, _ = lost_card
    with pytest.raises(ApiError) as raised:
        client.post_message(conversation_id, role="customer", text="   ")
    assert raised.value.status == 422 and "text is empty" in raised.value.message
