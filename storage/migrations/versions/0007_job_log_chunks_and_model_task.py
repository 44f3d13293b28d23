"""Job logs as appended chunks in their own table (streamed, paged, tail-able; no 2 MB column rewritten on every
line), and the task each model does (text-classification for every model so far).

Existing logs become each job's first chunk; the `jobs.log` column is dropped. Downgrading joins the chunks back.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_log_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_log_chunks_job_id_id", "job_log_chunks", ["job_id", "id"])
    op.execute(
        "INSERT INTO job_log_chunks (job_id, text, created_at) "
        "SELECT id, log, created_at FROM jobs WHERE log IS NOT NULL AND log <> '' ORDER BY id"
    )
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("log")
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("task", sa.String(length=60), nullable=False, server_default="text-classification"))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("task")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("log", sa.Text(), nullable=False, server_default=""))
    rows = op.get_bind().execute(sa.text("SELECT job_id, text FROM job_log_chunks ORDER BY job_id, id")).fetchall()
    logs: dict[int, list[str]] = {}
    for job_id, text in rows:
        logs.setdefault(job_id, []).append(text)
    for job_id, parts in logs.items():
        op.get_bind().execute(sa.text("UPDATE jobs SET log = :log WHERE id = :id"), {"log": "".join(parts), "id": job_id})
    op.drop_index("ix_job_log_chunks_job_id_id", table_name="job_log_chunks")
    op.drop_table("job_log_chunks")
