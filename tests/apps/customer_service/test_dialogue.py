"""Dialogue state, draft prompts and handoff summaries: plain data, no model.

.venv/bin/python -m pytest tests/apps/customer_service/test_dialogue.py -q
"""

from dataclasses import dataclass

from apps.customer_service.dialogue import DialogueState, draft_messages, handoff_summary, readable, replay


@dataclass
class Turn:
    role: str
    text: str


@dataclass
class Source:
    source_id: str
    title: str
    text: str


def test_a_confident_intent_replaces_the_active_one():
    state = DialogueState().advance(intent="card_arrival", confident=True, entities=[])
    state = state.advance(intent="pin_blocked", confident=True, entities=[])
    assert (state.active_intent, state.carried_intent) == ("pin_blocked", False)


def test_an_unsure_message_carries_the_earlier_intent_over():
    state = replay([("card_arrival", True, []), ("exchange_rate", False, [])])
    assert (state.active_intent, state.carried_intent, state.needs_human) == ("card_arrival", True, False)


def test_an_unsure_first_message_needs_a_human():
    state = replay([("exchange_rate", False, [])])
    assert state.active_intent is None and state.needs_human


def test_key_fields_accumulate_and_invalid_ones_are_not_kept():
    state = replay(
        [
            ("transfer", True, [{"entity": "iban", "value": "GB00", "valid": False}]),
            ("transfer", True, [{"entity": "amount", "value": {"amount": "12.50", "currency": "GBP"}}]),
            ("transfer", True, [{"entity": "amount", "value": {"amount": "20", "currency": "GBP"}}]),
        ]
    )
    assert state.slots == {"amount": {"amount": "20", "currency": "GBP"}}


def test_the_draft_prompt_cites_passages_and_keeps_the_last_turns():
    turns = [
        Turn("customer", f"message {i}") if i % 2 == 0 else Turn("agent", f"reply {i}") for i in range(10)
    ]
    state = DialogueState(active_intent="card_lost", slots={"card_last_four": "4321"})
    passages = [Source("card-lost", "Lost card", "Freeze it in the app.")]
    messages = draft_messages(turns, passages, state, bank="Test Bank", context_turns=4)
    system = messages[0]["content"]
    assert "[card-lost] Lost card: Freeze it in the app." in system
    assert "card_lost" in system and "card_last_four=4321" in system
    assert messages[1:] == [
        {"role": "user", "content": "message 6"},
        {"role": "assistant", "content": "reply 7"},
        {"role": "user", "content": "message 8"},
        {"role": "assistant", "content": "reply 9"},
    ]


def test_the_handoff_summary_says_what_a_person_needs():
    turns = [
        Turn("customer", "my card is gone"),
        Turn("agent", "sorry"),
        Turn("customer", "what about crypto?"),
    ]
    state = replay(
        [("card_lost", True, [{"entity": "card_last_four", "value": "4321"}]), ("crypto", False, [])]
    )
    summary = handoff_summary(
        conversation_id=7,
        turns=turns,
        state=state,
        intents=[("card_lost", 0.93, False), ("crypto", 0.21, True)],
        sources_shown=["card-lost", "card-lost", "freeze"],
        suggestion_counts={"accepted": 1, "shown": 2},
    )
    assert summary.startswith("Conversation 7: 3 messages, 2 from the customer.")
    assert "Intent: card_lost (carried over from an earlier message)." in summary
    assert "crypto (0.21)" in summary
    assert "card_last_four=4321" in summary
    assert 'Last customer message: "what about crypto?"' in summary
    assert "[card-lost], [freeze]" in summary


def test_a_drafted_piece_loses_control_characters_and_keeps_lines_and_letters():
    assert readable("Thanks\x1f, I\x00 can\x7f help\x9b.\n\tSee [faq-1]. Ça coûte 5 €") == (
        "Thanks, I can help.\n\tSee [faq-1]. Ça coûte 5 €"
    )
    assert readable("\x1f") == ""
