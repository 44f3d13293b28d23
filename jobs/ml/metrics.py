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


# ---- validity: is a classifier better than a constant answer? ----------------------------------------------------

ONE_CLASS_SHARE = 0.95  # predicting one label for this share of the examples (or more) is "one class for all"


def accuracy_interval(correct: int, total: int) -> tuple[float, float]:
    """Wilson 95 % interval of an accuracy (statsmodels): honest at small n and near 0 or 1, unlike the normal one."""
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(correct, total, alpha=0.05, method="wilson")
    return float(low), float(high)


def model_validity(confusion: dict[str, Any]) -> dict[str, Any]:
    """The majority-class baseline of the same examples, the accuracy's interval, per-class recall, and whether
    the classifier is degenerate (with the reason), from a confusion matrix (rows gold, columns predicted).

    Degenerate: it predicts one label for nearly every example although the examples are not nearly all of one
    label, or the lower end of its accuracy's interval does not clear always answering the most common label.
    A model like that can look fine beside an equally broken parent, so the check needs no parent.
    """
    labels = [str(x) for x in confusion.get("labels", [])]
    matrix = confusion.get("matrix") or []
    total = sum(sum(row) for row in matrix)
    if not labels or total == 0:
        raise ValueError("validity needs a confusion matrix with at least one example")
    gold = [sum(row) for row in matrix]
    predicted = [sum(row[j] for row in matrix) for j in range(len(labels))]
    correct = sum(matrix[i][i] for i in range(len(labels)))
    majority = max(range(len(labels)), key=lambda i: gold[i])
    majority_accuracy = gold[majority] / total
    low, high = accuracy_interval(correct, total)
    top = max(range(len(labels)), key=lambda j: predicted[j])
    reason = None
    if predicted[top] / total >= ONE_CLASS_SHARE and majority_accuracy < ONE_CLASS_SHARE:
        reason = f"predicts {labels[top]!r} for {predicted[top] / total:.0%} of the {total} examples"
    elif low <= majority_accuracy:
        reason = (f"not better than always answering {labels[majority]!r} ({majority_accuracy:.1%}): accuracy "
                  f"{correct / total:.1%}, 95% interval {low:.1%}-{high:.1%} on {total} examples")
    return {
        "majority_accuracy": majority_accuracy, "majority_label": labels[majority],
        "accuracy_low": low, "accuracy_high": high,
        "per_class_recall": {lab: (matrix[i][i] / gold[i] if gold[i] else None) for i, lab in enumerate(labels)},
        "degenerate": reason is not None, "degenerate_reason": reason,
    }


def degenerate_advice(num_train: int, epochs: int, learning_rate: float) -> str:
    """What to change when a fine-tune ends degenerate (it learned the label prior, not the task)."""
    return (f"it was trained on {num_train} examples for {epochs} epoch(s) at learning rate {learning_rate:g}: "
            "give it more examples (or all of the training split), more epochs, or a learning rate 2-5x higher "
            "(or lower if the loss diverged)")
