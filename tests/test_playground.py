"""The playground's core: validated prediction through cached predictors, the A/B comparison and the traffic split.

Real tiny BERT classifiers (MiniLM's tokenizer) run through torch; the database is a real SQLite file.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from storage.errors import InvalidInput

TEXT = "what a wonderful day"


@pytest.fixture
def two_variants(home, tmp_path, minilm_dir):
    """Two tiny classifiers that disagree often and the toy dataset."""
    from tests.support.tiny import add_two_tiny_variants

    a, b = add_two_tiny_variants(tmp_path, minilm_dir)
    yield a, b
    from jobs.playground.predictor_cache import CACHE

    CACHE.clear()


def direct(variant, texts):
    """Probabilities straight from the variant's Predictor, without the playground."""
    from jobs.runtimes import load_predictor

    predictor = load_predictor(variant)
    try:
        return predictor.labels, predictor.predict(texts)
    finally:
        predictor.close()


# ---- predictor --------------------------------------------------------------------------------------------


def test_a_prediction_matches_the_predictor_and_reports_latency_and_tokens(two_variants):
    from jobs import api

    a, _ = two_variants
    p = api.predict(a.id, f"  {TEXT}\n")
    labels, probs = direct(a, [TEXT])
    assert list(p.probabilities) == labels
    np.testing.assert_allclose(list(p.probabilities.values()), probs[0], atol=1e-6)
    assert p.label == labels[int(probs[0].argmax())] and p.confidence == pytest.approx(probs[0].max(), abs=1e-6)
    assert p.text == TEXT and p.latency_ms > 0
    assert p.tokens == p.used_tokens == 6 and not p.truncated and p.truncation_note == ""  # [CLS] 4 words [SEP]


def test_over_long_text_is_truncated_and_says_so(two_variants):
    from jobs import api

    p = api.predict(two_variants[0].id, "word " * 300)
    assert p.truncated and p.used_tokens == 128 and p.tokens == 302
    assert p.truncation_note == "truncated: the model read the first 128 of 302 tokens"


