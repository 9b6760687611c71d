"""SQL storage every app shares: engines with SQLite's settings, sessions, UTC timestamps and
per-app Alembic migrations in one database.

    MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "alembic_version_app", Base.metadata)
    MIGRATIONS.upgrade("sqlite:///runs/suite.db")   # create or migrate the app's tables (safe at every start)
    Session = session_factory(make_engine(url))
    select(time_bucket(Row.created_at, 3600), func.count()).group_by(...)   # per hour, in SQL

Any SQLAlchemy URL works (SQLite by default, PostgreSQL the same). Each app keeps its own
migration history, with its own version table, and compares only its own tables, so the apps
can share one database. Migrations run through Alembic without an alembic.ini; an app's
`migrations/env.py` is two lines (`MIGRATIONS.run_env(context)`).

This module holds no app's tables or queries and reads no settings: callers pass the URL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    Engine,
    MetaData,
    TypeDecorator,
    create_engine,
    event,
    literal_column,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.functions import FunctionElement

log = logging.getLogger(__name__)

# Named constraints, so that Alembic's batch mode on SQLite can find them again.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def one_of(column: str, values: tuple[str, ...]) -> str:
    """The SQL of a CHECK that `column` holds one of `values`: "role IN ('customer', 'agent')"."""
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend. PostgreSQL stores `timestamptz`; SQLite has
    no time zones, so the value is stored as naive UTC and given its `tzinfo` back on reading.
    A naive datetime is refused: it is impossible to tell which clock it came from."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class epoch_seconds(FunctionElement):  # noqa: N801 (an SQL function, named like one)
    """Whole seconds since 1970-01-01 UTC of a `UTCDateTime` column, in SQL."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_seconds)
