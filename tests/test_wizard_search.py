"""The wizard's Search path and its "real traffic" target, at the handlers: the goal step's two paths, the live view
of a search (chart, table, best-so-far sentence, budget line) built from real SearchStatus objects, re-running a
trial's recipe, viewers refused launching; and the rule-based path benchmarking on real traffic end to end."""

from __future__ import annotations

import time

import gradio as gr
import pytest

from storage.errors import InvalidInput


@pytest.fixture
def toy(home, tmp_path, minilm_dir):
    """A tiny classifier whose head has the toy dataset's labels, and the toy data."""
    from jobs import api
    from tests.support.data import write_sentiment_csv
    from tests.support.tiny import tiny_classifier

    model = api.add_model(api.ModelRequest(str(tiny_classifier(tmp_path / "head", minilm_dir)), name="head"))
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv")), name="toy"))
    return model.variant


# ---- the goal step ----------------------------------------------------------------------------------------------


def test_the_goal_step_shows_the_fields_of_the_chosen_path():
    from workbench.tabs import wizard_search

    slo, recommend, budget, review = wizard_search.pick_approach(wizard_search.SEARCH)
    assert [u["visible"] for u in (slo, recommend, budget, review)] == [False, False, True, True]
    back = wizard_search.pick_approach(wizard_search.RECOMMEND)
    assert [u["visible"] for u in back] == [True, True, False, False]


def test_the_search_goal_is_checked_and_said_in_words(toy):
    from workbench.tabs import wizard_search

    goal, review, walk, status = wizard_search.to_search("1", "1", "nvidia-gpu", 0.5, 16, 64, "real", 5, True, 3)
    assert status == "" and walk.selected == wizard_search.SEARCH_STEP
    assert (goal.device, goal.budget_s, goal.traffic, goal.batch_size, goal.quick, goal.speedup) == (
        "cuda", 300.0, "real", 16, True, 3.0)
    assert "at least 3x faster (then it stops)" in review and "real traffic" in review
    assert "0.5 accuracy points" in review and "5 minutes" in review
    assert "Quick" in review and "head" in review and "toy" in review
    for bad, why in ((dict(budget=0), "time budget"), (dict(model=None), "pick a model")):
        args = {"model": "1", "budget": 5, **bad}
        goal, _, _, status = wizard_search.to_search(args["model"], "1", "cpu-amx", 0.5, 1, 128, "grid",
                                                     args["budget"], False)
        assert goal is None and status.startswith("✗") and why in status


# ---- the rule-based path on real traffic ------------------------------------------------------------------------


def test_goal_traffic_is_checked_and_described():
    from jobs.decisions.wizard import Goal

    with pytest.raises(InvalidInput, match="traffic must be grid"):
        Goal(target="cpu-amx", traffic="bursty")
    assert "real traffic" in Goal(target="cpu-amx", batch_size=8, traffic="real").describe()
    assert "batch 1 x 128 tokens" in Goal(target="cpu-amx").describe()


def test_a_real_traffic_goal_benchmarks_the_test_split_and_decides_there(toy):
    """The rule-based wizard with "real traffic" as its target: the closing benchmark draws its batches from the
    test split (no fixed length), and the verdict is made at that real-traffic cell."""
    from jobs import api
    from jobs.bench.traffic import REAL_TRAFFIC_SEQ
    from tests.conftest import run_cli
    from workbench.tabs import wizard

    started = time.monotonic()
    recipe, _, _, _, status = wizard.to_recipe("1", "1", "cpu-amx", 50, 0, 0, 4, 128, True, "real")
    assert status == "" and recipe.goal.traffic == "real"
    bench = recipe.steps[-1]
    assert bench.kind == "benchmark" and bench.params["traffic"] == "real" and "seq_lens" not in bench.params
    assert "real traffic" in bench.why
    launched = api.launch_recipe(recipe)
    run_cli("worker", "--burst")
    progress = api.wizard_progress(launched.pipeline, launched.goal)
    assert progress.done and not progress.failed, progress.message
    decision = progress.outcome.decision
    assert decision is not None and (decision.batch_size, decision.seq_len) == (4, REAL_TRAFFIC_SEQ)
    # reopened without its goal (after a reload), the run reads "real traffic" back from its benchmark
    assert api.wizard_progress(launched.pipeline).outcome.goal.traffic == "real"
    measured = api.get_job(progress.outcome.benchmark_job).params
    assert measured["traffic"] == "real"
    print(f"real-traffic wizard run in {time.monotonic() - started:.0f}s")