def test_a_model_with_fewer_positions_truncates_at_its_own_limit(home, tmp_path, minilm_dir):
    """A BERT with 64 position embeddings reads at most 64 tokens (it crashed at 128: "expanded size of the
    tensor (128) must match ... (64)"): prediction, the CLI and an evaluation on long texts all work."""
    import csv
    import json

    from jobs import api
    from jobs.playground.predictor_cache import CACHE
    from jobs.runner.submit import submit
    from jobs.runner.worker import Worker
    from storage import queue
    from storage.orm import JobStatus
    from tests.conftest import run_cli
    from tests.support.tiny import LABELS, tiny_classifier

    model = tiny_classifier(tmp_path / "short", minilm_dir, init_range=0.5, max_positions=64)
    variant = api.add_model(api.ModelRequest(str(model), name="short")).variant
    long_text = " ".join(["wonderful"] * 150)
    try:
        p = api.predict(variant.id, long_text)
        assert p.truncated and p.used_tokens == 64 and p.tokens == 152
        assert p.truncation_note == "truncated: the model read the first 64 of 152 tokens"
        batch = api.predict_batch(variant.id, [long_text, "short one"])
        assert [x.used_tokens for x in batch.predictions] == [64, 4]
    finally:
        CACHE.clear()
    cli = run_cli("predict", str(variant.id), long_text, "--json")
    assert json.loads(cli.stdout)[0]["used_tokens"] == 64
    # a benchmark cell longer than the model is refused with the reason (the job logs it and goes on)
    from jobs.runtimes import load_predictor

    predictor = load_predictor(variant)
    assert predictor.encode([long_text], max_length=64, pad_to_max=True)["input_ids"].shape == (1, 64)
    with pytest.raises(ValueError, match="128 tokens is longer than this model takes \\(64 positions\\)"):
        predictor.encode([long_text], max_length=128, pad_to_max=True)
    predictor.close()

    rows = [(" ".join([word] * (60 + i)), LABELS[i % 3]) for i, word in enumerate(["great", "chair", "awful"] * 20)]
    with open(tmp_path / "long.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    api.add_dataset(api.DatasetRequest(str(tmp_path / "long.csv"), name="long"))
    job = submit("evaluate", {}, variant=variant.id, dataset="long")
    Worker(burst=True, poll_interval=0.05).run()
    done = queue.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error


def test_position_limits_follow_the_architecture():
    from transformers import BertConfig, RobertaConfig

    from jobs.runtimes.base import capped_max_length, position_limit

    assert position_limit(BertConfig(max_position_embeddings=64)) == 64
    assert position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512  # padding_idx + 1 unused
    tokenizer = type("Tok", (), {"model_max_length": 32})()
    assert position_limit(BertConfig(max_position_embeddings=512), tokenizer) == 32
    unset = type("Tok", (), {"model_max_length": int(1e30)})()
    assert position_limit(BertConfig(max_position_embeddings=512), unset) == 512
    assert position_limit(object()) is None
    assert capped_max_length(None, BertConfig(max_position_embeddings=64)) == 64
    assert capped_max_length(None, BertConfig()) == 128 and capped_max_length(40, BertConfig(max_position_embeddings=64)) == 40


def test_bad_inputs_are_refused_with_a_clear_message(two_variants, tmp_path, monkeypatch):
    from jobs import api

    a, _ = two_variants
    with pytest.raises(InvalidInput, match="empty"):
        api.predict(a.id, "   \n ")
    monkeypatch.setenv("WORKBENCH_MAX_TEXT_CHARS", "50")
    with pytest.raises(InvalidInput, match="60 characters; the limit is 50"):
        api.predict(a.id, "x" * 60)
    monkeypatch.setenv("WORKBENCH_MAX_BATCH_LINES", "3")
    with pytest.raises(InvalidInput, match="4 texts; the limit is 3"):
        api.texts_from_lines("a\nb\n\nc\nd")
    assert api.texts_from_lines("a\n\n b \nc") == ["a", "b", "c"]
    with pytest.raises(InvalidInput, match="text 2: the text is 60 characters"):
        api.predict_batch(a.id, ["fine", "y" * 60])

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match=r"not UTF-8 text \(byte 0xe9 on line 2\)"):
        api.texts_from_file(str(latin1))
    monkeypatch.setenv("WORKBENCH_MAX_PREDICT_UPLOAD_MB", "0")
    with pytest.raises(InvalidInput, match="WORKBENCH_MAX_PREDICT_UPLOAD_MB"):
        api.texts_from_file(str(latin1))


def test_uploaded_texts_come_from_the_text_column(tmp_path):
    from jobs import api

    two = tmp_path / "two.csv"
    two.write_text("id,Sentence\n1,good movie\n2,\n3,bad plot\n", encoding="utf-8")
    assert api.texts_from_file(str(two)) == ["good movie", "bad plot"]  # a usual name, any case; blank rows skipped
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\nx,y\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="which column is the text"):
        api.texts_from_file(str(odd))
    assert api.texts_from_file(str(odd), column="b") == ["y"]
    with pytest.raises(InvalidInput, match="no column 'c'"):
        api.texts_from_file(str(odd), column="c")


def test_batch_prediction_matches_the_predictor_and_writes_a_csv(two_variants, tmp_path):
    import pandas as pd

    from jobs import api

    a, _ = two_variants
    texts = [(f"text number {i} " + "great " * (i % 5)).strip() for i in range(70)]  # three batches of 32
    seen = []
    batch = api.predict_batch(a.id, texts, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 70), (32, 70), (64, 70), (70, 70)]
    labels, probs = direct(a, texts)
    got = np.array([list(p.probabilities.values()) for p in batch.predictions])
    np.testing.assert_allclose(got, probs, atol=1e-5)
    assert [p.label for p in batch.predictions] == [labels[i] for i in probs.argmax(1)]
    frame = pd.read_csv(batch.write_csv(tmp_path), keep_default_na=False)
    assert list(frame.columns) == ["text", "label", "confidence", *[f"p_{n}" for n in labels], "tokens", "truncated"]
    assert len(frame) == 70 and frame["text"].tolist() == texts and batch.total_ms > 0


