"""Multi-turn context: the dialogue state carried over turns, the prompt a drafted reply is
written from, and the summary handed to a person taking over.

    state = DialogueState()
    state = state.advance(intent="card_arrival", confident=True, entities=[...])
    state = state.advance(intent="pin_blocked", confident=False, entities=[])   # "yes, that one"
    state.active_intent, state.carried_intent        # "card_arrival", True
    messages = draft_messages(turns, passages, state, bank="Harbour & Pine Bank")
    readable("Thanks\x1f, I can help")       # a drafted piece as the agent sees it: "Thanks, I can help"

A message whose intent is not confident ("In checking.", "yes please") keeps the intent in force
from earlier turns instead of replacing it; key fields accumulate, a newer value replacing an
older one of the same kind. This module is plain data and text: no model, no SQL, no HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

DEFAULT_CONTEXT_TURNS = 6  # the last turns that go into a draft prompt


class Turn(Protocol):
    role: str  # "customer" or "agent"
    text: str


class Source(Protocol):
    source_id: str
    title: str
    text: str


@dataclass(frozen=True)
class DialogueState:
    active_intent: str | None = None
    carried_intent: bool = False  # the intent came from an earlier turn
    slots: dict[str, Any] = field(default_factory=dict)  # entity type -> latest valid value
    needs_human: bool = False  # a message was out of scope with no intent to fall back on

    def advance(
        self, *, intent: str | None, confident: bool, entities: Sequence[dict[str, Any]]
    ) -> DialogueState:
        """The state after one customer message: its intent (if confident) and its entities."""
        slots = dict(self.slots)
        for entity in entities:
            if entity.get("valid", True):
                slots[entity["entity"]] = entity["value"]
        if confident and intent is not None:
            return replace(self, active_intent=intent, carried_intent=False, slots=slots, needs_human=False)
        if self.active_intent is not None:
            return replace(self, carried_intent=True, slots=slots)
        return replace(self, carried_intent=False, slots=slots, needs_human=True)


def replay(parses: Sequence[tuple[str | None, bool, Sequence[dict[str, Any]]]]) -> DialogueState:
    """The state after a conversation's customer messages, each as (intent, confident, entities)."""
    state = DialogueState()
    for intent, confident, entities in parses:
        state = state.advance(intent=intent, confident=confident, entities=entities)
    return state


def draft_messages(
    turns: Sequence[Turn],
    passages: Sequence[Source],
    state: DialogueState,
    *,
    bank: str,
    context_turns: int = DEFAULT_CONTEXT_TURNS,
) -> list[dict[str, str]]:
    """Chat messages for the reply model: instructions with the passages (each under its source
    id) and the state, then the last `context_turns` turns (customer as user, agent as assistant)."""
    lines = [
        f"You are a customer-service agent of {bank}. Reply to the customer's last message in one or "
        "two short sentences. Use only the facts in the passages below and cite the passage you use "
        "by its id in square brackets. If no passage answers, say a colleague will follow up."
    ]
    lines += [
        f"[{p.source_id}] {p.title}: {p.text}" if p.title else f"[{p.source_id}] {p.text}" for p in passages
    ]
    if state.active_intent:
        lines.append(f"Customer intent: {state.active_intent}.")
    if state.slots:
        lines.append(
            "Known details: " + "; ".join(f"{k}={_plain(v)}" for k, v in sorted(state.slots.items()))
        )
    messages = [{"role": "system", "content": "\n".join(lines)}]
    for turn in list(turns)[-context_turns:]:
        messages.append({"role": "user" if turn.role == "customer" else "assistant", "content": turn.text})
    return messages


CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1, but tab and newline


def readable(text: str) -> str:
    """A piece of a drafted reply as the agent reads it: without the control characters a small
    model sometimes writes (a byte-level tokenizer can emit any byte)."""
    return CONTROL_CHARACTERS.sub("", text)


def handoff_summary(
    *,
    conversation_id: int,
    turns: Sequence[Turn],
    state: DialogueState,
    intents: Sequence[tuple[str, float, bool]],
    sources_shown: Sequence[str],
    suggestion_counts: dict[str, int],
) -> str:
    """What a person taking over needs, in a few lines: the intent and how sure the suite is,
    the key fields, why it was handed over, the last customer message, what was already offered.

    `intents`: (name, confidence, out_of_scope) per customer message, in order.
    """
    customer_turns = [t.text for t in turns if t.role == "customer"]
    lines = [
        f"Conversation {conversation_id}: {len(turns)} messages, {len(customer_turns)} from the customer."
    ]
    if state.active_intent:
        carried = " (carried over from an earlier message)" if state.carried_intent else ""
        lines.append(f"Intent: {state.active_intent}{carried}.")
    if earlier := sorted({name for name, _, oos in intents if not oos} - {state.active_intent}):
        lines.append("Earlier intents: " + ", ".join(earlier) + ".")
    unsure = [(n, c) for n, c, oos in intents if oos]
    if unsure:
        lines.append(
            f"Out of scope for the assistant: {len(unsure)} message(s), best guesses "
            + ", ".join(f"{n} ({c:.2f})" for n, c in unsure[-3:])
            + "."
        )
    if state.slots:
        lines.append(
            "Key fields: " + "; ".join(f"{k}={_plain(v)}" for k, v in sorted(state.slots.items())) + "."
        )
    if customer_turns:
        lines.append(f'Last customer message: "{customer_turns[-1]}"')
    if sources_shown:
        lines.append(
            "Passages already shown: " + ", ".join(f"[{s}]" for s in dict.fromkeys(sources_shown)) + "."
        )
    if suggestion_counts:
        lines.append(
            "Suggestions: " + ", ".join(f"{n} {k}" for k, n in sorted(suggestion_counts.items())) + "."
        )
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(str(v) for v in value.values())
    return str(value)
