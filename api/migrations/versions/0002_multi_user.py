"""multi-user service: ids never reused, roles, token lifecycle, datasets

* SQLite: every table is recreated with AUTOINCREMENT, so the id of a deleted row (the highest
  one included) is never handed out again. PostgreSQL's SERIAL sequences never reuse ids.
* users.role (admin | user); existing users become "user".
* api_tokens: scheme (existing rows keep their plain sha256, "sha256", and are rehashed with the
  server secret on first use), name, expires_at, last_used_at.
* datasets (uploaded files) and studies.dataset_id.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("users", "api_tokens", "studies", "events", "trials", "checkpoints", "trial_reports")


def _autoincrement(on: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": on}
        ):
            pass


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="user")
        )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scheme", sa.String(length=8), nullable=False, server_default="sha256")
        )
        batch_op.add_column(sa.Column("name", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("encoding", sa.String(length=32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("text_column", sa.JSON(), nullable=False),
        sa.Column("label_column", sa.String(length=200), nullable=False),
        sa.Column("label_counts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_datasets_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_datasets_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_studies_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_studies_dataset_id_datasets"),
            "datasets",
            ["dataset_id"],
            ["id"],
            ondelete="SET NULL",
        )
    _autoincrement(
        True
    )  # last: a batch operation that recreates a table would drop AUTOINCREMENT again


def downgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_studies_dataset_id_datasets"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_studies_dataset_id"))
        batch_op.drop_column("dataset_id")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_user_id"))
    op.drop_table("datasets")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("name")
        batch_op.drop_column("scheme")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("role")
    _autoincrement(False)