# ---- the cache of loaded predictors -----------------------------------------------------------------------


class Recorder:
    """The real loader, remembering what it loaded and which predictors were closed."""

    def __init__(self):
        from jobs.runtimes import load_predictor

        self.load, self.loaded, self.closed = load_predictor, [], []

    def __call__(self, variant, device):
        predictor = self.load(variant, device)
        self.loaded.append(variant.id)
        close = predictor.close
        predictor.close = lambda: (self.closed.append(variant.id), close())
        return predictor


def test_cache_keeps_recently_used_predictors_and_evicts_the_least_recent(two_variants):
    from jobs.playground.predictor_cache import PredictorCache

    a, b = two_variants
    roomy = PredictorCache(budget_bytes=10 * 2**30, loader=(rec := Recorder()))
    for vid in (a.id, b.id, a.id, a.id):
        with roomy.use(vid):
            pass
    assert rec.loaded == [a.id, b.id] and [c.variant_id for c in roomy.contents()] == [b.id, a.id]
    assert all(c.bytes >= 1e6 for c in roomy.contents())  # at least the weights on disk

    tight = PredictorCache(budget_bytes=1, loader=(rec := Recorder()))  # room for one: the last one loaded stays
    with tight.use(a.id) as first:
        with tight.use(b.id):
            assert [c.variant_id for c in tight.contents()] == [b.id]
            assert rec.closed == []  # A was evicted but is still in use: not closed under its user
        assert first.predict([TEXT]).shape == (1, 3)
    assert rec.closed == [a.id]  # closed by its last user
    with tight.use(a.id):
        pass
    assert rec.loaded == [a.id, b.id, a.id] and rec.closed == [a.id, b.id]


def test_concurrent_users_of_one_predictor_get_the_same_answers(two_variants):
    from jobs.playground.predict import predict_text
    from jobs.playground.predictor_cache import PredictorCache

    a, _ = two_variants
    cache = PredictorCache(loader=(rec := Recorder()))
    texts = [f"{TEXT} {'again ' * i}" for i in range(8)]
    expected = {t: predict_text(a.id, t, cache=cache).probabilities for t in texts}
    results, errors = [], []

    def user(k):
        try:
            for i in range(10):
                t = texts[(k + i) % len(texts)]
                results.append((t, predict_text(a.id, t, cache=cache).probabilities))
        except Exception as exc:  # noqa: BLE001 - any error in a thread fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 80 and rec.loaded == [a.id]  # loaded once
    for t, probs in results:
        assert probs == pytest.approx(expected[t], abs=1e-6)


def test_a_variant_without_a_head_is_refused_with_the_reason(home, minilm_dir):
    from jobs import api

    encoder = api.add_model(api.ModelRequest(str(minilm_dir), name="bare")).variant
    with pytest.raises(InvalidInput, match="cannot be loaded on cpu: this variant has no classification head"):
        api.predict(encoder.id, TEXT)


# ---- A/B --------------------------------------------------------------------------------------------------


def test_side_by_side_compares_the_same_text(two_variants):
    from jobs import api

    a, b = two_variants
    side = api.ab_compare(a.id, b.id, TEXT)
    assert side.a.probabilities == pytest.approx(api.predict(a.id, TEXT).probabilities)
    assert side.b.probabilities == pytest.approx(api.predict(b.id, TEXT).probabilities)
    assert side.agree == (side.a.label == side.b.label)


