"""Validity of evaluations (majority-class baseline, Wilson interval, per-class recall, degenerate) and of
measurements (raw samples, the machine's load, quick-trial marker).

Existing evaluations are backfilled from their confusion matrices with the rule of this revision (written out
here rather than imported, so the migration stays what it was when later code changes); existing measurements
keep no samples, so they show no speedup interval and are never "comparable" until measured again.

Revision ID: 0006
Revises: 0005
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ONE_CLASS_SHARE = 0.95


def _validity(confusion: dict) -> dict | None:
    from statsmodels.stats.proportion import proportion_confint

    labels, matrix = confusion.get("labels") or [], confusion.get("matrix") or []
    n = sum(sum(row) for row in matrix)
    if not labels or n == 0:
        return None
    gold = [sum(row) for row in matrix]
    predicted = [sum(row[j] for row in matrix) for j in range(len(labels))]
    correct = sum(matrix[i][i] for i in range(len(labels)))
    majority = max(range(len(labels)), key=lambda i: gold[i])
    low, high = proportion_confint(correct, n, alpha=0.05, method="wilson")
    top = max(range(len(labels)), key=lambda j: predicted[j])
    reason = None
    if predicted[top] / n >= ONE_CLASS_SHARE and gold[majority] / n < ONE_CLASS_SHARE:
        reason = f"predicts {labels[top]!r} for {predicted[top] / n:.0%} of the {n} examples"
    elif low <= gold[majority] / n:
        reason = (f"not better than always answering {labels[majority]!r} ({gold[majority] / n:.1%}): accuracy "
                  f"{correct / n:.1%}, 95% interval {low:.1%}-{high:.1%} on {n} examples")
    return {
        "majority_accuracy": gold[majority] / n, "majority_label": str(labels[majority]),
        "accuracy_low": float(low), "accuracy_high": float(high),
        "per_class_recall": {str(lab): (matrix[i][i] / gold[i] if gold[i] else None) for i, lab in enumerate(labels)},
        "degenerate": reason is not None, "degenerate_reason": reason,
    }


def upgrade() -> None:
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("majority_accuracy", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("majority_label", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("accuracy_low", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("accuracy_high", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("per_class_recall", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("degenerate", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("degenerate_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("samples_ms", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("load", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("rough", sa.Boolean(), nullable=False, server_default=sa.false()))

    bind = op.get_bind()
    evaluations = sa.table("evaluations", sa.column("id", sa.Integer), sa.column("confusion", sa.JSON),
                           sa.column("majority_accuracy", sa.Float), sa.column("majority_label", sa.String),
                           sa.column("accuracy_low", sa.Float), sa.column("accuracy_high", sa.Float),
                           # JSON, not Text: PostgreSQL refuses a VARCHAR into a json column (SQLite stores the
                           # same json.dumps text either way)
                           sa.column("per_class_recall", sa.JSON), sa.column("degenerate", sa.Boolean),
                           sa.column("degenerate_reason", sa.Text))
    for row in bind.execute(sa.select(evaluations.c.id, evaluations.c.confusion)).all():
        confusion = row.confusion if isinstance(row.confusion, dict) else json.loads(row.confusion or "{}")
        values = _validity(confusion)
        if values is not None:
            bind.execute(evaluations.update().where(evaluations.c.id == row.id).values(**values))


def downgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.drop_column("rough")
        batch_op.drop_column("load")
        batch_op.drop_column("samples_ms")
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        for column in ("degenerate_reason", "degenerate", "per_class_recall", "accuracy_high", "accuracy_low",
                       "majority_label", "majority_accuracy"):
            batch_op.drop_column(column)
