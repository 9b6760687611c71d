"""The agent console of the customer-service app: a Streamlit page in the manner of Chatwoot.

    streamlit run apps/customer_service/ui.py -- --api http://127.0.0.1:8000
    verticals cs console --api http://127.0.0.1:8000        # the same, through the suite's command
    make run                                                 # the API and this console together

Sidebar: the conversations with their status, and a button for a new one. Middle: the chat, a
reply box and the chat input (a toggle lets one person role-play the customer and the agent).
Right: what the suite made of the last customer message (intent, confidence, ranking, key fields
with the invalid ones flagged, knowledge-base passages with their source ids) and the suggested
replies, with a streamed model draft and Accept / Edit / Reject. A second page shows analytics.

It is only a client: it talks to the `/cs` API over HTTP (`console_client.py`), imports no torch
and keeps nothing but view state (which conversation is open, the reply being edited). The API
URL comes from `--api`, else $VERTICALS_API_URL, else http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import streamlit as st

from apps.customer_service.console_client import DEFAULT_URL, ApiError, ApiUnreachable, ConsoleClient
from apps.customer_service.schemas import (
    ConversationOut,
    ConversationSummaryOut,
    MessageOut,
    ParseOut,
    PassageOut,
    StateOut,
    SuggestionOut,
)
from apps.customer_service.ui_analytics import render_analytics

FINISHED = ("accepted", "edited", "rejected")  # suggestion statuses after the agent's feedback
STATUS_COLORS = {
    "open": "green",
    "pending": "orange",
    "handed_off": "red",
    "resolved": "gray",
    "closed": "gray",
}
CHAT_HEIGHT, PANEL_HEIGHT = 420, 700  # px: the chat and the right panel scroll inside these
SHOWN_WITHOUT_TURN = 4  # after a reload, the last N suggestions of the conversation are shown
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$<>:])")


def api_url(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(prog="ui.py", add_help=False)
    parser.add_argument("--api", default=os.environ.get("VERTICALS_API_URL", DEFAULT_URL))
    return parser.parse_known_args(argv)[0].api


@st.cache_resource
def client_for(url: str) -> ConsoleClient:
    return ConsoleClient(url)


def main() -> None:
    st.set_page_config(page_title="Agent console", page_icon=":material/support_agent:", layout="wide")
    client = client_for(api_url(sys.argv[1:]))
    console = st.Page(
        lambda: render_console(client), title="Console", icon=":material/forum:", url_path="console"
    )
    analytics = st.Page(
        lambda: render_analytics(client),
        title="Analytics",
        icon=":material/monitoring:",
        url_path="analytics",
    )
    pages = [console, analytics]
    st.navigation(pages).run()


# ----------------------------------------------------------------------------- the console page


def render_console(client: ConsoleClient) -> None:
    state = st.session_state
    state.setdefault("flash", [])
    as_agent = state.get("as_agent", False)
    typed = st.chat_input(f"Type as the {'agent' if as_agent else 'customer'}…", key="chat")
    if typed:  # before the sidebar, so its list already shows the new message
        _post_typed(client, text=typed, role="agent" if as_agent else "customer")
    summaries = _call(client.list_conversations)
    render_sidebar(client, summaries)
    if summaries is None:
        st.stop()
    for text in state.flash:
        st.error(text)
    state.flash = []
    cid = state.get("cid")
    if cid is None:
        st.title("Agent console")
        st.info("Open a conversation in the sidebar, start a new one, or just type a customer message below.")
        st.toggle("Speak as the agent", key="as_agent", help="off: what you type is the customer's message")
        return
    conversation = _call(client.get_conversation, cid)
    if conversation is None:
        state.cid = None
        return
    chat, side = st.columns([3, 2], gap="large")
    # The panel first: a streamed draft must land in the reply box, which is drawn after it.
    with side, st.container(height=PANEL_HEIGHT, border=False, autoscroll=False, key="insights"):
        render_insights(client, conversation)
    with chat:
        render_chat(client, conversation)


def render_sidebar(client: ConsoleClient, summaries: list[ConversationSummaryOut] | None) -> None:
    with st.sidebar:
        st.caption(f"Suite: {client.base_url}")
        with st.form("new-conversation", clear_on_submit=True, border=False):
            st.text_input("Customer name", key="new_name", placeholder="optional")
            st.form_submit_button(
                "New conversation",
                icon=":material/add_comment:",
                type="primary",
                on_click=_create,
                args=(client,),
            )
        st.button("Refresh", icon=":material/refresh:", type="tertiary")
        if summaries is None:
            st.caption("The conversations show once the suite answers.")
        elif not summaries:
            st.caption("No conversations yet.")
        for summary in summaries or []:
            color = STATUS_COLORS.get(summary.status, "blue")
            preview = " ".join((summary.last_message or "no messages yet").split())
            preview = preview if len(preview) <= 48 else preview[:47] + "…"
            who = _plain(summary.customer_ref or "")
            label = f"**#{summary.id}** {who} :{color}-badge[{summary.status}]  \n{_plain(preview)}"
            selected = summary.id == st.session_state.get("cid")
            st.button(
                label,
                key=f"open-{summary.id}",
                type="primary" if selected else "secondary",
                width="stretch",
                on_click=_select,
                args=(summary.id,),
            )


def render_chat(client: ConsoleClient, conversation: ConversationOut) -> None:
    cid = conversation.id
    head, action = st.columns([4, 1], vertical_alignment="center")
    color = STATUS_COLORS.get(conversation.status, "blue")
    who = conversation.customer_name or conversation.customer_ref or "customer"
    head.subheader(f"#{cid} · {_plain(who)} :{color}-badge[{conversation.status}]")
    action.button(
        "Hand off",
        icon=":material/person_raised_hand:",
        key=f"handoff-{cid}",
        on_click=_handoff,
        args=(client, cid),
    )
    with st.container(height=CHAT_HEIGHT, key="messages"):
        if not conversation.messages:
            st.caption("No messages yet: type the customer's first message below.")
        for message in conversation.messages:
            render_message(message)
    render_reply_box(client, cid)
    st.toggle(
        "Speak as the agent", key="as_agent", help="off: what you type is the customer's message (role-play)"
    )


def render_message(message: MessageOut) -> None:
    customer = message.role == "customer"
    avatar = ":material/person:" if customer else ":material/support_agent:"
    with st.chat_message(message.role, avatar=avatar):
        st.markdown(_plain(message.text))
        details = [message.role, message.created_at.strftime("%H:%M:%S")]
        if message.latency_ms is not None:
            details.append(f"{message.latency_ms:.0f} ms")
        if message.parse is not None:
            details.append(f"{message.parse.intent.name} ({message.parse.intent.confidence:.2f})")
        st.caption(_plain(" · ".join(details)))


def render_reply_box(client: ConsoleClient, cid: int) -> None:
    source = st.session_state.get(f"reply-source-{cid}")
    with st.container(border=True, key="reply-box"):
        st.text_area(
            "Reply to the customer",
            key=f"reply-{cid}",
            height=100,
            placeholder="Edit a suggestion or write a reply",
        )
        if source:
            st.caption(
                f"From suggestion #{source[0]}: sent unchanged it counts as accepted, changed as edited."
            )
        send, clear = st.columns(2)
        send.button(
            "Send reply", icon=":material/send:", key=f"send-{cid}", on_click=_send_reply, args=(client, cid)
        )
        clear.button("Clear", key=f"clear-{cid}", on_click=_clear_reply, args=(cid,))


# ----------------------------------------------------------------------------- the right-hand panel


def render_insights(client: ConsoleClient, conversation: ConversationOut) -> None:
    cid = conversation.id
    last = _last_customer_message(conversation)
    turn = st.session_state.get(f"turn-{cid}", {})
    if conversation.handoff_summary:
        st.warning(
            f"**Handed to a person.** {_plain(conversation.handoff_summary)}",
            icon=":material/person_raised_hand:",
        )
    if turn.get("latency_ms") is not None:
        st.caption(f"Last message handled in {turn['latency_ms']:.0f} ms")
    render_parse(last.parse if last else None, conversation.state)
    render_passages(_passages(client, cid, last))
    render_suggestions(client, conversation, turn)


def render_parse(parse: ParseOut | None, state: StateOut) -> None:
    st.markdown("##### Intent")
    if parse is None:
        st.caption("No customer message yet.")
        return
    with st.container(key="intent-panel"):
        confidence = parse.intent.confidence
        color = "green" if confidence >= 0.7 else "orange" if confidence >= 0.4 else "red"
        st.markdown(f"**{_plain(parse.intent.name)}** :{color}-badge[confidence {confidence:.2f}]")
        if parse.out_of_scope or state.needs_human:
            st.warning("Out of scope → hand to a person", icon=":material/report:")
        if state.carried_intent and state.active_intent:
            st.caption(f"Intent carried from an earlier turn: {_plain(state.active_intent)}")
        for option in parse.intent_ranking[:3]:
            st.progress(
                min(max(option.confidence, 0.0), 1.0), text=f"{_plain(option.name)} · {option.confidence:.2f}"
            )
    st.markdown("##### Key fields")
    if not parse.entities and not state.slots:
        st.caption("None found.")
    for entity in parse.entities:
        text = f"`{entity.entity}` **{_plain(str(entity.value))}**"
        if not entity.valid:
            text += f" :red-badge[:material/error: invalid] {_plain(entity.reason or '')}"
        st.markdown(text)
    if state.slots:
        collected = ", ".join(f"{key} = {value}" for key, value in state.slots.items())
        st.caption(f"Collected so far: {_plain(collected)}")


def render_passages(passages: list[PassageOut]) -> None:
    st.markdown("##### Knowledge base")
    if not passages:
        st.caption("No passages.")
    for passage in passages:  # folded: source ids and titles show, the text on demand
        label = f":blue-badge[{_plain(passage.source_id)}] {_plain(passage.title)} · {passage.score:.2f}"
        with st.expander(label):
            st.markdown(_plain(passage.text))


def render_suggestions(client: ConsoleClient, conversation: ConversationOut, turn: dict) -> None:
    cid = conversation.id
    st.markdown("##### Suggested replies")
    suggestions = _current_suggestions(conversation, turn.get("first_suggestion_id"))
    if st.button("Draft reply", icon=":material/edit_note:", key=f"draft-{cid}", type="primary"):
        drafted = stream_draft(client, cid)
        if drafted is not None:
            suggestions.append(drafted)
    if not suggestions:
        st.caption("No suggestions yet.")
    for suggestion in reversed(suggestions):  # newest first: a fresh draft sits under its button
        render_suggestion(client, cid, suggestion)


def stream_draft(client: ConsoleClient, cid: int) -> SuggestionOut | None:
    """The model's draft, drawn piece by piece as it streams. When it is done the streaming box
    gives way to the draft's card (returned) and the text is put in the reply box."""
    slot = st.empty()
    with slot.container(border=True, key="draft-stream"):
        header, body = st.empty(), st.empty()
        header.caption("Drafting…")
        text, done = "", None
        try:
            for event, data in client.stream_draft(cid):
                if event == "start":
                    header.caption(
                        f"Drafting from {', '.join(data.get('sources', [])) or 'the conversation'}…"
                    )
                elif event == "delta":
                    text += data.get("text", "")
                    body.markdown(_plain(text) + " ▌")
                elif event == "done":
                    done = SuggestionOut.model_validate(data)
                elif event == "error":
                    st.error(f"The draft failed: {data.get('message', 'no reason given')}")
        except ApiError as error:
            _show(error)
    if done is None:
        body.markdown(_plain(text))
        return None
    slot.empty()
    _fill_reply(cid, done)
    return done


