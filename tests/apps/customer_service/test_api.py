"""The customer-service API over loopback HTTP: the suite (`verticals serve`) with the shipped
adapters, the demo knowledge base and a fresh SQLite file (the `suite_url` fixture, conftest.py).

.venv/bin/python -m pytest tests/apps/customer_service/test_api.py -q
"""

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from apps.customer_service.grounded_replies import snapped_to_passages
from apps.customer_service.knowledge_base import DEMO_KB, read_passages
from apps.customer_service.schemas import AnalyticsOut, ConversationOut, ParseOut, PostedMessageOut

DEMO_PASSAGES = {p.source_id: p for p in read_passages(DEMO_KB)}  # what the suite serves by default
MESSAGE = "My card ending in 4321 has not arrived yet, I ordered it on 3 March 2024"


@pytest.fixture(scope="module")
def http(suite_url):
    with httpx.Client(base_url=suite_url, timeout=120) as client:
        yield client


def error_message(response: httpx.Response) -> str:
    return response.json()["error"]["message"]


def new_conversation(http) -> int:
    response = http.post("/cs/conversations", json={"customer_ref": "cust-1", "customer_name": "Ada"})
    assert response.status_code == 201
    return response.json()["id"]


def test_parse_is_shaped_like_rasa(http):
    response = http.post("/cs/parse", json={"text": MESSAGE})
    assert response.status_code == 200
    parse = ParseOut.model_validate(response.json())
    confidences = [i.confidence for i in parse.intent_ranking]
    assert parse.intent.name == parse.intent_ranking[0].name and confidences == sorted(
        confidences, reverse=True
    )
    assert len(parse.intent_ranking) == 10
    for entity in parse.entities:
        assert 0 <= entity.start < entity.end <= len(MESSAGE)
    assert any(e.entity == "card_last_four" and e.value == "4321" for e in parse.entities)


@pytest.mark.parametrize(
    ("body", "field"), [({"text": "   "}, "text"), ({}, "text"), ({"text": "x" * 4001}, "text")]
)
def test_a_bad_parse_body_is_a_422_that_names_the_field(http, body, field):
    response = http.post("/cs/parse", json=body)
    assert response.status_code == 422
    assert field in error_message(response)


def test_a_customer_message_is_stored_with_its_parse_passages_and_suggestions(http):
    conversation = new_conversation(http)
    response = http.post(
        f"/cs/conversations/{conversation}/messages", json={"role": "customer", "text": MESSAGE}
    )
    assert response.status_code == 201
    posted = PostedMessageOut.model_validate(response.json())
    assert posted.parse is not None and posted.latency_ms > 0
    assert len(posted.passages) == 3 and all(p.source_id for p in posted.passages)
    assert [s.sources for s in posted.suggestions] == [[p.source_id] for p in posted.passages[:2]]
    assert posted.state.slots.get("card_last_four") == "4321"
    stored = ConversationOut.model_validate(http.get(f"/cs/conversations/{conversation}").json())
    assert [m.text for m in stored.messages] == [MESSAGE]
    assert stored.messages[0].parse.intent == posted.parse.intent
    assert stored.messages[0].latency_ms == posted.latency_ms
    assert stored.customer_ref == "cust-1" and stored.status == "open"


def test_an_agent_message_is_stored_without_a_parse(http):
    conversation = new_conversation(http)
    response = http.post(
        f"/cs/conversations/{conversation}/messages", json={"role": "agent", "text": "Hello!"}
    )
    assert response.status_code == 201
    assert response.json()["parse"] is None and response.json()["suggestions"] == []


