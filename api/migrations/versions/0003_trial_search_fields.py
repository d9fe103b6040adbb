"""trial kinds (search / baseline), held-out test values, compute used, PBT lineage

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
    # plain ADD COLUMNs (no batch table rebuild: the trials table keeps 0002's AUTOINCREMENT)
    op.add_column(
        "trials", sa.Column("kind", sa.String(length=16), nullable=False, server_default="search")
    )
    op.add_column("trials", sa.Column("label", sa.String(length=64), nullable=True))
    op.add_column("trials", sa.Column("test_values", sa.JSON(), nullable=True))
    op.add_column(
        "trials", sa.Column("epochs_trained", sa.Float(), nullable=False, server_default="0")
    )
    op.add_column("trials", sa.Column("lineage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("lineage")
        batch.drop_column("epochs_trained")
        batch.drop_column("test_values")
        batch.drop_column("label")
        batch.drop_column("kind")