def render_suggestion(client: ConsoleClient, cid: int, suggestion: SuggestionOut) -> None:
    finished = suggestion.status in FINISHED
    with st.container(border=True, key=f"suggestion-{suggestion.kind}-{suggestion.id}"):
        color = "violet" if suggestion.kind == "draft" else "blue"
        sources = " ".join(f":gray-badge[{_plain(source)}]" for source in suggestion.sources)
        status = (
            f" :{'green' if suggestion.status != 'rejected' else 'red'}-badge[{suggestion.status}]"
            if finished
            else ""
        )
        st.markdown(f":{color}-badge[{suggestion.kind}] {sources}{status}")
        st.markdown(_plain(suggestion.text))
        if suggestion.first_token_ms is not None:
            st.caption(
                f"first token {suggestion.first_token_ms:.0f} ms · total {suggestion.total_ms or 0:.0f} ms"
            )
        accept, edit, reject = st.columns(3)
        common = {"disabled": finished, "width": "stretch"}
        accept.button(
            "Accept",
            key=f"accept-{suggestion.id}",
            on_click=_accept,
            args=(client, cid, suggestion),
            **common,
        )
        edit.button(
            "Edit", key=f"edit-{suggestion.id}", on_click=_fill_reply, args=(cid, suggestion), **common
        )
        reject.button(
            "Reject", key=f"reject-{suggestion.id}", on_click=_reject, args=(client, suggestion), **common
        )


