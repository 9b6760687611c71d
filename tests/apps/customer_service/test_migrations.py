"""The customer-service migrations build exactly the tables of `models.py`, on a real SQLite file.

.venv/bin/python -m pytest -q tests/apps/customer_service/test_migrations.py
"""

import io

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from apps.customer_service import database
from apps.customer_service.models import Base

TABLES = {
    "cs_customers",
    "cs_conversations",
    "cs_messages",
    "cs_predictions",
    "cs_suggestions",
    "cs_agent_actions",
}


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'nested' / 'cs.db'}"


@pytest.fixture
def engine(url):
    engine = database.make_engine(url)
    yield engine
    engine.dispose()


def tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_upgrade_creates_every_table_in_a_new_file(url, engine):
    database.upgrade(url)
    assert tables(engine) == TABLES | {database.MIGRATIONS.version_table}
    assert database.MIGRATIONS.current_revision(engine) == "0001"


def test_upgrade_twice_changes_nothing_and_keeps_rows(engine):
    database.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO cs_customers (name, created_at) VALUES ('Ada', '2026-01-01')"))
    database.upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM cs_customers")).scalars().all() == ["Ada"]
    assert database.MIGRATIONS.current_revision(engine) == "0001"


def test_the_migrations_match_the_models(engine):
    database.upgrade(engine)
    with engine.begin() as connection:  # another app's table in the shared database is not ours to compare
        connection.execute(text("CREATE TABLE qc_inspections (id INTEGER PRIMARY KEY)"))
        opts = database.MIGRATIONS.options()
        differences = compare_metadata(MigrationContext.configure(connection, opts=opts), Base.metadata)
    assert differences == []


def test_another_apps_alembic_history_is_left_alone(engine):
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('other_app_0007')"))
    database.upgrade(engine)
    with engine.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "other_app_0007"
        )
    assert database.MIGRATIONS.current_revision(engine) == "0001"


def test_downgrade_to_base_drops_only_our_tables(engine):
    database.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE qc_inspections (id INTEGER PRIMARY KEY)"))
    database.MIGRATIONS.downgrade(engine, revision="base")
    assert tables(engine) == {"qc_inspections", database.MIGRATIONS.version_table}
    assert database.MIGRATIONS.current_revision(engine) is None


def test_foreign_keys_stay_enforced_after_upgrade(engine):
    database.upgrade(engine)  # it turns them off while it migrates
    orphan = (
        "INSERT INTO cs_conversations (customer_id, channel, status, created_at, updated_at)"
        " VALUES (999, 'chat', 'open', '2026-01-01', '2026-01-01')"
    )
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text(orphan))


def test_one_head_named_0001():
    assert ScriptDirectory.from_config(database.MIGRATIONS.config()).get_heads() == ["0001"]


def test_offline_upgrade_writes_sql(url):
    buffer = io.StringIO()
    config = database.MIGRATIONS.config(url)
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    assert "CREATE TABLE cs_agent_actions" in buffer.getvalue()
    assert database.MIGRATIONS.version_table in buffer.getvalue()
