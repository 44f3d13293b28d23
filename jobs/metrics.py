"""Classification metrics (scikit-learn) shared by training, evaluation and the later comparisons."""

from __future__ import annotations

from typing import Any, Sequence


def classification_metrics(gold: Sequence[int], predicted: Sequence[int], label_names: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    labels = list(range(len(label_names)))
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        "confusion": {
            "labels": [str(n) for n in label_names],
            "matrix": confusion_matrix(gold, predicted, labels=labels).tolist(),  # rows gold, columns predicted
        },
    }


def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    if len(a) != len(b) or not a:
        raise ValueError("agreement needs two equally long, non-empty prediction lists")
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
