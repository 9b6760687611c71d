"""Alembic's entry point for the customer-service migrations, loaded by `database.upgrade` (and by
any `alembic.command` given `database.alembic_config(url)`); not imported by the app.

Online, it runs on the connection that `database.upgrade` puts in `config.attributes["connection"]`,
or on an engine for the config's `sqlalchemy.url`; offline (`--sql`) it writes SQL for that URL.
The version table is `alembic_version_customer_service` and only `cs_` tables are compared, so
other apps' tables and histories in a shared database are left alone.
"""

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from apps.customer_service import database, models

config = context.config
target_metadata = models.Base.metadata


def render_item(type_: str, obj, autogen_context):
    """Write our `UTCDateTime` as the plain `sa.DateTime(timezone=True)` it stores, so that a
    migration does not import the app."""
    if type_ == "type" and isinstance(obj, models.UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


OPTIONS = {
    "target_metadata": target_metadata,
    "version_table": database.VERSION_TABLE,
    "include_name": database.owns,
    "render_item": render_item,
    "compare_type": True,
}


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    sqlite = make_url(url).get_backend_name() == "sqlite"
    context.configure(url=url, literal_binds=True, render_as_batch=sqlite, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(connection=connection, render_as_batch=sqlite, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations_on(connection)
        return
    engine = database.make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            run_migrations_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
