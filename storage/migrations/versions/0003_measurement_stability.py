"""Measurements record whether the stop rule converged and the spread it ended with.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stable", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("spread", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.drop_column("spread")
        batch_op.drop_column("stable")
