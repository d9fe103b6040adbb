"""dataset kind: classification (text and label columns) or sft (prompt / completion or chat
messages records, for causal_lm studies)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN; every dataset uploaded so far is a classification one
    op.add_column(
        "datasets",
        sa.Column("kind", sa.String(length=16), nullable=False, server_default="classification"),
    )


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("kind")
