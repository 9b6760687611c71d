"""Alembic's entry point for the industrial-QC migrations, loaded by `MIGRATIONS.upgrade` (and by any
`alembic.command` given `MIGRATIONS.config(url)`); not imported by the app."""

from alembic import context

from apps.industrial_qc.database import MIGRATIONS

MIGRATIONS.run_env(context)