def test_test_set_ab_equals_a_direct_computation(two_variants):
    from scipy.stats import binomtest

    from jobs import api
    from jobs.ml.data import split_examples

    a, b = two_variants
    result = api.ab_test_set(a.id, b.id, "toy", split="train", limit=60)

    examples = split_examples(api.get_dataset("toy"), "train", 60)
    labels, pa = direct(a, examples.texts)
    _, pb = direct(b, examples.texts)
    ya, yb = [labels[i] for i in pa.argmax(1)], [labels[i] for i in pb.argmax(1)]
    gold = examples.labels
    a_only = sum(x == g != y for x, y, g in zip(ya, yb, gold, strict=True))
    b_only = sum(y == g != x for x, y, g in zip(ya, yb, gold, strict=True))
    assert result.num_examples == 60
    assert result.accuracy_a == pytest.approx(np.mean([x == g for x, g in zip(ya, gold, strict=True)]))
    assert result.accuracy_b == pytest.approx(np.mean([y == g for y, g in zip(yb, gold, strict=True)]))
    assert result.agreement == pytest.approx(np.mean([x == y for x, y in zip(ya, yb, strict=True)]))
    assert 0 < result.agreement < 1, "the two tiny models should disagree on some examples"
    assert (result.mcnemar.a_only, result.mcnemar.b_only) == (a_only, b_only)
    if a_only + b_only < 25:
        assert result.mcnemar.exact
        assert result.mcnemar.p_value == pytest.approx(binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue)
    else:
        from scipy.stats import chi2

        stat = (abs(a_only - b_only) - 1) ** 2 / (a_only + b_only)
        assert not result.mcnemar.exact and result.mcnemar.statistic == pytest.approx(stat)
        assert result.mcnemar.p_value == pytest.approx(chi2.sf(stat, 1))
    assert result.verdict.p_value == result.mcnemar.p_value and result.verdict.alpha == 0.05
    assert result.verdict.significant == (result.mcnemar.p_value < 0.05)
    assert len(result.disagreements) == round(60 * (1 - result.agreement))
    gaps = [d.confidence_gap for d in result.disagreements]
    assert gaps == sorted(gaps, reverse=True)
    for d in result.disagreements:
        assert d.label_a == ya[d.index] != d.label_b == yb[d.index] and d.gold == gold[d.index]
        assert d.confidence_gap == pytest.approx(abs(pa[d.index].max() - pb[d.index].max()), abs=1e-6)
    assert result.ms_per_example_a > 0 and result.ms_per_example_b > 0


@pytest.mark.parametrize(("a_only", "b_only", "exact"), [(10, 2, True), (0, 3, True), (40, 20, False)])
def test_mcnemar_against_scipy(a_only, b_only, exact):
    from scipy.stats import binomtest, chi2

    from jobs.playground.ab import mcnemar_test

    both = 30
    a_correct = [True] * both + [True] * a_only + [False] * b_only + [False] * 5
    b_correct = [True] * both + [False] * a_only + [True] * b_only + [False] * 5
    m = mcnemar_test(a_correct, b_correct)
    assert (m.a_only, m.b_only, m.exact) == (a_only, b_only, exact)
    n = a_only + b_only
    expected = binomtest(min(a_only, b_only), n, 0.5).pvalue if exact else chi2.sf((abs(a_only - b_only) - 1) ** 2 / n, 1)
    assert m.p_value == pytest.approx(expected)
    assert mcnemar_test([True, False], [True, False]).p_value == 1.0


def test_the_ab_verdict_is_decided_in_the_core_and_worded_in_the_workbench():
    from jobs.playground.ab import McNemar, verdict
    from workbench.formatting import significance_sentence

    clear = McNemar(a_only=2, b_only=20, statistic=0.0, p_value=0.0004, exact=True)
    b_better = verdict(0.70, 0.88, clear)
    assert (b_better.significant, b_better.better, b_better.alpha) == (True, "b", 0.05)
    assert significance_sentence(b_better).startswith("The difference is significant at the 5 % level: B is more")
    assert verdict(0.88, 0.70, clear).better == "a"
    chance = verdict(0.80, 0.81, McNemar(5, 6, 0.0, 1.0, True))
    assert (chance.significant, chance.better) == (False, None)
    assert significance_sentence(chance).startswith("The difference is not significant at the 5 % level")
    strict = verdict(0.70, 0.88, clear, alpha=0.0001)
    assert not strict.significant and "at the 0.01 % level" in significance_sentence(strict)


