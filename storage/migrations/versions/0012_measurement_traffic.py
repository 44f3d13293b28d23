"""Measurements on real traffic: a nullable JSON column `traffic` with the length distribution of the batches.

A grid cell (fixed batch x length) keeps NULL; a real-traffic cell (batches drawn from the test split, padded to
their longest text) has seq_len 0 and records here what its inputs were: token-length quantiles and histogram,
number of texts, padding waste and whether length bucketing was on. No existing JSON column fits: `load` is the
machine's load, `fingerprint` the machine's identity (its hash groups results, so it must not vary per cell).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traffic", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.drop_column("traffic")