def test_bad_messages_get_4xx_and_lose_nothing(http):
    conversation = new_conversation(http)
    http.post(f"/cs/conversations/{conversation}/messages", json={"role": "customer", "text": MESSAGE})
    bad_role = http.post(f"/cs/conversations/{conversation}/messages", json={"role": "bot", "text": "hi"})
    assert bad_role.status_code == 422 and "role" in error_message(bad_role)
    not_json = http.post(
        f"/cs/conversations/{conversation}/messages",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 422 and "JSON" in error_message(not_json)
    missing = http.post("/cs/conversations/999999/messages", json={"role": "customer", "text": "hi"})
    assert missing.status_code == 404 and "999999" in error_message(missing)
    assert len(http.get(f"/cs/conversations/{conversation}").json()["messages"]) == 1


def test_the_draft_streams_and_is_stored_with_its_latency(http):
    conversation = new_conversation(http)
    http.post(f"/cs/conversations/{conversation}/messages", json={"role": "customer", "text": MESSAGE})
    events = []
    with http.stream("GET", f"/cs/conversations/{conversation}/draft") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "delta" in kinds
    done = events[-1][1]
    assert done["id"] == events[0][1]["suggestion_id"] and done["kind"] == "draft"
    streamed = "".join(d["text"] for k, d in events if k == "delta").strip()
    shown = [DEMO_PASSAGES[source] for source in events[0][1]["sources"]]
    assert done["text"] == snapped_to_passages(streamed, shown, list(DEMO_PASSAGES.values()))
    assert 0 < done["first_token_ms"] <= done["total_ms"]
    stored = http.get(f"/cs/conversations/{conversation}").json()["suggestions"]
    assert any(s["id"] == done["id"] and s["first_token_ms"] == done["first_token_ms"] for s in stored)


def test_a_draft_needs_a_customer_message(http):
    conversation = new_conversation(http)
    response = http.get(f"/cs/conversations/{conversation}/draft")
    assert response.status_code == 400 and "no customer message" in error_message(response)
    assert http.get("/cs/conversations/999999/draft").status_code == 404


def test_feedback_records_what_the_agent_did(http):
    conversation = new_conversation(http)
    posted = http.post(
        f"/cs/conversations/{conversation}/messages", json={"role": "customer", "text": MESSAGE}
    )
    first, second = (s["id"] for s in posted.json()["suggestions"])
    accepted = http.post(f"/cs/suggestions/{first}/feedback", json={"action": "accepted"})
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    no_text = http.post(f"/cs/suggestions/{second}/feedback", json={"action": "edited"})
    assert no_text.status_code == 400 and "final_text" in error_message(no_text)
    edited = http.post(f"/cs/suggestions/{second}/feedback", json={"action": "edited", "final_text": "Sure."})
    assert edited.json()["status"] == "edited"
    assert http.post("/cs/suggestions/999999/feedback", json={"action": "rejected"}).status_code == 404
    bad = http.post(f"/cs/suggestions/{first}/feedback", json={"action": "liked"})
    assert bad.status_code == 422 and "action" in error_message(bad)


def test_a_handoff_summarises_the_conversation_for_a_person(http):
    conversation = new_conversation(http)
    posted = http.post(
        f"/cs/conversations/{conversation}/messages", json={"role": "customer", "text": MESSAGE}
    )
    response = http.post(f"/cs/conversations/{conversation}/handoff")
    assert response.status_code == 200
    summary = response.json()["summary"]
    assert f"Conversation {conversation}" in summary and "card_last_four=4321" in summary
    assert posted.json()["parse"]["intent"]["name"] in summary
    stored = http.get(f"/cs/conversations/{conversation}").json()
    assert stored["status"] == "handed_off" and stored["handoff_summary"] == summary


def test_the_knowledge_base_search_returns_passages_with_source_ids(http):
    response = http.get("/cs/kb/search", params={"q": "someone stole my card", "k": 2})
    assert response.status_code == 200
    passages = response.json()["passages"]
    assert len(passages) == 2 and all(p["source_id"] and p["text"] for p in passages)
    assert http.get("/cs/kb/search", params={"q": "  "}).status_code == 400
    assert http.get("/cs/kb/search", params={"q": "card", "k": 0}).status_code == 422


def test_conversations_list_newest_first_and_analytics_count_them(http):
    first, second = new_conversation(http), new_conversation(http)
    http.post(f"/cs/conversations/{second}/messages", json={"role": "customer", "text": MESSAGE})
    listed = [c["id"] for c in http.get("/cs/conversations").json()]
    assert listed.index(second) < listed.index(first)
    analytics = AnalyticsOut.model_validate(http.get("/cs/analytics").json())
    assert sum(c.count for c in analytics.intent_mix) >= 1
    assert analytics.message_latency and analytics.message_latency[-1].p50_ms > 0
    assert http.post(f"/cs/conversations/{first}/csat", json={"score": 6}).status_code == 422
    assert http.post(f"/cs/conversations/{first}/csat", json={"score": 5}).json()["csat"] == 5


def suite_workers(name: str) -> list[int]:
    """Pids of the `name` worker processes of a suite this test session started."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            cmdline = (status.parent / "cmdline").read_bytes().split(b"\0")
            parent = int(status.read_text().split("PPid:")[1].split()[0])
            grandparent = int(Path(f"/proc/{parent}/status").read_text().split("PPid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue  # exited while being read
        if cmdline[-2:] == [name.encode(), b""] and grandparent == os.getpid():
            pids.append(int(status.parent.name))
    return pids


def test_a_model_worker_that_dies_costs_one_503_and_is_restarted(http):
    if os.environ.get("VERTICALS_TEST_SUITE_URL"):
        pytest.skip("the suite was started elsewhere: its workers are not this session's to kill")
    [pid] = suite_workers("cs-intents")
    os.kill(pid, signal.SIGKILL)
    conversation = new_conversation(http)
    send = {"role": "customer", "text": "I lost my card"}
    response = http.post(f"/cs/conversations/{conversation}/messages", json=send)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "cs-intents worker exited" in error_message(response)
    assert http.post(f"/cs/conversations/{conversation}/messages", json=send).status_code == 201
    assert suite_workers("cs-intents") not in ([], [pid])
    messages = http.get(f"/cs/conversations/{conversation}").json()["messages"]
    assert [m["text"] for m in messages] == ["I lost my card"]  # the failed one stored nothing
