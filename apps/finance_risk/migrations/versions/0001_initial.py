"""The first finance-risk schema: transactions as scored and late labels

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fr_transactions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("terminal_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("features", sa.JSON(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_fr_transactions_amount")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fr_transactions")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_fr_transactions_transaction_id")),
    )
    with op.batch_alter_table("fr_transactions", schema=None) as batch_op:
        batch_op.create_index("ix_fr_transactions_customer_time", ["customer_id", "timestamp"], unique=False)
        batch_op.create_index("ix_fr_transactions_terminal_time", ["terminal_id", "timestamp"], unique=False)

    op.create_table(
        "fr_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("fraud", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('chargeback', 'analyst', 'import')", name=op.f("ck_fr_labels_source")),
        sa.CheckConstraint("fraud IN (0, 1)", name=op.f("ck_fr_labels_fraud")),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["fr_transactions.transaction_id"],
            name=op.f("fk_fr_labels_transaction_id_fr_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fr_labels")),
    )
    with op.batch_alter_table("fr_labels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fr_labels_arrived_at"), ["arrived_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_fr_labels_transaction_id"), ["transaction_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("fr_labels", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fr_labels_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_fr_labels_arrived_at"))

    op.drop_table("fr_labels")
    with op.batch_alter_table("fr_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_fr_transactions_terminal_time")
        batch_op.drop_index("ix_fr_transactions_customer_time")

    op.drop_table("fr_transactions")
