"""The first customer-service schema: customers, conversations, messages, predictions, suggestions
and agent actions.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column) pairs that get an index named ix_<table>_<column>
INDEXES = [
    ("cs_conversations", "customer_id"),
    ("cs_conversations", "status"),
    ("cs_conversations", "created_at"),
    ("cs_messages", "conversation_id"),
    ("cs_messages", "created_at"),
    ("cs_suggestions", "conversation_id"),
    ("cs_suggestions", "message_id"),
    ("cs_suggestions", "created_at"),
    ("cs_agent_actions", "suggestion_id"),
    ("cs_agent_actions", "created_at"),
]
TABLES = [
    "cs_customers",
    "cs_conversations",
    "cs_messages",
    "cs_predictions",
    "cs_suggestions",
    "cs_agent_actions",
]


def utc_datetime(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def id_column() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def foreign_key(table: str, column: str, referred: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{referred}.id"], name=op.f(f"fk_{table}_{column}_{referred}"))


def upgrade() -> None:
    op.create_table(
        "cs_customers",
        id_column(),
        sa.Column("external_ref", sa.String(length=128), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        utc_datetime("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cs_customers")),
        sa.UniqueConstraint("external_ref", name=op.f("uq_cs_customers_external_ref")),
    )
    op.create_table(
        "cs_conversations",
        id_column(),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        utc_datetime("created_at"),
        utc_datetime("updated_at"),
        sa.Column("handoff_summary", sa.Text(), nullable=True),
        sa.Column("csat", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'handed_off', 'closed')", name=op.f("ck_cs_conversations_status")
        ),
        sa.CheckConstraint("csat BETWEEN 1 AND 5", name=op.f("ck_cs_conversations_csat")),
        foreign_key("cs_conversations", "customer_id", "cs_customers"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cs_conversations")),
    )
    op.create_table(
        "cs_messages",
        id_column(),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        utc_datetime("created_at"),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.CheckConstraint("role IN ('customer', 'agent')", name=op.f("ck_cs_messages_role")),
        foreign_key("cs_messages", "conversation_id", "cs_conversations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cs_messages")),
    )
    op.create_table(
        "cs_predictions",
        id_column(),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("intent", sa.String(length=128), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("out_of_scope", sa.Boolean(), nullable=False),
        sa.Column("intent_ranking", sa.JSON(), nullable=False),
        sa.Column("entities", sa.JSON(), nullable=False),
        sa.Column("carried_intent", sa.Boolean(), nullable=False),
        sa.Column("parse_ms", sa.Float(), nullable=True),
        sa.Column("retrieval_ms", sa.Float(), nullable=True),
        sa.Column("passages", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=True),
        foreign_key("cs_predictions", "message_id", "cs_messages"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cs_predictions")),
        sa.UniqueConstraint("message_id", name=op.f("uq_cs_predictions_message_id")),
    )
    op.create_table(
        "cs_suggestions",
        id_column(),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        utc_datetime("created_at"),
        sa.Column("first_token_ms", sa.Float(), nullable=True),
        sa.Column("total_ms", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.CheckConstraint("kind IN ('passage', 'draft')", name=op.f("ck_cs_suggestions_kind")),
        sa.CheckConstraint(
            "status IN ('shown', 'accepted', 'edited', 'rejected')", name=op.f("ck_cs_suggestions_status")
        ),
        foreign_key("cs_suggestions", "conversation_id", "cs_conversations"),
        foreign_key("cs_suggestions", "message_id", "cs_messages"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cs_suggestions")),
    )
    op.create_table(
        "cs_agent_actions",
        id_column(),
        sa.Column("suggestion_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("final_text", sa.Text(), nullable=True),
        utc_datetime("created_at"),
        sa.CheckConstraint(
            "action IN ('accepted', 'edited', 'rejected')", name=op.f("ck_cs_agent_actions_action")
        ),
        foreign_key("cs_agent_actions", "suggestion_id", "cs_suggestions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cs_agent_actions")),
    )
    for table, column in INDEXES:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def downgrade() -> None:
    for table, column in reversed(INDEXES):
        op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
    for table in reversed(TABLES):
        op.drop_table(table)