# ----------------------------------------------------------------------------- actions (callbacks)


def _create(client: ConsoleClient) -> None:
    name = st.session_state.get("new_name", "").strip() or None
    created = _call(client.create_conversation, customer_name=name, flash=True)
    if created is not None:
        _select(created.id)


def _select(cid: int) -> None:
    st.session_state.cid = cid


def _post_typed(client: ConsoleClient, *, text: str, role: str) -> None:
    state = st.session_state
    if state.get("cid") is None:
        created = _call(client.create_conversation)
        if created is None:
            return
        state.cid = created.id
    with st.spinner("The suite is reading the message…"):
        posted = _call(client.post_message, state.cid, role=role, text=text)
    if posted is None:
        return
    if role == "customer":
        state[f"turn-{state.cid}"] = {
            "first_suggestion_id": _first_of_turn(client, state.cid, posted.suggestions),
            "latency_ms": posted.latency_ms,
        }
        state[f"passages-{state.cid}"] = (posted.message.id, posted.passages)


def _send_reply(client: ConsoleClient, cid: int) -> None:
    state = st.session_state
    text = state.get(f"reply-{cid}", "").strip()
    if not text:
        state.flash.append("The reply is empty: write something or pick a suggestion.")
        return
    if _call(client.post_message, cid, role="agent", text=text, flash=True) is None:
        return
    source = state.get(f"reply-source-{cid}")
    if source:
        unchanged = text == source[1].strip()
        action = "accepted" if unchanged else "edited"
        _call(client.feedback, source[0], action=action, final_text=None if unchanged else text, flash=True)
    _clear_reply(cid)


