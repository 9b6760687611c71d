"""The customer-service logic behind the routes: parse a message, retrieve the passages that
answer it, offer replies, stream a drafted reply from the model, record what the agent does.

    service = CustomerService.start(settings, engine=engine, base="embedded")
    posted = service.post_message(conversation_id, MessageIn(role="customer", text="..."))
    async for event, data in service.draft(conversation_id): ...

It returns the `*Out` schemas and raises `NotFound` / `Invalid`; it builds no HTTP responses
(`api.py` does) and writes no SQL of its own (`store.py` does). The dialogue state is not held
in memory: it is replayed from the stored predictions, so any worker can take any request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core_model.engine import Engine, SamplingParams
from core_model.serve.adapters import register_adapter
from core_model.tokenizer import Tokenizer
from core_model.train.adapters import adapter_base

from . import store
from .database import make_engine, session_factory, upgrade
from .dialogue import DialogueState, draft_messages, handoff_summary, readable, replay
from .grounded_replies import copy_sources, snapped_to_passages
from .knowledge_base import Passage
from .retrieval import KnowledgeBase, ScoredPassage, load_or_build
from .schemas import (
    AnalyticsOut,
    ConversationCreatedOut,
    ConversationIn,
    ConversationOut,
    ConversationSummaryOut,
    CountOut,
    EntityOut,
    FeedbackIn,
    HandoffOut,
    IntentOut,
    LatencyPointOut,
    MessageIn,
    MessageOut,
    ParseOut,
    PassageOut,
    PostedMessageOut,
    SearchOut,
    StateOut,
    SuggestionOut,
)
from .settings import CustomerServiceSettings
from .understanding import Understanding, Understood

log = logging.getLogger(__name__)
REPLY_ADAPTER = "customer-service"
STATE_WINDOW = 50  # the dialogue state is replayed from this many latest messages


class ServiceError(Exception):
    """A request the service refuses; the message says why."""


class NotFound(ServiceError):
    pass


class Invalid(ServiceError):
    pass


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)


@dataclass
class CustomerService:
    settings: CustomerServiceSettings
    sessions: sessionmaker[Session]
    understanding: Understanding
    knowledge_base: KnowledgeBase
    engine: Engine | None  # None: no drafts (the parse, retrieval and storage still work)
    reply_adapter: str | None  # the engine's adapter name for drafts; None: the base model

    @classmethod
    def start(
        cls, settings: CustomerServiceSettings, *, engine: Engine | None, base: str = "embedded"
    ) -> CustomerService:
        """Migrates the database, starts the models (understanding.py) and loads the knowledge
        base, and registers the reply adapter on `engine` when it was trained on `base` (the model
        the engine serves)."""
        database = make_engine(settings.database_url)
        upgrade(database)
        understanding = Understanding.start(settings)
        knowledge_base = load_or_build(
            settings.index_dir, list(settings.knowledge_base), understanding.embeddings
        )
        reply_adapter = None
        if engine is not None:
            if adapter_base(settings.reply_adapter) == base:
                register_adapter(engine, REPLY_ADAPTER, settings.reply_adapter)
                reply_adapter = REPLY_ADAPTER
            else:
                log.warning(
                    "reply adapter %s was not trained on %s: drafts use the base model",
                    settings.reply_adapter,
                    base,
                )
        log.info("customer service: intents %s, %d passages", settings.intent_adapter, len(knowledge_base))
        return cls(settings, session_factory(database), understanding, knowledge_base, engine, reply_adapter)

    @contextmanager
    def _session(self):
        with self.sessions() as session, session.begin():
            yield session

    # ------------------------------------------------------------------------- understanding

    def parse(self, text: str) -> ParseOut:
        return self._parse_out(text, self.understanding(text))

    def _parse_out(self, text: str, understood: Understood) -> ParseOut:
        intent, entities = understood.intent, understood.entities
        return ParseOut(
            text=text,
            intent=IntentOut(name=intent.name, confidence=intent.confidence),
            intent_ranking=[IntentOut(name=n, confidence=c) for n, c in intent.ranking],
            entities=[EntityOut(**e.to_dict()) for e in entities],
            out_of_scope=intent.out_of_scope,
            latency_ms=understood.ms,
        )

    def search(self, query: str, *, k: int) -> SearchOut:
        if not query.strip():
            raise Invalid("q is empty; send the words to search for")
        started = time.perf_counter()
        found = self.knowledge_base.search(query, k=k)
        return SearchOut(query=query, passages=[_passage_out(p) for p in found], latency_ms=_ms(started))

    # ------------------------------------------------------------------------- conversations

    def create_conversation(self, body: ConversationIn) -> ConversationCreatedOut:
        with self._session() as session:
            conversation = store.create_conversation(
                session,
                customer_ref=body.customer_ref,
                customer_name=body.customer_name,
                channel=body.channel,
            )
            return ConversationCreatedOut(id=conversation.id)

    def list_conversations(self, *, limit: int) -> list[ConversationSummaryOut]:
        with self._session() as session:
            return [
                ConversationSummaryOut(
                    id=c.id,
                    status=c.status,
                    customer_ref=c.customer_ref,
                    created_at=c.created_at,
                    messages=c.message_count,
                    last_message=c.last_message,
                )
                for c in store.list_conversations(session, limit=limit)
            ]

    def post_message(self, conversation_id: int, body: MessageIn) -> PostedMessageOut:
        """Stores the message; for a customer's, also its parse, passages and passage suggestions.

        The models run between two short transactions, never inside one: a SQLite write lock held
        through a forward pass would queue every other conversation behind it.
        """
        started = time.perf_counter()
        with self._session() as session:
            self._conversation(session, conversation_id)
            history = store.recent_turns(session, conversation_id, last=STATE_WINDOW)
        state, parse, passages, retrieval_ms = _replay(history), None, [], None
        if body.role == "customer":
            understood = self.understanding(body.text)
            parse = self._parse_out(body.text, understood)
            state = state.advance(
                intent=parse.intent.name,
                confident=not parse.out_of_scope,
                entities=[e.model_dump() for e in parse.entities],
            )
            retrieval_started = time.perf_counter()
            query = _query(history, body.text, state)
            vector = understood.vector if query == body.text else None  # else embedded by search
            passages = self.knowledge_base.search(query, k=self.settings.passages, query_vector=vector)
            retrieval_ms = _ms(retrieval_started)
        with self._session() as session:
            message = store.add_message(
                session, conversation_id=conversation_id, role=body.role, text=body.text
            )
            suggestions = []
            if parse is not None:
                self._store_prediction(session, message.id, parse, state, passages, retrieval_ms)
                for found in passages[: self.settings.passage_suggestions]:
                    suggestion = store.add_suggestion(
                        session,
                        conversation_id=conversation_id,
                        message_id=message.id,
                        kind="passage",
                        text=found.passage.text,
                        sources=[found.passage.source_id],
                    )
                    suggestions.append(_suggestion_out(suggestion))
            message.latency_ms = latency_ms = _ms(started)
            return PostedMessageOut(
                message=_message_out(message, parse),
                parse=parse,
                passages=[_passage_out(p) for p in passages],
                suggestions=suggestions,
                state=_state_out(state),
                latency_ms=latency_ms,
            )

    def _store_prediction(
        self,
        session: Session,
        message_id: int,
        parse: ParseOut,
        state: DialogueState,
        passages: list[ScoredPassage],
        retrieval_ms: float | None,
    ) -> None:
        store.add_prediction(
            session,
            message_id=message_id,
            intent=parse.intent.name,
            confidence=parse.intent.confidence,
            out_of_scope=parse.out_of_scope,
            intent_ranking=[i.model_dump() for i in parse.intent_ranking],
            entities=[e.model_dump() for e in parse.entities],
            carried_intent=state.carried_intent,
            parse_ms=parse.latency_ms,
            retrieval_ms=retrieval_ms,
            passages=[{"source_id": p.passage.source_id, "score": p.score} for p in passages],
            model_version=self.understanding.intent_version,
        )

    def get_conversation(self, conversation_id: int) -> ConversationOut:
        with self._session() as session:
            conversation = self._conversation(session, conversation_id)
            history = store.conversation_history(session, conversation_id)
            return ConversationOut(
                id=conversation.id,
                status=conversation.status,
                customer_ref=conversation.customer.external_ref if conversation.customer else None,
                customer_name=conversation.customer.name if conversation.customer else None,
                created_at=conversation.created_at,
                messages=[_message_out(m, _stored_parse(m, p)) for m, p in history],
                suggestions=[_suggestion_out(s) for s in conversation.suggestions],
                state=_state_out(_replay(history)),
                handoff_summary=conversation.handoff_summary,
                csat=conversation.csat,
            )

    def feedback(self, suggestion_id: int, body: FeedbackIn) -> SuggestionOut:
        if body.action == "edited" and not (body.final_text or "").strip():
            raise Invalid("an edited suggestion needs final_text: the words the agent sent")
        with self._session() as session:
            try:
                store.record_action(
                    session, suggestion_id=suggestion_id, action=body.action, final_text=body.final_text
                )
            except store.NotFound as error:
                raise NotFound(str(error)) from None
            return _suggestion_out(store.get_suggestion(session, suggestion_id))

    def handoff(self, conversation_id: int) -> HandoffOut:
        with self._session() as session:
            conversation = self._conversation(session, conversation_id)
            history = store.conversation_history(session, conversation_id)
            counts: dict[str, int] = {}
            for suggestion in conversation.suggestions:
                counts[suggestion.status] = counts.get(suggestion.status, 0) + 1
            summary = handoff_summary(
                conversation_id=conversation_id,
                turns=[m for m, _ in history],
                state=_replay(history),
                intents=[(p.intent, p.confidence, p.out_of_scope) for _, p in history if p is not None],
                sources_shown=[s["source_id"] for _, p in history if p is not None for s in p.passages],
                suggestion_counts=counts,
            )
            store.set_handoff(session, conversation_id=conversation_id, summary=summary)
            return HandoffOut(conversation_id=conversation_id, summary=summary)

    def record_csat(self, conversation_id: int, score: int) -> ConversationOut:
        with self._session() as session:
            self._conversation(session, conversation_id)
            store.set_csat(session, conversation_id=conversation_id, score=score)
        return self.get_conversation(conversation_id)

    def analytics(self) -> AnalyticsOut:
        with self._session() as session:
            return AnalyticsOut(
                intent_mix=[CountOut(name=n, count=c) for n, c in store.intent_mix(session)],
                suggestions=store.acceptance_rate(session),
                message_latency=[
                    LatencyPointOut(**p) for p in store.latency_percentiles(session, kind="message")
                ],
                draft_first_token=[
                    LatencyPointOut(**p) for p in store.latency_percentiles(session, kind="draft")
                ],
            )

    # ------------------------------------------------------------------------- drafts

    def prepare_draft(self, conversation_id: int) -> PreparedDraft:
        """Stores an empty draft suggestion for the last customer message and returns what to
        generate it from. NotFound / Invalid before anything streams."""
        if self.engine is None:
            raise Invalid("drafts are off: this server runs without a generation engine")
        with self._session() as session:
            self._conversation(session, conversation_id)
            history = store.conversation_history(session, conversation_id, last=STATE_WINDOW)
            last = next(((m, p) for m, p in reversed(history) if m.role == "customer"), None)
            if last is None:
                raise Invalid("nothing to reply to: the conversation has no customer message yet")
            message, prediction = last
            source_ids = [s["source_id"] for s in (prediction.passages if prediction else [])]
            passages = [p for p in (self.knowledge_base.get(s) for s in source_ids) if p is not None]
            turns = [m for m, _ in history][-self.settings.context_turns :]
            state = _replay(history)
            messages = draft_messages(
                turns,
                passages,
                state,
                bank=self.settings.bank_name,
                context_turns=self.settings.context_turns,
            )
            suggestion = store.add_suggestion(
                session,
                conversation_id=conversation_id,
                message_id=message.id,
                kind="draft",
                text="",
                sources=source_ids,
            )
            return PreparedDraft(
                suggestion.id,
                self.engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True),
                source_ids,
                passages,
                draft_sampling(self.settings, self.engine.tokenizer, passages, hand_over=state.needs_human),
            )

    async def draft(self, conversation_id: int) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """("start", {suggestion_id, sources}), ("delta", {text}) per piece, ("done", SuggestionOut)."""
        prepared = await asyncio.to_thread(self.prepare_draft, conversation_id)
        assert self.engine is not None
        yield "start", {"suggestion_id": prepared.suggestion_id, "sources": prepared.source_ids}
        started, first_token_ms, text = time.perf_counter(), None, ""
        async for output in self.engine.stream(prepared.prompt, prepared.params, adapter=self.reply_adapter):
            if piece := readable(output.delta_text):
                first_token_ms = first_token_ms or _ms(started)
                text += piece
                yield "delta", {"text": piece}
        total_ms = _ms(started)
        done = await asyncio.to_thread(
            self._finish_draft,
            prepared.suggestion_id,
            text.strip(),
            prepared.passages,
            first_token_ms,
            total_ms,
        )
        yield "done", done.model_dump(mode="json")

    def _finish_draft(
        self,
        suggestion_id: int,
        text: str,
        passages: list[Passage],
        first_token_ms: float | None,
        total_ms: float,
    ) -> SuggestionOut:
        """Stores the draft with each sentence it nearly copied set to the passage's own and the
        passages' ids cited (`grounded_replies.snapped_to_passages`), which is what the agent gets."""
        text = snapped_to_passages(text, passages, self.knowledge_base.passages)
        with self._session() as session:
            suggestion = store.update_suggestion(
                session,
                suggestion_id=suggestion_id,
                text=text,
                first_token_ms=first_token_ms,
                total_ms=total_ms,
            )
            return _suggestion_out(suggestion)

    # ------------------------------------------------------------------------- helpers

    def _conversation(self, session: Session, conversation_id: int):
        conversation = store.get_conversation(session, conversation_id)
        if conversation is None:
            raise NotFound(f"conversation {conversation_id} does not exist")
        return conversation


