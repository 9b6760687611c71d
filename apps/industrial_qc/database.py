"""The industrial-QC database: its migrations, as `core_model.storage.Migrations`.

    upgrade("sqlite:///runs/qc.db")   # create or migrate the tables to the newest revision
    engine = make_engine(url)
    Session = session_factory(engine)

The version table is `alembic_version_industrial_qc` and only `qc_` tables are compared, so the
apps' histories live side by side in one shared database. This module holds no queries (`store.py`).
"""

from __future__ import annotations

from pathlib import Path

from apps.industrial_qc.models import Base
from core_model.storage import Migrations, make_engine, session_factory

__all__ = ["MIGRATIONS", "make_engine", "session_factory", "upgrade"]


MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "alembic_version_industrial_qc", Base.metadata)
upgrade = MIGRATIONS.upgrade
