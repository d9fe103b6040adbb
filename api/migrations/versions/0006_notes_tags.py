"""notes and tags on studies and trials (editable by their owner, searchable in the study list)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMNs (no batch table rebuild: the trials table keeps 0002's AUTOINCREMENT)
    for table in ("studies", "trials"):
        op.add_column(table, sa.Column("notes", sa.Text(), nullable=True))
        op.add_column(table, sa.Column("tags", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("trials", "studies"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("tags")
            batch.drop_column("notes")