# ---- viewers -------------------------------------------------------------------------------------------------------


def test_a_viewer_cannot_launch_a_search_or_rerun_a_trial(toy, monkeypatch):
    from jobs import api
    from workbench.tabs import wizard_search

    monkeypatch.setenv("WORKBENCH_AUTH", "ed:pw1")
    monkeypatch.setenv("WORKBENCH_VIEWERS", "vi:pw2")
    goal, *_ = wizard_search.to_search("1", "1", "cpu-amx", 0.5, 1, 128, "grid", 5, True)
    before = len(api.list_jobs())
    viewer = gr.Request(username="vi")
    with pytest.raises(gr.Error, match="read-only"):
        wizard_search.launch_search(goal, viewer)
    with pytest.raises(gr.Error, match="read-only"):
        wizard_search.launch_rerun(1, "0", viewer)
    assert len(api.list_jobs()) == before  # nothing was queued


# ---- the live view of a search, from real SearchStatus objects ----------------------------------------------------


def _row(number, state, accuracy=None, p50=None, *, params=None, steps=None, problems=(), reason=None, variant=None):
    from jobs.search.status import TrialRow

    return TrialRow(number=number, state=state, params=params or {}, steps=steps or [], variant_id=variant,
                    accuracy=accuracy, drop_points=None, p50_ms=p50, throughput_sps=1000 / p50 if p50 else None,
                    speedup=None, problems=list(problems), pipeline=f"search-9-t{number}", job_ids=[], reason=reason)


def a_search(state="running", stop_reason=None):
    """A search's status as jobs.search.status makes it: drops and speed-ups against the baseline, the front and the
    best computed by the core's own functions over the trials."""
    from dataclasses import replace

    from jobs.search.status import SearchStatus, best, front

    static_half = {"student": "half-layers", "prune": "none", "backend": "onnx-int8-static", "ort_level": "basic",
                   "reduce_range": "off"}
    baseline = _row(0, "complete", 0.80, 10.0, variant=1)
    trials = [
        _row(1, "complete", 0.797, 3.2, params=static_half, variant=2),  # within 0.5 points: the best
        _row(2, "complete", 0.70, 2.0, params={**static_half, "student": "third-layers"}, variant=3),  # too inaccurate
        _row(3, "pruned", 0.60, 6.0, params={"student": "none", "prune": "structured-50", "backend": "pytorch-fp32"},
             reason="hopeless: intermediate accuracy far below the baseline"),
        _row(4, "failed", params={"student": "none", "prune": "none", "backend": "openvino-int8"},
             steps=[{"kind": "export-openvino", "params": {}}, {"kind": "quantize", "params": {"method": "nncf-int8"}}],
             reason="step 2 (quantize) failed: out of memory"),
        _row(5, "complete", 0.801, 5.0, params={"student": "none", "prune": "none", "backend": "onnx-int8"},
             problems=["unstable: spread 31% over the last windows"], variant=5),
        _row(6, "complete", 0.805, 7.5, params={"student": "none", "prune": "none", "backend": "pytorch-int8"},
             variant=6),
    ]
    trials = [replace(t, drop_points=(baseline.accuracy - t.accuracy) * 100 if t.accuracy is not None else None,
                      speedup=baseline.p50_ms / t.p50_ms if t.p50_ms else None) for t in trials]
    return SearchStatus(
        job_id=9, state=state, goal={"max_drop_points": 0.5, "batch_size": 1, "seq_len": 128, "traffic": "grid",
                                     "device": "cpu", "budget_s": 600.0},
        elapsed_s=312.0, budget_s=600.0, stop_reason=stop_reason, trials=trials, front=front(trials),
        best=best(trials, baseline, 0.5), baseline=baseline)


def _traces(fig) -> dict[str, object]:
    return {trace.name.split(":")[0]: trace for trace in fig.data}


