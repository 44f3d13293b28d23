"""Canary deployments: a stable and a canary variant with a percentage, per-arm feedback, promote/rollback events.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CANARY_COLUMNS = ("canary_variant_id", "canary_variant_sha256", "canary_ref", "canary_percent", "rollout")


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("canary_variant_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("canary_variant_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("canary_ref", sa.String(length=520), nullable=True))
        batch.add_column(sa.Column("canary_percent", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("rollout", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "deployment_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deployment_events_deployment_id_id", "deployment_events", ["deployment_id", "id"])
    op.create_table(
        "served_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("arm", sa.String(length=20), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("deployment_id", "request_id", name="uq_served_feedback_request"),
    )


def downgrade() -> None:
    op.drop_table("served_feedback")
    op.drop_index("ix_deployment_events_deployment_id_id", table_name="deployment_events")
    op.drop_table("deployment_events")
    with op.batch_alter_table("deployments") as batch:
        for column in reversed(CANARY_COLUMNS):
            batch.drop_column(column)
