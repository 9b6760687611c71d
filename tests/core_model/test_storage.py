"""`make_engine`'s SQLite settings on a real file: with `checkpoint_every_s`, a commit never copies
the write-ahead log back into the database; the engine's thread does, and stops with the engine.

.venv/bin/python -m pytest tests/core_model/test_storage.py -q
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from core_model.storage import make_engine

ROWS, ROW_BYTES = 2_000, 2_000  # about 4 MB: past SQLite's default checkpoint of 1,000 pages


def fill(engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
        connection.execute(text("INSERT INTO t (body) VALUES (:body)"), [{"body": "x" * ROW_BYTES}] * ROWS)


def checkpoint_threads() -> int:
    return sum(thread.name == "sqlite-checkpoints" for thread in threading.enumerate())


def test_commits_leave_the_log_to_the_engines_thread(tmp_path):
    path = tmp_path / "t.db"
    before = checkpoint_threads()
    engine = make_engine(f"sqlite:///{path}", checkpoint_every_s=2.0)
    started = time.monotonic()
    fill(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    if time.monotonic() - started < 1.5:  # the thread has not run yet
        assert path.stat().st_size < ROWS * ROW_BYTES / 4  # the rows are in the log only
    deadline = time.monotonic() + 15
    while path.stat().st_size < ROWS * ROW_BYTES and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.stat().st_size >= ROWS * ROW_BYTES  # copied into the database
    assert checkpoint_threads() == before + 1
    engine.dispose()
    deadline = time.monotonic() + 5
    while checkpoint_threads() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert checkpoint_threads() == before


def test_by_default_a_commit_past_the_limit_checkpoints_itself(tmp_path):
    path = tmp_path / "t.db"
    engine = make_engine(f"sqlite:///{path}")
    fill(engine)
    assert path.stat().st_size >= ROWS * ROW_BYTES
    engine.dispose()


def test_a_period_that_is_not_positive_is_refused(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every_s must be > 0"):
        make_engine(f"sqlite:///{tmp_path / 't.db'}", checkpoint_every_s=0)
