"""Drift of a deployment: its sampled live traffic (`storage.drift`, written by `jobs.serving.drift_sampling`)
compared with a reference, the test split of a dataset run through the same variant.

- Lengths (tokens) and confidences: the population stability index over the reference's quantile bins.
- The label mix: a chi-square test of homogeneity of the two label counts (scipy.stats.chi2_contingency).
- Unknown-token rates: the mean of each side, shown (None where the tokenizer cannot tell).

PSI at or above 0.2 is an alarm, from 0.1 a watch; a label-mix p-value below 0.01 is an alarm (`Thresholds`).
Below `min_samples` live samples no figure is given: a handful of requests says nothing about a distribution.
The reference is computed once per variant (by its files' sha256) and dataset, and cached in the database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

import numpy as np

from storage.entities import Dataset, Deployment, DriftSample, Variant
from storage.errors import InvalidInput

DEFAULT_WINDOW = 1000  # the newest samples compared
REFERENCE_SPLIT = "test"
REFERENCE_LIMIT = 2000  # examples of the split run through the model (a fixed stratified sample beyond this)
PSI_BINS = 10
PSI_EPSILON = 1e-4  # the share given to an empty bin, so ln(live/reference) stays finite
LEVELS = ("ok", "watch", "alarm")


@dataclass(frozen=True)
class Thresholds:
    psi_watch: float = 0.1
    psi_alarm: float = 0.2
    chi2_p_alarm: float = 0.01
    min_samples: int = 50

    def __post_init__(self) -> None:
        if not 0 <= self.psi_watch <= self.psi_alarm:
            raise InvalidInput(f"the PSI thresholds need 0 <= watch <= alarm, not {self.psi_watch:g} and "
                               f"{self.psi_alarm:g}", inputs=["psi_watch", "psi_alarm"])
        if not 0 < self.chi2_p_alarm < 1:
            raise InvalidInput(f"the label-mix p-value threshold is between 0 and 1, not {self.chi2_p_alarm:g}",
                               inputs=["chi2_p_alarm"])
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise InvalidInput(f"the minimum window is a whole number of samples of at least 1, not "
                               f"{self.min_samples!r}", inputs=["min_samples"])

    def psi_level(self, value: float) -> str:
        return "alarm" if value >= self.psi_alarm else "watch" if value >= self.psi_watch else "ok"


# ---- the statistics ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Psi:
    """The population stability index of `live` against `reference`, with the bins it was computed over."""

    value: float
    bins: list[str]  # "< 12", "12 – 15", "≥ 40": bin i holds values from edge i-1 (included) to edge i
    reference_shares: list[float]
    live_shares: list[float]


def quantile_edges(reference: Sequence[float], bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (repeated values collapse); a constant reference gets one bin
    for its value and one each side of it, so a live value off it still lands elsewhere."""
    values = np.asarray(reference, dtype=float)
    if values.size == 0:
        raise InvalidInput("the reference has no values to bin")
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    if values.min() == values.max():
        edges = np.array([values[0], np.nextafter(values[0], np.inf)])
    return edges


def bin_shares(values: Sequence[float], edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, np.asarray(values, dtype=float), side="right"),
                         minlength=len(edges) + 1)
    return counts / max(counts.sum(), 1)


def psi(reference: Sequence[float], live: Sequence[float], bins: int = PSI_BINS,
        epsilon: float = PSI_EPSILON, whole: bool = False) -> Psi:
    """PSI = sum over bins of (live - reference) * ln(live / reference), shares of each side per bin, bins at the
    reference's quantiles, an empty bin's share raised to `epsilon`. `whole`: the values are whole numbers (token
    counts), and the bins are named by the numbers they hold.

    Written here because none of the well-kept statistics libraries (scipy, statsmodels, scikit-learn) has it; the
    monitoring frameworks that do (evidently, nannyml) would bring a whole platform for these ten lines."""
    if len(live) == 0:
        raise InvalidInput("there are no live values to compare")
    edges = quantile_edges(reference, bins)
    if whole:  # x >= 4.6 is x >= 5 for a whole number: edges between the same two numbers make empty bins
        edges = np.unique(np.ceil(edges))
    ref_shares, live_shares = bin_shares(reference, edges), bin_shares(live, edges)
    ref_e, live_e = np.maximum(ref_shares, epsilon), np.maximum(live_shares, epsilon)
    value = float(np.sum((live_e - ref_e) * np.log(live_e / ref_e)))
    return Psi(value, bin_labels(edges, whole), ref_shares.tolist(), live_shares.tolist())