def test_ab_refuses_variants_of_different_tasks(two_variants, tmp_path, minilm_dir):
    import json

    from jobs import api
    from tests.support.tiny import tiny_classifier

    other = tiny_classifier(tmp_path / "other", minilm_dir, 2)
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {"0": "spam", "1": "ham", "2": "eggs"}
    config["label2id"] = {"spam": 0, "ham": 1, "eggs": 2}
    (other / "config.json").write_text(json.dumps(config))
    c = api.add_model(api.ModelRequest(str(other), name="other")).variant
    with pytest.raises(InvalidInput, match="predict different labels"):
        api.ab_test_set(two_variants[0].id, c.id, "toy", limit=10)


# ---- traffic split ----------------------------------------------------------------------------------------


def test_consistent_hashing_keeps_a_user_in_one_arm_and_splits_near_the_chosen_share():
    from jobs.playground.traffic import assign_arm

    users = [f"user-{i}" for i in range(100_000)]
    for percent in (10, 30, 50):
        arms = [assign_arm(u, percent, "exp-1") for u in users]
        share = arms.count("B") / len(arms)
        assert abs(share - percent / 100) < 0.01, (percent, share)  # 4.6 standard errors at 50 %
        assert arms == [assign_arm(u, percent, "exp-1") for u in users]  # the same user always gets the same arm
    # raising B's share only moves users from A to B
    b_at_10 = {u for u in users if assign_arm(u, 10, "exp-1") == "B"}
    b_at_30 = {u for u in users if assign_arm(u, 30, "exp-1") == "B"}
    assert b_at_10 <= b_at_30
    # another experiment draws its own split
    other = {u for u in users if assign_arm(u, 10, "exp-2") == "B"}
    assert len(other & b_at_10) < 0.2 * len(b_at_10)
    assert {assign_arm(u, 0, "x") for u in users[:1000]} == {"A"} and {assign_arm(u, 100, "x") for u in users[:1000]} == {"B"}


def test_requests_and_feedback_are_stored_and_give_per_arm_accuracy(two_variants):
    from statsmodels.stats.proportion import proportion_confint

    from jobs import api
    from storage import traffic

    a, b = two_variants
    with pytest.raises(InvalidInput, match="two different variants"):
        api.start_experiment(a.id, a.id, 50)
    with pytest.raises(InvalidInput, match="between 0 and 100"):
        api.start_experiment(a.id, b.id, 150)
    exp = api.start_experiment(a.id, b.id, 40, name="ab-1")
    first = api.route_request("ab-1", "alice", TEXT)
    again = api.route_request(exp.id, "alice", "another text")
    assert first.request.arm == again.request.arm and first.request.user_id == "alice"
    assert first.request.variant_id == (b.id if first.request.arm == "B" else a.id)
    assert first.prediction.label == api.predict(first.request.variant_id, TEXT).label == first.request.label
    with pytest.raises(InvalidInput, match="user id is needed"):
        api.route_request(exp.id, "  ", TEXT)
    assert api.record_feedback(first.request.id, True).feedback == "correct"
    assert api.record_feedback(again.request.id, False).feedback == "wrong"

    stored = api.simulate_traffic(exp.id, "toy", split="test", requests=300, users=40)
    assert len(stored) == 300 and {r.source for r in stored} == {"simulated"}
    assert len({r.user_id for r in stored}) == 40
    by_user: dict[str, set[str]] = {}  # every simulated user stays in one arm
    for r in stored:
        by_user.setdefault(r.user_id, set()).add(r.arm)
    assert all(len(arms) == 1 for arms in by_user.values())
    gold = dict(api.example_texts("toy", "test", 0))
    for r in stored[:20]:
        assert r.feedback == ("correct" if r.label == gold[r.text] else "wrong")

    report = {s.arm: s for s in api.arm_report(exp.id)}
    everything = [first.request, again.request, *stored]
    for arm, stats in report.items():
        mine = [r for r in everything if r.arm == arm]
        correct = sum(r.feedback == "correct" for r in traffic.list_requests(exp.id, 1000) if r.arm == arm)
        assert stats.requests == len(mine) and stats.with_feedback == len(mine) and stats.correct == correct
        assert stats.accuracy == pytest.approx(correct / len(mine))
        low, high = proportion_confint(correct, len(mine), alpha=0.05, method="wilson")
        assert (stats.ci_low, stats.ci_high) == pytest.approx((low, high))
        assert stats.ci_low <= stats.accuracy <= stats.ci_high
    assert report["A"].share + report["B"].share == pytest.approx(1.0)
    assert [r.id for r in api.recent_requests(exp.id, 3)] == [r.id for r in reversed(stored[-3:])]


