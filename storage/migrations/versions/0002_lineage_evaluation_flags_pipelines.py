"""Variant lineage facts (dataset, info), evaluation flags and predictions, pipeline steps.

New NOT NULL columns get server defaults so existing rows migrate.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 20:04:44.625774
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_accuracy', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('tolerance_points', sa.Float(), nullable=False, server_default='1.0'))
        batch_op.add_column(sa.Column('flagged', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('predictions', sa.JSON(), nullable=False, server_default='[]'))

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pipeline', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('evaluation', sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_pipeline'), ['pipeline'], unique=False)

    with op.batch_alter_table('variants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dataset_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('info', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.create_index(batch_op.f('ix_variants_dataset_id'), ['dataset_id'], unique=False)
        batch_op.create_foreign_key('fk_variants_dataset_id', 'datasets', ['dataset_id'], ['id'], ondelete='SET NULL')



def downgrade() -> None:
    with op.batch_alter_table('variants', schema=None) as batch_op:
        batch_op.drop_constraint('fk_variants_dataset_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_variants_dataset_id'))
        batch_op.drop_column('info')
        batch_op.drop_column('dataset_id')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_pipeline'))
        batch_op.drop_column('evaluation')
        batch_op.drop_column('priority')
        batch_op.drop_column('pipeline')

    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_column('predictions')
        batch_op.drop_column('flagged')
        batch_op.drop_column('tolerance_points')
        batch_op.drop_column('parent_accuracy')

