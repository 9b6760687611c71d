"""Queries of the code-assist tables: record a completion, record an editor's event, report
acceptance per language. Keyword-only functions on a session the caller owns (and commits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from apps.code_assist.models import Completion, Event


class UnknownCompletion(LookupError):
    pass


def add_completion(
    session: Session,
    *,
    id: str,
    language: str,
    filepath: str | None,
    user: str | None,
    model: str,
    snippets: int,
    text: str,
    raw_text: str,
    latency_ms: float,
) -> Completion:
    completion = Completion(
        id=id,
        language=language,
        filepath=filepath,
        user=user,
        model=model,
        snippets=snippets,
        text=text,
        raw_text=raw_text,
        latency_ms=latency_ms,
    )
    session.add(completion)
    return completion


def add_event(
    session: Session,
    *,
    completion_id: str,
    type: str,
    choice_index: int = 0,
    view_id: str | None = None,
    elapsed_ms: int | None = None,
    select_kind: str | None = None,
) -> Event:
    """Record an event; an UnknownCompletion when no completion has that id."""
    if session.get(Completion, completion_id) is None:
        raise UnknownCompletion(f"no completion {completion_id!r} was served here")
    event = Event(
        completion_id=completion_id,
        type=type,
        choice_index=choice_index,
        view_id=view_id,
        elapsed_ms=elapsed_ms,
        select_kind=select_kind,
    )
    session.add(event)
    return event


@dataclass(frozen=True)
class LanguageStats:
    language: str
    completions: int
    views: int  # distinct completions shown
    selects: int  # distinct completions accepted
    mean_latency_ms: float

    @property
    def acceptance_rate(self) -> float | None:
        return self.selects / self.views if self.views else None


def language_stats(session: Session, *, since: datetime | None = None) -> list[LanguageStats]:
    """Per language, most completions first: how many were served, shown and accepted.

    A completion counts once however many times it was shown or accepted (an editor re-shows a
    completion while the user keeps typing into it), so the rate is accepted / shown completions.
    """
    served = select(Completion.language, func.count(Completion.id), func.avg(Completion.latency_ms)).group_by(
        Completion.language
    )
    if since is not None:
        served = served.where(Completion.created_at >= since)
    counts = {}
    for kind in ("view", "select"):
        query = (
            select(Completion.language, func.count(distinct(Event.completion_id)))
            .join(Event, Event.completion_id == Completion.id)
            .where(Event.type == kind)
            .group_by(Completion.language)
        )
        if since is not None:
            query = query.where(Completion.created_at >= since)
        counts[kind] = dict(session.execute(query).all())
    rows = [
        LanguageStats(
            language, n, counts["view"].get(language, 0), counts["select"].get(language, 0), latency
        )
        for language, n, latency in session.execute(served).all()
    ]
    return sorted(rows, key=lambda row: (-row.completions, row.language))