@dataclass(frozen=True)
class PreparedDraft:
    suggestion_id: int  # the empty draft stored for it
    prompt: str
    source_ids: list[str]  # of the passages shown with the customer's message
    passages: list[Passage]  # those of them the knowledge base still has
    params: SamplingParams


def draft_sampling(
    settings: CustomerServiceSettings, tokenizer: Tokenizer, passages: Sequence[Passage], *, hand_over: bool
) -> SamplingParams:
    """How a draft over `passages` is generated: greedy by default (sampling or a repetition
    penalty on the prompt's tokens works against copying), copying the passages' sentences as
    `settings.draft_copy_bias` says (`grounded_replies.copy_sources`; the hand-over to a
    colleague among them when `hand_over`: the customer's message is out of scope with no
    intent to fall back on), until the model ends its turn."""
    sources, weights = (
        copy_sources(passages, tokenizer, hand_over=hand_over) if settings.draft_copy_bias else ((), ())
    )
    return SamplingParams(
        max_tokens=settings.draft_max_tokens,
        temperature=settings.draft_temperature,
        top_p=0.9,
        stop_token_ids=tokenizer.chat_stop_ids,
        copy_from=sources,
        copy_bias=settings.draft_copy_bias,
        copy_weights=weights,
    )


def _query(history, text: str, state: DialogueState) -> str:
    """The retrieval query: the message, after the customer's previous message when this one
    carries no intent of its own ("yes, the one ending 4321" says little by itself)."""
    if not state.carried_intent:
        return text
    earlier = [m.text for m, _ in history if m.role == "customer"]
    return " ".join([*earlier[-1:], text])


