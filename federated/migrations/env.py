"""Alembic's entry point for the federated-round migrations, loaded by `MIGRATIONS.upgrade`; not
imported by the package."""

from alembic import context

from federated.records import MIGRATIONS

MIGRATIONS.run_env(context)
