"""Traffic-split experiments and their requests with per-request feedback (the A/B playground).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 22:36:02.120535
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('experiments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('variant_a_id', sa.Integer(), nullable=False),
    sa.Column('variant_b_id', sa.Integer(), nullable=False),
    sa.Column('split_b_percent', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['variant_a_id'], ['variants.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['variant_b_id'], ['variants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_experiments_variant_a_id'), ['variant_a_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiments_variant_b_id'), ['variant_b_id'], unique=False)

    op.create_table('traffic_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('arm', sa.String(length=1), nullable=False),
    sa.Column('variant_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('feedback', sa.String(length=10), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('feedback_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['variant_id'], ['variants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('traffic_requests', schema=None) as batch_op:
        batch_op.create_index('ix_traffic_requests_experiment_arm', ['experiment_id', 'arm'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('traffic_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_traffic_requests_experiment_arm')

    op.drop_table('traffic_requests')
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_experiments_variant_b_id'))
        batch_op.drop_index(batch_op.f('ix_experiments_variant_a_id'))

    op.drop_table('experiments')
