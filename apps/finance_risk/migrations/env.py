"""Alembic's entry point for the finance-risk migrations, loaded by `MIGRATIONS.upgrade` (and by any
`alembic.command` given `MIGRATIONS.config(url)`); not imported by the app."""

from alembic import context

from apps.finance_risk.database import MIGRATIONS

MIGRATIONS.run_env(context)
