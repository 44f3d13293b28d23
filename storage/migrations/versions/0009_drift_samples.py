"""Drift samples: what model servers saw (text length, unknown-token rate, label, confidence), sampled per request,
and the cached reference (a dataset's test split run through a variant) that a live window is compared with.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(length=20), nullable=True),
        sa.Column("sampled_at", sa.DateTime(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("unknown_token_rate", sa.Float(), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_drift_samples_deployment_id_id", "drift_samples", ["deployment_id", "id"])
    op.create_index("ix_drift_samples_deployment_sampled_at", "drift_samples", ["deployment_id", "sampled_at"])
    op.create_table(
        "drift_references",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("variant_sha256", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("dataset_sha256", sa.String(length=64), nullable=False),
        sa.Column("split", sa.String(length=20), nullable=False),
        sa.Column("num_examples", sa.Integer(), nullable=False),
        sa.Column("samples", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("variant_sha256", "dataset_id", "split", name="uq_drift_references_variant_dataset_split"),
    )


def downgrade() -> None:
    op.drop_table("drift_references")
    op.drop_index("ix_drift_samples_deployment_sampled_at", table_name="drift_samples")
    op.drop_index("ix_drift_samples_deployment_id_id", table_name="drift_samples")
    op.drop_table("drift_samples")