def _clear_reply(cid: int) -> None:
    st.session_state[f"reply-{cid}"] = ""
    st.session_state[f"reply-source-{cid}"] = None


def _fill_reply(cid: int, suggestion: SuggestionOut) -> None:
    st.session_state[f"reply-{cid}"] = suggestion.text
    st.session_state[f"reply-source-{cid}"] = (suggestion.id, suggestion.text)


def _accept(client: ConsoleClient, cid: int, suggestion: SuggestionOut) -> None:
    if _call(client.post_message, cid, role="agent", text=suggestion.text, flash=True) is not None:
        _call(client.feedback, suggestion.id, action="accepted", flash=True)


def _reject(client: ConsoleClient, suggestion: SuggestionOut) -> None:
    _call(client.feedback, suggestion.id, action="rejected", flash=True)


def _handoff(client: ConsoleClient, cid: int) -> None:
    _call(client.handoff, cid, flash=True)  # the page then shows the conversation's summary


# ----------------------------------------------------------------------------- helpers


def _call(function, *args, flash: bool = False, **kwargs):
    """`function(*args, **kwargs)`, or None after showing the API's message (in a callback, where
    nothing can be drawn yet, the message waits in `flash` for the page)."""
    try:
        return function(*args, **kwargs)
    except ApiError as error:
        if flash:
            st.session_state.setdefault("flash", []).append(error.sentence())
        else:
            _show(error)
        return None


def _show(error: ApiError) -> None:
    st.error(error.sentence(), icon=":material/cloud_off:" if isinstance(error, ApiUnreachable) else None)


def _last_customer_message(conversation: ConversationOut) -> MessageOut | None:
    customer = [m for m in conversation.messages if m.role == "customer"]
    return customer[-1] if customer else None


def _passages(client: ConsoleClient, cid: int, last: MessageOut | None) -> list[PassageOut]:
    """The passages retrieved for the last customer message; after a page reload, which forgets
    them, the knowledge base is searched again with that message."""
    if last is None:
        return []
    key = f"passages-{cid}"
    cached = st.session_state.get(key)
    if cached is None or cached[0] != last.id:
        found = _call(client.search, last.text)
        cached = (last.id, found.passages if found else [])
        st.session_state[key] = cached
    return cached[1]


def _first_of_turn(client: ConsoleClient, cid: int, new: list[SuggestionOut]) -> int | None:
    """The lowest suggestion id of the turn just posted; with none (an out-of-scope message), one
    past every suggestion so far, so that only drafts written from now on show."""
    if new:
        return min(s.id for s in new)
    conversation = _call(client.get_conversation, cid)
    return None if conversation is None else max((s.id for s in conversation.suggestions), default=0) + 1


def _current_suggestions(conversation: ConversationOut, first_id: int | None) -> list[SuggestionOut]:
    """The suggestions for the latest customer turn (and drafts after it), oldest first."""
    ordered = sorted(conversation.suggestions, key=lambda s: s.id)
    if first_id is None:
        return ordered[-SHOWN_WITHOUT_TURN:]
    return [s for s in ordered if s.id >= first_id]


def _plain(text: str) -> str:
    """Text shown as written: Streamlit's Markdown would read `$`, `*`, `[..](..)` or `:icon:`."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text).replace("\n", "  \n")


if __name__ == "__main__":
    main()