def test_an_arm_without_feedback_has_no_accuracy(two_variants):
    from jobs import api

    a, b = two_variants
    exp = api.start_experiment(a.id, b.id, 100)
    api.route_request(exp.id, "bob", TEXT)
    report = {s.arm: s for s in api.arm_report(exp.id)}
    assert report["B"].requests == 1 and report["B"].accuracy is None and report["B"].ci_low is None
    assert report["A"].requests == 0 and report["A"].share == 0


def test_example_texts_are_a_fixed_sample(two_variants):
    from jobs import api

    first = api.example_texts("toy", "test", 5)
    assert first == api.example_texts("toy", "test", 5) and len(first) == 5
    assert all(label in ("negative", "neutral", "positive") for _, label in first)


def test_cli_predicts_texts_and_refuses_an_empty_one(two_variants, tmp_path):
    import json

    from jobs import api
    from tests.conftest import run_cli

    a, _ = two_variants
    out = run_cli("predict", str(a.id), TEXT, "so bad", "--json", "--out", str(tmp_path))
    got = json.loads(out.stdout)
    assert [p["label"] for p in got] == [api.predict(a.id, t).label for t in (TEXT, "so bad")]
    assert (tmp_path / f"predictions-variant-{a.id}.csv").exists()
    bad = run_cli("predict", str(a.id), " ", check=False)
    assert bad.returncode == 2 and "the text is empty" in bad.stderr


def test_cli_predict_out_into_a_missing_directory_exits_2_with_one_line(two_variants, tmp_path):
    from tests.conftest import run_cli

    a, _ = two_variants
    missing = tmp_path / "no" / "such"
    bad = run_cli("predict", str(a.id), TEXT, "--out", str(missing), check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [f"error: --out {missing}: no such directory; create it first or pick an existing one"]
    assert not missing.exists() and not missing.parent.exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    bad = run_cli("predict", str(a.id), TEXT, "--out", str(a_file), check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "not a directory" in bad.stderr


def test_a_negative_number_of_examples_is_refused(two_variants):
    from jobs import api

    a, b = two_variants
    with pytest.raises(InvalidInput, match="0 \\(all\\) or positive, not -5"):
        api.ab_test_set(a.id, b.id, "toy", limit=-5)


def test_ab_tab_runs_the_whole_split_by_default_as_its_label_says():
    import gradio as gr

    from workbench.tabs import ab

    with gr.Blocks() as blocks:
        ab.build()
    limit = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "ab-limit")
    assert "0 = the whole split" in limit.label and limit.value == 0


def test_the_batch_csv_neutralises_spreadsheet_formulas(two_variants, tmp_path):
    """OWASP CSV injection: a cell starting with = + - @ (or a tab / CR) gets a leading apostrophe."""
    import csv

    from jobs import api

    texts = ["=cmd|' /C calc'!A0", '+HYPERLINK("http://evil.example","click")', "@SUM(1)", "-2+3", "plain text"]
    batch = api.predict_batch(two_variants[0].id, texts)
    with open(batch.write_csv(tmp_path), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["text"] for r in rows] == ["'=cmd|' /C calc'!A0", '\'+HYPERLINK("http://evil.example","click")',
                                         "'@SUM(1)", "'-2+3", "plain text"]
    assert all(float(r["confidence"]) > 0 for r in rows)  # numbers stay numbers
    assert [p.text for p in batch.predictions] == texts  # only the file is changed, not the answers
