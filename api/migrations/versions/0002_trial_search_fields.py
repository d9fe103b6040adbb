"""trial kinds (search / baseline), held-out test values, compute used, PBT lineage

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='search'))
        batch.add_column(sa.Column('label', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('test_values', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('epochs_trained', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('lineage', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.drop_column('lineage')
        batch.drop_column('epochs_trained')
        batch.drop_column('test_values')
        batch.drop_column('label')
        batch.drop_column('kind')
