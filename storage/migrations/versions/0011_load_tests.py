"""Load tests: throughput and latency percentiles per concurrency against a deployment, with the hardware fingerprint.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "load_tests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=False),
        sa.Column("variant_ids", sa.JSON(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("split", sa.String(length=20), nullable=True),
        sa.Column("device", sa.String(length=40), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("texts_per_request", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("stopped_by", sa.String(length=20), nullable=False),
        sa.Column("requests_per_s", sa.Float(), nullable=False),
        sa.Column("texts_per_s", sa.Float(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=True),
        sa.Column("p95_ms", sa.Float(), nullable=True),
        sa.Column("p99_ms", sa.Float(), nullable=True),
        sa.Column("mean_ms", sa.Float(), nullable=True),
        sa.Column("load", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.JSON(), nullable=False),
        sa.Column("fingerprint_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_load_tests_job_id", "load_tests", ["job_id"])
    op.create_index("ix_load_tests_deployment_id", "load_tests", ["deployment_id"])
    op.create_index("ix_load_tests_variant_id", "load_tests", ["variant_id"])
    op.create_index("ix_load_tests_fingerprint_hash", "load_tests", ["fingerprint_hash"])


def downgrade() -> None:
    op.drop_index("ix_load_tests_fingerprint_hash", table_name="load_tests")
    op.drop_index("ix_load_tests_variant_id", table_name="load_tests")
    op.drop_index("ix_load_tests_deployment_id", table_name="load_tests")
    op.drop_index("ix_load_tests_job_id", table_name="load_tests")
    op.drop_table("load_tests")
