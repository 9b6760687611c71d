"""The first industrial-QC schema: inspections, their defects, operator feedback and run-time settings

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
        "qc_inspections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("defect_class", sa.String(length=64), nullable=False),
        sa.Column("class_scores", sa.JSON(), nullable=False),
        sa.Column("pred_score", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("anomaly_map", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.CheckConstraint("pred_score >= 0 AND pred_score <= 1", name=op.f("ck_qc_inspections_pred_score")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qc_inspections")),
    )
    with op.batch_alter_table("qc_inspections", schema=None) as batch_op:
        batch_op.create_index(
            "ix_qc_inspections_line_station_time", ["line_id", "station_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_qc_inspections_time", ["created_at"], unique=False)

    op.create_table(
        "qc_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_qc_settings")),
    )
    op.create_table(
        "qc_defects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("class_name", sa.String(length=64), nullable=False),
        sa.Column("x0", sa.Float(), nullable=False),
        sa.Column("y0", sa.Float(), nullable=False),
        sa.Column("x1", sa.Float(), nullable=False),
        sa.Column("y1", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inspection_id"], ["qc_inspections.id"], name=op.f("fk_qc_defects_inspection_id_qc_inspections")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qc_defects")),
    )
    with op.batch_alter_table("qc_defects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_qc_defects_inspection_id"), ["inspection_id"], unique=False)

    op.create_table(
        "qc_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("verdict IN ('confirmed', 'false_alarm')", name=op.f("ck_qc_feedback_verdict")),
        sa.ForeignKeyConstraint(
            ["inspection_id"], ["qc_inspections.id"], name=op.f("fk_qc_feedback_inspection_id_qc_inspections")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qc_feedback")),
    )
    with op.batch_alter_table("qc_feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_qc_feedback_inspection_id"), ["inspection_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("qc_feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_qc_feedback_inspection_id"))

    op.drop_table("qc_feedback")
    with op.batch_alter_table("qc_defects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_qc_defects_inspection_id"))

    op.drop_table("qc_defects")
    op.drop_table("qc_settings")
    with op.batch_alter_table("qc_inspections", schema=None) as batch_op:
        batch_op.drop_index("ix_qc_inspections_time")
        batch_op.drop_index("ix_qc_inspections_line_station_time")

    op.drop_table("qc_inspections")