def test_the_chart_draws_the_status_front_greys_what_is_out_and_stars_the_best():
    from workbench.search_charts import trials_chart

    status = a_search()
    assert status.front == [2, 1, 6] and status.best.number == 1  # the core's own computation
    traces = _traces(trials_chart(status))
    assert list(traces["Pareto front"].customdata) == status.front
    assert list(traces["Pareto front"].x) == [2.0, 3.2, 7.5]  # in latency order, as a line
    assert list(traces["best so far"].customdata) == [1]
    assert list(traces["trials within the goal"].customdata) == [1, 6]
    out = traces["out (pruned, failed, flagged or too inaccurate)"]
    hover = dict(zip(out.customdata, out.hovertext, strict=True))
    assert sorted(hover) == [2, 3, 5]  # the failed trial 4 has no figures: in the table, not on the chart
    assert "more than the 0.5 allowed" in hover[2]
    assert "pruned: hopeless: intermediate accuracy" in hover[3]
    assert "flagged: unstable" in hover[5]
    assert all(color == "#BBBBBB" for color in [out.marker.color])
    assert list(traces["baseline"].customdata) == [0]
    drop = _traces(trials_chart(status, "drop"))
    assert list(drop["Pareto front"].y) == pytest.approx([10.0, 0.3, -0.5])


def test_the_best_sentence_the_table_and_the_budget_line():
    from workbench.search_words import best_sentence, budget_line, trial_rows

    status = a_search(state="succeeded", stop_reason="budget spent")
    assert best_sentence(status) == "trial 1: ONNX Runtime static int8, 1/2 depth, graph optimization basic — " \
                                    "3.1x faster, 0.3 points lost"
    rows = {row["trial"].split()[-1]: row for row in trial_rows(status)}
    assert rows["1"]["trial"] == "★◆ 1" and rows["2"]["trial"] == "◆ 2" and rows["3"]["trial"] == "3"
    assert rows["4"]["problems / reason"] == "failed: step 2 (quantize) failed: out of memory"
    assert rows["4"]["recipe"] == "OpenVINO int8 (NNCF)" and rows["4"]["p50 ms"] == ""
    assert rows["2"]["recipe"].startswith("ONNX Runtime static int8, 1/3 depth")
    assert rows["5"]["problems / reason"].startswith("flagged: unstable")
    assert rows["1"]["speedup"] == "3.12" and rows["1"]["drop (points)"] == "0.30"
    line = budget_line(status)
    assert "5.2 of 10 min used, 4.8 left" in line and "6 trials" in line and "stopped:** budget spent" in line
    assert "4 complete" in line and "1 pruned" in line and "1 failed" in line
    empty = a_search()
    from dataclasses import replace

    assert best_sentence(replace(empty, best=None)).startswith("No trial within the goal yet (6 of 6")


def test_the_best_sentence_says_the_same_job_measurement_and_whether_it_is_sound():
    from dataclasses import replace

    from jobs.search.confirm import Confirmation, Entrant
    from workbench.search_words import best_sentence

    status = a_search(state="succeeded", stop_reason="budget spent")
    sound = replace(status, confirmation=Confirmation(1, "complete", 12, 4.0, 12.4, 3.1))
    # a sound run-off's same-job figure leads; the trial's own benchmark (another job than the baseline's) follows
    assert best_sentence(replace(sound, confirmation=replace(sound.confirmation, best_p50_ms=4.5, speedup=2.8))) == \
        "trial 1: ONNX Runtime static int8, 1/2 depth, graph optimization basic — 2.8x faster (4.50 vs 12.40 ms " \
        "p50) measured again in one job with the baseline, 0.3 points lost; the trial benchmark said 3.1x."
    # slower than the baseline reads as slower, not as '0.6x faster'
    slower = replace(sound, best=replace(sound.best, speedup=0.8),
                     confirmation=replace(sound.confirmation, best_p50_ms=20.0, speedup=0.62))
    assert "— 1.6x slower (20.00 vs 12.40 ms p50) measured again" in best_sentence(slower)
    assert best_sentence(slower).endswith("the trial benchmark said 0.8x.")
    assert "— 1.2x slower, 0.3 points lost" in best_sentence(replace(status, best=replace(status.best, speedup=0.8)))
    busy = replace(sound, confirmation=replace(sound.confirmation, problems=("baseline: busy machine",)))
    assert best_sentence(busy).endswith("3.1x (4.00 vs 12.40 ms p50), not sound: baseline: busy machine.")
    running = replace(status, confirmation=Confirmation(1, "running", 12))
    assert best_sentence(running).endswith("Measuring trial 1 and the baseline again in one job…")
    entrants = (Entrant(1, 7), Entrant(3, 9))
    running = replace(status, confirmation=Confirmation(1, "running", 12, entrants=entrants))
    assert best_sentence(running).endswith("Measuring trial 1, its runners-up and the baseline again in one job…")
    won = replace(sound, confirmation=replace(sound.confirmation, winner=3, entrants=entrants,
                                              why="trial 3 ran 1.20x as fast as trial 1 in the same job (95% interval "
                                                  "1.10-1.30)"))
    assert best_sentence(won).endswith("3.1x faster (4.00 vs 12.40 ms p50) measured again in one job with the "
                                       "baseline, 0.3 points lost; the trial benchmark said 3.1x. Picked in the "
                                       "run-off: trial 3 ran 1.20x as fast as trial 1 in the same job (95% interval "
                                       "1.10-1.30).")
    failed = replace(status, confirmation=Confirmation(1, "failed", 12, reason="its benchmark job failed: boom"))
    assert best_sentence(failed).endswith("Not measured again in one job with the baseline: its benchmark job failed: boom")


