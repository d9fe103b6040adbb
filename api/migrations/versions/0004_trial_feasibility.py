"""trial feasibility under the study's constraints (and why not)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMNs (no batch table rebuild: the trials table keeps 0002's AUTOINCREMENT);
    # null: not judged yet (rows of older versions are judged from their values on read)
    op.add_column("trials", sa.Column("feasible", sa.Boolean(), nullable=True))
    op.add_column("trials", sa.Column("infeasible_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("infeasible_reason")
        batch.drop_column("feasible")