def bin_labels(edges: np.ndarray, whole: bool = False) -> list[str]:
    def show(x: float) -> str:
        return f"{x:.3g}" if not float(x).is_integer() else f"{int(x)}"

    if len(edges) == 2 and np.nextafter(edges[0], np.inf) == edges[1]:  # a constant reference
        return [f"< {show(edges[0])}", f"= {show(edges[0])}", f"> {show(edges[0])}"]
    if whole:  # bin [lo, hi) holds the whole numbers lo .. hi - 1 (psi rounded the edges up)
        starts = [int(x) for x in edges]
        labels = [f"≤ {starts[0] - 1}"]
        labels += [f"{lo}" if hi - lo == 1 else f"{lo}–{hi - 1}" for lo, hi in zip(starts[:-1], starts[1:], strict=True)]
        return labels + [f"≥ {starts[-1]}"]
    labels = [f"< {show(edges[0])}"]
    labels += [f"{show(lo)} – {show(hi)}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return labels + [f"≥ {show(edges[-1])}"]


@dataclass(frozen=True)
class LabelTest:
    """Chi-square test that the live label mix comes from the same distribution as the reference's."""

    statistic: float
    p_value: float
    dof: int
    labels: list[str]
    reference_counts: list[int]
    live_counts: list[int]


def label_test(reference: Sequence[str], live: Sequence[str], labels: Sequence[str] = ()) -> LabelTest:
    """scipy's chi-square test of homogeneity on the 2 x K table of label counts, without Yates' correction (it
    applies to 2 x 2 tables only, so with it a two-label model would be judged on another scale than the rest).
    Labels neither side predicted are left out (they add nothing); with one label left there is nothing to test
    (statistic 0, p 1)."""
    from scipy.stats import chi2_contingency

    if len(reference) == 0 or len(live) == 0:
        raise InvalidInput("a label mix needs labels on both sides")
    order = list(dict.fromkeys([*map(str, labels), *sorted(set(map(str, reference)) | set(map(str, live)))]))
    ref_counts = [sum(1 for x in reference if x == label) for label in order]
    live_counts = [sum(1 for x in live if x == label) for label in order]
    kept = [i for i, (r, v) in enumerate(zip(ref_counts, live_counts, strict=True)) if r + v > 0]
    if len(kept) < 2:
        return LabelTest(0.0, 1.0, 0, order, ref_counts, live_counts)
    table = np.array([[ref_counts[i] for i in kept], [live_counts[i] for i in kept]])
    result = chi2_contingency(table, correction=False)
    return LabelTest(float(result.statistic), float(result.pvalue), int(result.dof), order, ref_counts, live_counts)


def mean_rate(rates: Sequence[float | None]) -> float | None:
    known = [r for r in rates if r is not None]
    return float(np.mean(known)) if known else None


# ---- the reference ----------------------------------------------------------------------------------------------


def reference_dataset(deployment: Deployment, variant: Variant | None) -> Dataset | None:
    """The dataset chosen at deploy, else the one the variant (or the nearest of its ancestors) was fine-tuned on,
    else the newest one it (or an ancestor) was evaluated on; None when the records do not tell."""
    from storage import catalog
    from storage.errors import NotFound

    chosen = (deployment.config or {}).get("reference_dataset_id")
    if chosen is not None:
        return catalog.get_dataset(chosen)
    lineage: list[Variant] = []
    current = variant
    while current is not None and current.id not in [v.id for v in lineage]:
        lineage.append(current)
        try:
            current = catalog.get_variant(current.parent_id) if current.parent_id is not None else None
        except NotFound:
            current = None
    for candidate in lineage:
        if candidate.dataset_id is not None:
            return _dataset_or_none(candidate.dataset_id)
    for candidate in lineage:
        evaluations = [e for e in catalog.list_evaluations(candidate.id) if e.split == REFERENCE_SPLIT]
        if evaluations:
            return _dataset_or_none(evaluations[-1].dataset_id)
    return None


def _dataset_or_none(dataset_id: int) -> Dataset | None:
    from storage import catalog
    from storage.errors import NotFound

    try:
        return catalog.get_dataset(dataset_id)
    except NotFound:
        return None


def reference_samples(variant: Variant, dataset: Dataset, device: str = "cpu",
                      limit: int = REFERENCE_LIMIT) -> dict[str, list]:
    """The dataset's test split through the variant: tokens, unknown-token rate, label and confidence per example.
    Cached by the variant's sha256 and the dataset; computed (the model runs here) only the first time."""
    from jobs.ml.data import split_examples
    from jobs.runtimes import load_predictor
    from storage import drift as store

    cached = store.get_reference(variant.sha256, dataset.id, dataset.sha256, REFERENCE_SPLIT)
    if cached is not None:
        return cached
    texts = split_examples(dataset, REFERENCE_SPLIT, limit).texts
    if not texts:
        raise InvalidInput(f"dataset {dataset.name!r} has an empty {REFERENCE_SPLIT} split: choose another reference")
    predictor = load_predictor(variant, device)
    try:
        probabilities = predictor.predict(texts)
        samples = {
            "tokens": predictor.token_counts(texts),
            "unknown_token_rate": predictor.unknown_token_rates(texts),
            "label": [predictor.labels[int(i)] for i in probabilities.argmax(axis=1)],
            "confidence": [float(p) for p in probabilities.max(axis=1)],
        }
    finally:
        predictor.close()
    store.put_reference(variant.sha256, dataset.id, dataset.sha256, REFERENCE_SPLIT, samples)
    return samples


# ---- the report -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftReport:
    deployment_id: int
    variant_id: int
    status: str  # not_enough | no_reference | ok | watch | alarm
    message: str  # one line: the verdict, or why there is none
    live_count: int
    min_samples: int
    thresholds: Thresholds
    dataset_id: int | None = None
    dataset_name: str | None = None
    reference_count: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    length: Psi | None = None
    confidence: Psi | None = None
    labels: LabelTest | None = None
    unknown_rate_live: float | None = None
    unknown_rate_reference: float | None = None
    levels: dict[str, str] = field(default_factory=dict)  # length / confidence / labels -> ok | watch | alarm
    alarms: list[str] = field(default_factory=list)  # one sentence per figure over its threshold

    @property
    def alarm(self) -> bool:
        return self.status == "alarm"


def drift_report(deployment: Deployment, dataset: int | str | None = None, window: int | None = DEFAULT_WINDOW,
                 since: datetime | None = None, thresholds: Thresholds | None = None,
                 arm: str | None = None) -> DriftReport:
    """The live window (the newest `window` samples, from `since` on) against the reference of `dataset` (default:
    see `reference_dataset`)."""
    from storage import catalog
    from storage import drift as store
    from storage.errors import NotFound

    thresholds = thresholds or Thresholds()
    samples = store.window(deployment.id, window, since, arm)
    variant_ids = {s.variant_id for s in samples}
    variant_id = variant_ids.pop() if len(variant_ids) == 1 else deployment.variant_id
    base = dict(deployment_id=deployment.id, variant_id=variant_id, live_count=len(samples),
                min_samples=thresholds.min_samples, thresholds=thresholds,
                window_start=samples[0].sampled_at if samples else None,
                window_end=samples[-1].sampled_at if samples else None)
    try:
        variant = catalog.get_variant(variant_id)
    except NotFound:
        variant = None
    chosen = catalog.get_dataset(dataset) if dataset not in (None, "") else reference_dataset(deployment, variant)
    if chosen is not None:
        base.update(dataset_id=chosen.id, dataset_name=chosen.name)
    if len(samples) < thresholds.min_samples:
        rate = (deployment.config or {}).get("sample_rate")
        hint = " (sampling is off for this deployment)" if rate == 0 else ""
        return DriftReport(status="not_enough", message=f"not enough samples yet ({len(samples)} of "
                           f"{thresholds.min_samples}){hint}", **base)
    if chosen is None:
        return DriftReport(status="no_reference", message="choose a reference dataset: the records do not say which "
                           "dataset this variant was fine-tuned or evaluated on", **base)
    if variant is None:
        return DriftReport(status="no_reference", message=f"variant {variant_id} was deleted: its reference cannot "
                           "be computed", **base)
    reference = reference_samples(variant, chosen, (deployment.config or {}).get("device", "cpu"))
    return compare(reference, samples, thresholds, base)


def compare(reference: dict[str, list], samples: Sequence[DriftSample], thresholds: Thresholds,
            base: dict[str, Any]) -> DriftReport:
    length = psi(reference["tokens"], [s.tokens for s in samples], whole=True)
    confidence = psi(reference["confidence"], [s.confidence for s in samples])
    labels = label_test(reference["label"], [s.label for s in samples])
    levels = {"length": thresholds.psi_level(length.value), "confidence": thresholds.psi_level(confidence.value),
              "labels": "alarm" if labels.p_value < thresholds.chi2_p_alarm else "ok"}
    alarms = []
    for name, result in (("length", length), ("confidence", confidence)):
        if levels[name] != "ok":
            bound = thresholds.psi_alarm if levels[name] == "alarm" else thresholds.psi_watch
            alarms.append(f"{name} PSI {result.value:.3f} ≥ {bound:g} ({levels[name]})")
    if levels["labels"] == "alarm":
        alarms.append(f"label mix chi-square p = {_p(labels.p_value)} < {thresholds.chi2_p_alarm:g} (alarm)")
    status = max(levels.values(), key=LEVELS.index)
    message = {"ok": "no drift: the live traffic looks like the reference",
               "watch": "watch: " + "; ".join(alarms), "alarm": "DRIFT: " + "; ".join(alarms)}[status]
    return DriftReport(status=status, message=message, reference_count=len(reference["tokens"]), length=length,
                       confidence=confidence, labels=labels, levels=levels, alarms=alarms,
                       unknown_rate_live=mean_rate([s.unknown_token_rate for s in samples]),
                       unknown_rate_reference=mean_rate(reference["unknown_token_rate"]), **base)


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-4 or value == 0 else f"{value:.1e}" if not math.isnan(value) else "nan"


def report(deployment_ref: int | str, dataset: int | str | None = None, window: int | None = DEFAULT_WINDOW,
           since: datetime | None = None, thresholds: Thresholds | None = None, arm: str | None = None) -> DriftReport:
    """`drift_report` for a deployment by id."""
    from storage import deployments as store

    return drift_report(store.get_deployment(deployment_ref), dataset, window, since, thresholds, arm)
