"""several API replicas: which replica scheduled a trial, and cancels asked on a follower

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMNs (no batch table rebuild: the trials table keeps 0002's AUTOINCREMENT)
    op.add_column("trials", sa.Column("scheduled_by", sa.String(length=64), nullable=True))
    op.add_column("trials", sa.Column("cancel_requested", sa.Text(), nullable=True))
    # the leader looks for pending requests every second: an index, so it never scans the trials
    op.create_index("ix_trials_cancel_requested", "trials", ["cancel_requested"])


def downgrade() -> None:
    op.drop_index("ix_trials_cancel_requested", table_name="trials")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("cancel_requested")
        batch.drop_column("scheduled_by")
