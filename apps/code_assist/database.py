"""The code-assist database: its migrations, as `core_model.storage.Migrations`.

    MIGRATIONS.upgrade("sqlite:///runs/code_assist.db")   # create or migrate the tables
    Session = session_factory(make_engine(url))

The version table is `alembic_version_code_assist` and only `ca_` tables are compared, so this
history lives beside the other apps' in one shared database. No queries here (`store.py`).
"""

from __future__ import annotations

from pathlib import Path

from apps.code_assist.models import Base
from core_model.storage import Migrations, make_engine, session_factory

__all__ = ["MIGRATIONS", "make_engine", "session_factory"]


MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "alembic_version_code_assist", Base.metadata)
