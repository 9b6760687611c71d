"""The code-assist tables: the migration matches the models, and acceptance counts each completion once.

.venv/bin/python -m pytest tests/apps/code_assist/test_store.py -q
"""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from apps.code_assist import store
from apps.code_assist.database import MIGRATIONS, make_engine, session_factory
from apps.code_assist.models import Base


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'code.db'}")
    MIGRATIONS.upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def served(session, id: str, language: str, latency_ms: float = 10.0) -> None:
    store.add_completion(
        session, id=id, language=language, filepath=None, user=None, model="embedded:code", snippets=0,
        text="x", raw_text="x", latency_ms=latency_ms,
    )  # fmt: skip


def test_the_migration_creates_what_the_models_describe(sessions):
    engine = sessions.kw["bind"]
    assert {"ca_completions", "ca_events", MIGRATIONS.version_table} <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        assert (
            compare_metadata(MigrationContext.configure(connection, opts=MIGRATIONS.options()), Base.metadata)
            == []
        )
    assert MIGRATIONS.current_revision(engine) == "0001"


def test_acceptance_counts_each_completion_once_per_language(sessions):
    with sessions.begin() as session:
        served(session, "a", "python", 10.0)
        served(session, "b", "python", 30.0)
        served(session, "c", "go")
    with sessions.begin() as session:
        for event in ("view", "view", "select", "select"):  # an editor re-shows while the user types
            store.add_event(session, completion_id="a", type=event)
        store.add_event(session, completion_id="b", type="view")
        store.add_event(session, completion_id="b", type="dismiss")
    with sessions() as session:
        stats = {row.language: row for row in store.language_stats(session)}
    assert (stats["python"].completions, stats["python"].views, stats["python"].selects) == (2, 2, 1)
    assert stats["python"].acceptance_rate == 0.5 and stats["python"].mean_latency_ms == 20.0
    assert stats["go"].acceptance_rate is None  # never shown


def test_an_event_for_an_unknown_completion_is_refused_and_nothing_is_stored(sessions):
    with pytest.raises(store.UnknownCompletion, match="cmpl-x"), sessions.begin() as session:
        store.add_event(session, completion_id="cmpl-x", type="view")
    with sessions() as session:
        assert store.language_stats(session) == []
