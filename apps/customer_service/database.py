"""Engines, sessions and schema upgrades for the customer-service database.

    upgrade("sqlite:///runs/customer_service.db")   # create or migrate the tables to the newest revision
    engine = make_engine(url)
    Session = session_factory(engine)

Any SQLAlchemy URL works (SQLite by default, PostgreSQL the same). Migrations run through Alembic
from `migrations/` without an alembic.ini; their version table is `alembic_version_customer_service`,
so several apps can keep their own migration histories in one shared database.

This module does not read settings or environment variables (the caller passes the URL, parsed at
the edge) and holds no queries (`store.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from apps.customer_service.models import Base

DEFAULT_URL = "sqlite:///runs/customer_service.db"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_customer_service"


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for `url`. On SQLite: foreign keys enforced on every connection, a file in WAL mode
    (readers never wait for the writer, and a commit appends to the log with no fsync of the
    database), connections usable from any thread (FastAPI runs sync routes in a thread pool), the
    file's folder created, and one shared connection for an in-memory database (otherwise each
    connection would see its own)."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"check_same_thread": False},
        poolclass=StaticPool if in_memory else None,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # "memory" stays memory
    cursor.execute("PRAGMA synchronous=NORMAL")  # a power cut may lose the last commits, never corrupt
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose rows stay readable after commit (`expire_on_commit=False`), so a route can
    commit and then build its response from the rows it holds."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config for `migrations/`, built in code (no alembic.ini). With a URL it also works
    for `command.revision(config, message, autogenerate=True)` and offline `--sql` upgrades."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolates "%", which URL-encoded passwords contain.
        rendered = make_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade(url_or_engine: str | URL | Engine, *, revision: str = "head") -> None:
    """Migrate the database to `revision` (the newest by default). Safe to run at every start:
    an up-to-date database is left as it is."""
    _run(url_or_engine, lambda config: command.upgrade(config, revision))


def downgrade(url_or_engine: str | URL | Engine, *, revision: str) -> None:
    """Migrate the database back to `revision` ("base" drops every customer-service table)."""
    _run(url_or_engine, lambda config: command.downgrade(config, revision))


def current_revision(url_or_engine: str | URL | Engine) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    finally:
        if engine is not url_or_engine:
            engine.dispose()


def _run(url_or_engine: str | URL | Engine, step: Callable[[Config], None]) -> None:
    """Run one Alembic command on a connection of our own engine (or of the caller's), which env.py
    picks up from `config.attributes`."""
    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    config = alembic_config(engine.url)
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                _set_foreign_keys(connection, on=False)
            try:
                with connection.begin():
                    config.attributes["connection"] = connection
                    step(config)
            finally:
                if sqlite:
                    _set_foreign_keys(connection, on=True)
    finally:
        if engine is not url_or_engine:
            engine.dispose()


def _set_foreign_keys(connection: Connection, *, on: bool) -> None:
    # NOTE: batch mode on SQLite rebuilds a table (copy, drop, rename); with foreign keys enforced the
    # drop would delete or refuse the rows that reference it. SQLite ignores this pragma inside a
    # transaction, hence the commit of the (empty) one SQLAlchemy opened.
    connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    connection.commit()


def owns(name: str | None, type_: str, parent_names: dict) -> bool:
    """Alembic's `include_name` hook: compare only our own tables, never another app's in the shared
    database (autogenerate would otherwise offer to drop them)."""
    return type_ != "table" or name in Base.metadata.tables
