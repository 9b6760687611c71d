"""The customer-service database: its migrations, as `core_model.storage.Migrations`.

    upgrade("sqlite:///runs/customer_service.db")   # create or migrate the tables to the newest revision
    engine = make_engine(url)
    Session = session_factory(engine)

The version table is `alembic_version_customer_service` and only `cs_` tables are compared, so the
apps' histories live side by side in one shared database. This module holds no queries (`store.py`).
"""

from __future__ import annotations

from pathlib import Path

from apps.customer_service.models import Base, UTCDateTime
from core_model.storage import Migrations, make_engine, session_factory

__all__ = ["MIGRATIONS", "make_engine", "session_factory", "upgrade"]


def _render_item(type_: str, obj, autogen_context):
    """Write `UTCDateTime` as the plain `sa.DateTime(timezone=True)` it stores, so that a
    migration does not import the app."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


MIGRATIONS = Migrations(
    Path(__file__).parent / "migrations", "alembic_version_customer_service", Base.metadata, _render_item
)
upgrade = MIGRATIONS.upgrade