def _epoch_seconds(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"CAST(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) AS BIGINT)"


@compiles(epoch_seconds, "sqlite")
def _epoch_seconds_sqlite(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"  # naive UTC


def time_bucket(column: Any, width_s: int) -> ColumnElement[int]:
    """The start of `column`'s `width_s`-second bucket (aligned to the epoch), as epoch seconds:
    group by it to count per minute, hour or day in the database rather than in Python."""
    width = literal_column(str(int(width_s)), BigInteger)  # a literal: the same SQL in SELECT and GROUP BY
    return epoch_seconds(column) // width * width


def make_engine(url: str | URL, *, echo: bool = False, checkpoint_every_s: float | None = None) -> Engine:
    """An engine for `url`. On SQLite: foreign keys enforced on every connection, a file in WAL mode
    (readers never wait for the writer, and a commit appends to the log with no fsync of the
    database), connections usable from any thread (FastAPI runs sync routes in a thread pool), the
    file's folder created, and one shared connection for an in-memory database (otherwise each
    connection would see its own).

    `checkpoint_every_s`, for a file written in a latency-bound loop: its connections never copy
    the log back into the database on commit (SQLite's default, every 1,000 pages, which costs the
    committing writer 10-20 ms each time); a thread of the engine's does it every that many
    seconds instead, without blocking readers or writers (`wal_checkpoint(PASSIVE)`), until the
    engine is disposed. Other engines on the same file keep the default."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    database = url.database or ""
    in_memory = database in ("", ":memory:")
    if not in_memory and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"check_same_thread": False},
        poolclass=StaticPool if in_memory else None,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    if checkpoint_every_s is not None and not in_memory:
        _checkpoint_in_background(engine, every_s=checkpoint_every_s)
    return engine


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # "memory" stays memory
    cursor.execute("PRAGMA synchronous=NORMAL")  # a power cut may lose the last commits, never corrupt
    cursor.close()


def _checkpoint_in_background(engine: Engine, *, every_s: float) -> None:
    if every_s <= 0:
        raise ValueError(f"checkpoint_every_s must be > 0, got {every_s}")
    stop = threading.Event()

    def no_checkpoint_on_commit(dbapi_connection, connection_record) -> None:
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoints() -> None:
        while not stop.wait(every_s):
            try:
                with engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # a busy or vanished file: the next round tries again
                log.warning("WAL checkpoint of %s failed", engine.url, exc_info=True)

    event.listen(engine, "connect", no_checkpoint_on_commit)
    event.listen(engine, "engine_disposed", lambda _: stop.set())
    threading.Thread(target=checkpoints, name="sqlite-checkpoints", daemon=True).start()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose rows stay readable after commit (`expire_on_commit=False`), so a route can
    commit and then build its response from the rows it holds."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def render_utc_datetime(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Alembic's render_item hook: `UTCDateTime` is written as the `sa.DateTime(timezone=True)` it
    stores; anything else is rendered as Alembic would."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


@dataclass(frozen=True)
class Migrations:
    """One app's Alembic history: its folder, its version table and the metadata of its tables."""

    directory: Path
    version_table: str
    metadata: MetaData
    # Alembic's render_item hook for autogenerate: by default UTCDateTime is written as the plain
    # type it stores, so that a migration does not import the suite.
    render_item: Callable[..., Any] = render_utc_datetime

    def config(self, url: str | URL | None = None) -> Config:
        """An Alembic config for the folder, built in code. With a URL it also works for
        `command.revision(config, message, autogenerate=True)` and offline `--sql` upgrades."""
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        if url is not None:
            # ConfigParser interpolates "%", which URL-encoded passwords contain.
            rendered = make_url(url).render_as_string(hide_password=False)
            config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
        return config

    def upgrade(self, url_or_engine: str | URL | Engine, *, revision: str = "head") -> None:
        """Migrate to `revision` (the newest by default); an up-to-date database is left as it is."""
        self._run(url_or_engine, lambda config: command.upgrade(config, revision))

    def downgrade(self, url_or_engine: str | URL | Engine, *, revision: str) -> None:
        """Migrate back to `revision` ("base" drops every table of this app, and only those)."""
        self._run(url_or_engine, lambda config: command.downgrade(config, revision))

    def current_revision(self, url_or_engine: str | URL | Engine) -> str | None:
        """The revision the database is at, or None before the first upgrade."""
        engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"version_table": self.version_table})
                return context.get_current_revision()
        finally:
            if engine is not url_or_engine:
                engine.dispose()

    def owns(self, name: str | None, type_: str, parent_names: dict) -> bool:
        """Alembic's `include_name` hook: compare only this app's tables, never another app's in
        the shared database (autogenerate would otherwise offer to drop them)."""
        return type_ != "table" or name in self.metadata.tables

    def options(self) -> dict[str, Any]:
        """What env.py passes to `context.configure`."""
        return {
            "target_metadata": self.metadata,
            "version_table": self.version_table,
            "include_name": self.owns,
            "compare_type": True,
            "render_item": self.render_item,
        }

    def run_env(self, context: Any) -> None:
        """The body of the app's `migrations/env.py` (`context` is `alembic.context`). Online, it
        runs on the connection `upgrade` puts in `config.attributes["connection"]`, or on an
        engine for the config's URL; offline (`--sql`) it writes SQL for that URL."""
        config = context.config
        if context.is_offline_mode():
            url = config.get_main_option("sqlalchemy.url")
            sqlite = make_url(url).get_backend_name() == "sqlite"
            context.configure(url=url, literal_binds=True, render_as_batch=sqlite, **self.options())
            with context.begin_transaction():
                context.run_migrations()
            return
        connection = config.attributes.get("connection")
        if connection is not None:
            self._migrate_on(context, connection)
            return
        engine = make_engine(config.get_main_option("sqlalchemy.url"))
        try:
            with engine.connect() as connection:
                self._migrate_on(context, connection)
        finally:
            engine.dispose()

    def _migrate_on(self, context: Any, connection: Connection) -> None:
        sqlite = connection.dialect.name == "sqlite"
        context.configure(connection=connection, render_as_batch=sqlite, **self.options())
        with context.begin_transaction():
            context.run_migrations()

    def _run(self, url_or_engine: str | URL | Engine, step: Callable[[Config], None]) -> None:
        """Run one Alembic command on a connection of our own engine (or of the caller's), which
        env.py picks up from `config.attributes`."""
        engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
        config = self.config(engine.url)
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
