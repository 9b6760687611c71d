"""Each transaction keeps the reasons it was scored with; a day's transactions are read by time

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fr_transactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reasons", sa.JSON(), nullable=True))
        batch_op.create_index("ix_fr_transactions_time", ["timestamp"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("fr_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_fr_transactions_time")
        batch_op.drop_column("reasons")