# ---- launching, following and re-running through the real search kind ------------------------------------------


def test_a_search_launched_followed_and_a_trial_rerun(toy, tmp_path, minilm_dir):
    """The launch handler queues a real search job; a one-trial quick search run by a real worker is then followed
    by the view's handlers (the chart's front is the status's), and its trial's recipe is queued again."""
    from jobs import api
    from tests.conftest import run_cli
    from workbench.search_words import best_sentence
    from workbench.tabs import wizard_search

    started = time.monotonic()
    goal, *_ = wizard_search.to_search("head", "toy", "cpu-amx", 50, 1, 32, "grid", 2, True)
    job_id, message, budget, *_, timer, searches = wizard_search.launch_search(goal)
    assert message.startswith("✓ launched search job") and timer.active and searches["value"] == str(job_id)
    queued = api.get_job(job_id)
    assert queued.kind == "search" and queued.params["budget_s"] == 120.0 and queued.params["quick"] is True
    line, best, chart, table, trials, timer = wizard_search.follow_search(job_id)
    assert "0.0 of 2 min used" in line and timer.active and trials["choices"] == []
    api.cancel_job(job_id)  # the launch handler's search is not run here: a one-trial search is, below

    # the search refuses a degenerate baseline: a tiny encoder learns the toy words first (as in tests/test_search.py),
    # and the search starts from that fine-tuned variant
    from tests.support.tiny import tiny_encoder

    api.add_model(api.ModelRequest(str(tiny_encoder(tmp_path / "bare", minilm_dir)), name="bare"))
    tune = api.submit("finetune", {"epochs": 8, "learning_rate": 0.003, "max_length": 16, "max_val_examples": 20},
                      model="bare", dataset="toy", evaluation={"max_examples": 0})
    run_cli("worker", "--burst")
    assert api.get_job(tune.id).status.value == "succeeded", api.job_log(tune.id)[-2000:]
    job = api.submit_search("bare", "toy", max_drop_points=50, batch_size=1, seq_len=32, budget_s=150, n_trials=1,
                            space={"student": ["none"], "prune": ["none"], "backend": ["pytorch-int8"]}, quick=True)
    run_cli("worker", "--burst")
    status = api.search_status(job.id)
    assert status.state == "succeeded" and [t.number for t in status.trials] == [1], status.message
    line, best, chart, table, trials, timer = wizard_search.follow_search(job.id)
    assert not timer.active and "1 trials" in line and "search succeeded" in line
    assert best_sentence(status) in best.replace("**Best so far:** ", "")
    traces = {trace.name.split(":")[0]: trace for trace in chart["value"].data}
    assert list(traces.get("Pareto front", {"customdata": []})["customdata"] or []) == status.front
    assert len(table["value"]) == 1 and "PyTorch dynamic int8" in table["value"]["recipe"][0]
    assert trials["choices"][0][1] == "1"
    reopened = wizard_search.open_search(str(job.id))
    assert reopened[0] == job.id and reopened[1].startswith("✓ reopened")

    trial = status.trials[0]
    assert trial.variant_id, trial
    before = {j.id for j in api.list_jobs()}
    rerun = wizard_search.launch_rerun(job.id, "1")
    assert rerun.startswith("✓ re-running trial 1"), rerun
    new = sorted((j for j in api.list_jobs() if j.id not in before), key=lambda j: j.id)
    # the variant's whole recipe, from the model's original: the fine-tune, then the trial's int8
    assert [j.kind for j in new if j.kind != "evaluate"] == ["finetune", "quantize"]
    assert new[0].pipeline not in (trial.pipeline, None)
    assert wizard_search.launch_rerun(job.id, "7") == "✗ search job %d has no trial 7" % job.id
    print(f"one-trial search followed and re-run in {time.monotonic() - started:.0f}s")
