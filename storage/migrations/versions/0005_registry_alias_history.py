"""Alias history of the MLflow model registry (promote / rollback), so a promote can be undone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 23:34:15.165390
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alias_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tracking_uri', sa.String(length=500), nullable=False),
    sa.Column('registered_model', sa.String(length=256), nullable=False),
    sa.Column('alias', sa.String(length=256), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('previous_version', sa.String(length=40), nullable=True),
    sa.Column('undone', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('alias_events', schema=None) as batch_op:
        batch_op.create_index('ix_alias_events_model_alias', ['tracking_uri', 'registered_model', 'alias'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('alias_events', schema=None) as batch_op:
        batch_op.drop_index('ix_alias_events_model_alias')

    op.drop_table('alias_events')
