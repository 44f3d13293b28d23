"""Two variants on the same inputs: one text side by side, or a whole test split with McNemar's test.

McNemar's test asks whether two classifiers scored on the same examples differ in accuracy more than chance
would explain. Only the examples exactly one of them gets right count. With fewer than 25 of those the exact
binomial test is used, otherwise the chi-square test with continuity correction (statsmodels). The verdict (is the
difference beyond chance at the significance level, and which variant is then better) is decided here, so the tab,
the HTTP endpoints and scripts all read the same one; the workbench only words it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from jobs.ml.data import split_examples
from jobs.playground.predict import Prediction, predict_text, timed_probabilities
from jobs.playground.predictor_cache import CACHE, PredictorCache
from storage import catalog
from storage.errors import InvalidInput

EXACT_BELOW = 25  # discordant pairs under which McNemar's exact binomial form is used
SIGNIFICANCE = 0.05  # the level below which McNemar's p-value counts as a real difference


@dataclass(frozen=True)
class SideBySide:
    a: Prediction
    b: Prediction

    @property
    def agree(self) -> bool:
        return self.a.label == self.b.label


@dataclass(frozen=True)
class McNemar:
    a_only: int  # examples A gets right and B wrong
    b_only: int
    statistic: float
    p_value: float
    exact: bool


@dataclass(frozen=True)
class Verdict:
    """What McNemar's test says at a significance level: a difference beyond chance, and which variant is better."""

    significant: bool  # p_value < alpha
    better: Literal["a", "b"] | None  # the more accurate variant when the difference is significant, else None
    p_value: float
    alpha: float


def verdict(accuracy_a: float, accuracy_b: float, test: McNemar, alpha: float = SIGNIFICANCE) -> Verdict:
    significant = test.p_value < alpha
    better = ("a" if accuracy_a > accuracy_b else "b") if significant else None
    return Verdict(significant, better, test.p_value, alpha)


@dataclass(frozen=True)
class Disagreement:
    index: int  # position in the examples scored
    text: str
    gold: str
    label_a: str
    confidence_a: float
    label_b: str
    confidence_b: float

    @property
    def confidence_gap(self) -> float:
        """How far apart the two confidences are: |A's confidence in its label − B's in its label|."""
        return abs(self.confidence_a - self.confidence_b)


@dataclass(frozen=True)
class TestSetComparison:
    variant_a: int
    variant_b: int
    dataset_id: int
    split: str
    num_examples: int
    accuracy_a: float
    accuracy_b: float
    agreement: float
    mcnemar: McNemar
    ms_per_example_a: float  # tokenization + forward, batched, averaged over the examples
    ms_per_example_b: float
    disagreements: list[Disagreement]  # sorted by confidence gap, largest first
    verdict: Verdict  # McNemar's test read at the significance level


def compare_text(variant_a: int | str, variant_b: int | str, text: str, device: str = "cpu",
                 cache: PredictorCache = CACHE) -> SideBySide:
    return SideBySide(predict_text(variant_a, text, device, cache), predict_text(variant_b, text, device, cache))


def mcnemar_test(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("McNemar's test needs both variants scored on the same examples")
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    a_only, b_only = table[0][1], table[1][0]
    if a_only + b_only == 0:
        return McNemar(0, 0, 0.0, 1.0, True)  # identical outcomes: no evidence of any difference
    exact = a_only + b_only < EXACT_BELOW
    result = mcnemar(table, exact=exact, correction=True)
    return McNemar(a_only, b_only, float(result.statistic), float(result.pvalue), exact)


def _label_names(predictor) -> list[str]:
    return [str(x) for x in predictor.labels]


def compare_on_split(variant_a: int | str, variant_b: int | str, dataset: int | str, split: str = "test", limit: int = 0,
                     batch_size: int = 32, device: str = "cpu", progress: Callable[[int, int], None] | None = None,
                     cache: PredictorCache = CACHE, alpha: float = SIGNIFICANCE) -> TestSetComparison:
    """Both variants on the same examples, in alternating batches so their latencies see the same machine state;
    the verdict reads McNemar's test at the significance level `alpha`."""
    a_id, b_id = catalog.get_variant(variant_a).id, catalog.get_variant(variant_b).id
    data = catalog.get_dataset(dataset)
    if split not in data.split_sizes:
        raise InvalidInput(f"dataset {data.name!r} has no split {split!r}; it has {', '.join(data.split_sizes)}")
    examples = split_examples(data, split, limit)
    if not len(examples):
        raise InvalidInput(f"the {split} split of dataset {data.name!r} is empty")

    probs: dict[int, list[np.ndarray]] = {a_id: [], b_id: []}
    elapsed_ms = {a_id: 0.0, b_id: 0.0}
    labels: dict[int, list[str]] = {}
    for i in range(0, len(examples), batch_size):
        if progress is not None:
            progress(i, len(examples))
        chunk = examples.texts[i : i + batch_size]
        order = (a_id, b_id) if (i // batch_size) % 2 == 0 else (b_id, a_id)
        for vid in order:
            with cache.use(vid, device) as predictor:
                batch_probs, _, ms = timed_probabilities(predictor, chunk)
                labels[vid] = _label_names(predictor)
            elapsed_ms[vid] += ms
            probs[vid].append(batch_probs)
    if progress is not None:
        progress(len(examples), len(examples))
    if set(labels[a_id]) != set(labels[b_id]):
        raise InvalidInput(f"variants {a_id} and {b_id} predict different labels "
                           f"({', '.join(labels[a_id])} vs {', '.join(labels[b_id])}); compare variants of one task")
    examples.label_ids(labels[a_id])  # refuses gold labels the variants do not know, with the reason

    p_a, p_b = np.concatenate(probs[a_id]), np.concatenate(probs[b_id])
    pred_a = [labels[a_id][k] for k in p_a.argmax(1)]
    pred_b = [labels[b_id][k] for k in p_b.argmax(1)]
    a_correct = [p == g for p, g in zip(pred_a, examples.labels, strict=True)]
    b_correct = [p == g for p, g in zip(pred_b, examples.labels, strict=True)]
    disagreements = [
        Disagreement(i, examples.texts[i], examples.labels[i], pred_a[i], float(p_a[i].max()), pred_b[i], float(p_b[i].max()))
        for i in range(len(examples)) if pred_a[i] != pred_b[i]
    ]
    disagreements.sort(key=lambda d: d.confidence_gap, reverse=True)
    n = len(examples)
    accuracy_a, accuracy_b = sum(a_correct) / n, sum(b_correct) / n
    test = mcnemar_test(a_correct, b_correct)
    return TestSetComparison(
        variant_a=a_id, variant_b=b_id, dataset_id=data.id, split=split, num_examples=n,
        accuracy_a=accuracy_a, accuracy_b=accuracy_b,
        agreement=sum(x == y for x, y in zip(pred_a, pred_b, strict=True)) / n,
        mcnemar=test,
        ms_per_example_a=elapsed_ms[a_id] / n, ms_per_example_b=elapsed_ms[b_id] / n,
        disagreements=disagreements,
        verdict=verdict(accuracy_a, accuracy_b, test, alpha),
    )