def _replay(history) -> DialogueState:
    return replay([(p.intent, not p.out_of_scope, p.entities) for m, p in history if p is not None])


def _state_out(state: DialogueState) -> StateOut:
    return StateOut(
        active_intent=state.active_intent,
        carried_intent=state.carried_intent,
        slots=state.slots,
        needs_human=state.needs_human,
    )


def _passage_out(found) -> PassageOut:
    p = found.passage
    return PassageOut(source_id=p.source_id, title=p.title, text=p.text, score=round(float(found.score), 4))


def _suggestion_out(suggestion) -> SuggestionOut:
    return SuggestionOut(
        id=suggestion.id,
        kind=suggestion.kind,
        text=suggestion.text,
        sources=list(suggestion.sources or []),
        status=suggestion.status,
        first_token_ms=suggestion.first_token_ms,
        total_ms=suggestion.total_ms,
    )


def _stored_parse(message, prediction) -> ParseOut | None:
    if prediction is None:
        return None
    return ParseOut(
        text=message.text,
        intent=IntentOut(name=prediction.intent, confidence=prediction.confidence),
        intent_ranking=[IntentOut(**i) for i in prediction.intent_ranking],
        entities=[EntityOut(**e) for e in prediction.entities],
        out_of_scope=prediction.out_of_scope,
        latency_ms=prediction.parse_ms,
    )


def _message_out(message, parse: ParseOut | None) -> MessageOut:
    created = message.created_at or datetime.now(UTC)
    return MessageOut(
        id=message.id,
        role=message.role,
        text=message.text,
        created_at=created,
        latency_ms=message.latency_ms,
        parse=parse,
    )
