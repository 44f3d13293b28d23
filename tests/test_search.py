"""The `search` job kind: real trials (real jobs, real variants, real measurements) within a time budget, the
best-so-far kept through a SIGKILLed worker, degenerate and unsound candidates never picked, the Pareto front
checked against a brute-force computation, and bad input refused with nothing queued.

One module-scoped search, on a tiny BERT fine-tuned on the toy dataset, run by a real worker process that is
killed once a trial is complete and replaced by a new one; the tests read what it left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_cli, wait_for
from tests.support.data import write_sentiment_csv

pytestmark = pytest.mark.slow

BUDGET_S = 600.0  # the main search ends at its trial limit; a second one is given a budget too small to finish
TIGHT_BUDGET_S = 3.0  # shorter than any machine takes to start, evaluate and benchmark the baseline
MAX_DROP = 10.0  # a 40-example test split: one answer is 2.5 points
STALE_AFTER_S = 6.0
# Full depth PyTorch int8 (a sound, complete trial), and a fresh small student trained for seconds on 140 examples
# (it answers one class: a degenerate variant, for real), in OpenVINO fp32, PyTorch int8 and PyTorch fp32.
SPACE = {"student": ["none", "small-4x256"], "prune": ["none"],
         "backend": ["pytorch-fp32", "pytorch-int8", "openvino-fp32"]}
SEED = 235  # the sampler's first points with this seed: full-depth int8, then the small student in OpenVINO fp32
TRIALS = 5  # the whole space: the small student in PyTorch int8 and fp32 reuse its distillation (a prefix, all)
# The machine running the tests is shared by parallel test processes: "busy" cells (tested in test_compare.py) would
# leave nothing to pick; unstable cells and degenerate variants are still excluded as always.
WORKER_ENV = {"WORKBENCH_STALE_AFTER_S": str(STALE_AFTER_S), "WORKBENCH_HEARTBEAT_S": "0.5",
              "WORKBENCH_BUSY_CPU_FRACTION": "0.9"}


def start_worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "worker", *args], cwd=REPO,
                            env={**os.environ, **WORKER_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, minilm_dir):
    """Fine-tune a tiny encoder, run a quick search on it, SIGKILL its worker once a trial is complete, let a new
    worker resume it; then a search with a budget too small for it. Returns the API, the search jobs, the status
    just before the kill and the final statuses."""
    from storage import db
    from tests.support.tiny import tiny_encoder

    root = tmp_path_factory.mktemp("search")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        mp.delenv("WORKBENCH_DB_URL", raising=False)
        for name, value in WORKER_ENV.items():
            mp.setenv(name, value)
        db.dispose_all()
        db.upgrade()
        from jobs import api

        api.add_model(api.ModelRequest(str(tiny_encoder(root / "bare", minilm_dir)), name="bare"))
        api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(root / "toy.csv")), name="toy"))
        # the tiny random encoder learns the toy words only with a high learning rate (as in test_wizard)
        tune = api.submit("finetune", {"epochs": 8, "learning_rate": 0.003, "max_length": 16, "max_val_examples": 20},
                          model="bare", dataset="toy", evaluation={"max_examples": 0})
        run_cli("worker", "--burst")
        assert api.get_job(tune.id).status.value == "succeeded", api.job_log(tune.id)[-2000:]
        job = api.submit_search("bare", "toy", max_drop_points=MAX_DROP, batch_size=1, seq_len=32,
                                budget_s=BUDGET_S, space=SPACE, quick=True, seed=SEED, n_trials=TRIALS)
        tight = api.submit_search("bare", "toy", max_drop_points=MAX_DROP, seq_len=32, budget_s=TIGHT_BUDGET_S,
                                  space={"student": ["none"], "backend": ["pytorch-int8"]}, quick=True)
        worker = start_worker("--burst")
        try:
            def a_trial_is_complete():
                status = api.search_status(job.id)
                return status if any(t.state == "complete" for t in status.trials) else None

            before = wait_for(a_trial_is_complete, timeout=300, interval=1.0, what="a complete trial")
            jobs_before = {t.number: sorted(t.job_ids) for t in before.trials if t.state != "running"}
            worker.send_signal(signal.SIGKILL)  # no clean shutdown: nothing is re-queued by the worker itself
            worker.wait(30)
            time.sleep(STALE_AFTER_S + 1)  # the new worker's first sweep then finds the dead one's jobs stale
            worker = start_worker("--burst")
            worker.wait(BUDGET_S)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(30)
        yield {"api": api, "job": api.get_job(job.id), "before": before, "jobs_before": jobs_before,
               "after": api.search_status(job.id), "tuned": api.get_job(tune.id).produced_variant_id,
               "tight": api.get_job(tight.id), "tight_status": api.search_status(tight.id)}
        db.dispose_all()


def test_the_search_ran_real_trials(searched):
    api, status = searched["api"], searched["after"]
    assert searched["job"].status.value == "succeeded", (searched["job"].message, api.job_log(searched["job"].id)[-3000:])
    assert status.stop_reason == "trial limit reached" and len(status.trials) == TRIALS
    assert status.baseline.state == "complete" and status.baseline.variant_id == searched["tuned"]
    assert status.baseline.p50_ms > 0 and status.baseline.accuracy > 0.5  # the fine-tuned fp32 model, measured here
    for trial in status.trials:
        assert trial.started_s < BUDGET_S, f"trial {trial.number} started after the budget ({trial.started_s} s)"
        assert trial.state in ("complete", "pruned", "failed"), trial
        jobs = [api.get_job(i) for i in trial.job_ids]
        assert jobs or trial.reused_whole and trial.state == "pruned"  # ruled out by an earlier trial's evaluation
        assert all(j.pipeline == trial.pipeline and j.status.finished for j in jobs)
        made = [j for j in jobs if j.kind not in ("evaluate", "benchmark")]
        skipped = trial.reused["steps"] if trial.reused else 0  # made by an earlier trial: started from its variant
        assert [j.kind for j in made] == [s["kind"] for s in trial.steps[skipped:]]  # the recipe is what ran
        if trial.reused:
            earlier = next(t for t in status.trials if t.number == trial.reused["trial"])
            assert earlier.steps[:skipped] == trial.steps[:skipped] and earlier.number < trial.number
            first = (made or jobs)[0] if jobs else None  # a whole recipe reused: an evaluation of its variant
            assert (first.variant_id if first else trial.variant_id) == trial.reused["variant_id"]
        cut = trial.reason == "budget spent before it finished"
        if cut:  # started in time, stopped by the budget: what had not run was cancelled
            assert trial.state == "pruned" and any(j.status.value == "cancelled" for j in jobs)
        elif trial.state != "failed" and not (trial.reason or "").startswith("hopeless"):
            variant = api.get_variant(trial.variant_id)  # a real variant, made by the trial's last step
            assert variant.id == (made[-1].produced_variant_id if made else trial.reused["variant_id"])
            assert variant.parent_id is not None
        if trial.state == "complete":
            bench = next(j for j in jobs if j.kind == "benchmark")
            assert bench.status.value == "succeeded" and trial.p50_ms > 0 and trial.speedup is not None
            assert trial.speedup == pytest.approx(status.baseline.p50_ms / trial.p50_ms)
        if trial.state == "pruned":
            assert not any(j.kind == "benchmark" and j.status.value == "succeeded" for j in jobs)  # never measured
    assert status.elapsed_s < BUDGET_S and status.space_size == TRIALS
    smalls = [t for t in status.trials if t.params["student"] != "none"]
    fresh, *later = smalls  # the first small student is distilled; the others start from it
    assert len(smalls) == 3 and not fresh.reused and fresh.state == "pruned", smalls
    # its student is degenerate, far past the drop: stopped after the distillation when steps follow it
    assert fresh.reason.startswith("hopeless after step 1 (distill)" if len(fresh.steps) > 1 else "degenerate"), fresh
    distilled = api.get_job(fresh.job_ids[0])
    assert distilled.kind == "distill" and distilled.produced_variant_id
    for trial in later:  # the same distillation is not made twice
        assert trial.reused == {"trial": fresh.number, "steps": 1, "variant_id": distilled.produced_variant_id,
                                "pipeline": fresh.pipeline}, trial
        assert trial.state == "pruned", trial
        if trial.reused_whole:  # its whole recipe is that distillation: ruled out by the fresh trial's evaluation
            assert trial.job_ids == [] and trial.variant_id == distilled.produced_variant_id, trial
            assert trial.reason.startswith("degenerate") and f"as evaluated in trial {fresh.number}" in trial.reason
        else:  # started from that student, whose evaluation is known: stopped at once, its own jobs never ran
            assert trial.reason.startswith("hopeless after step 1 (distill)"), trial
            assert all(api.get_job(i).status.value == "cancelled" for i in trial.job_ids)
    # with this seed the student in OpenVINO fp32 comes first: both kinds of reuse are exercised
    assert sorted(t.reused_whole for t in later) == [False, True], [(t.number, t.params) for t in smalls]


def test_a_student_counts_as_made_from_its_own_evaluation(searched):
    """The smaller models the combination rule builds on include a student read from the evaluation of the trial's
    first step, whatever the trial did after. Here the one fresh student is degenerate: judged once (the trials
    that reused it are not asked again), and left out by a judge that rules it out."""
    from jobs.search.combine import students_within

    api, status = searched["api"], searched["after"]
    fresh = next(t for t in status.trials if t.params["student"] != "none" and not t.reused)
    judged = []
    assert students_within(status.trials, judged.append) == [{"student": "small-4x256", "prune": "none"}]
    assert [e.variant_id for e in judged] == [api.get_job(fresh.job_ids[0]).produced_variant_id]
    assert judged[0].degenerate
    assert students_within(status.trials, lambda e: "degenerate" if e.degenerate else None) == []


def test_a_search_stops_when_its_budget_is_spent(searched):
    """A budget too small for even the baseline: its jobs are stopped at the budget and no trial starts after it."""
    api, job, status = searched["api"], searched["tight"], searched["tight_status"]
    assert status.stop_reason == "budget spent", (job.status, job.message, api.job_log(job.id)[-3000:])
    for trial in status.trials:
        assert trial.started_s < TIGHT_BUDGET_S and trial.reason == "budget spent before it finished"
    if status.baseline.state != "complete":
        assert job.status.value == "failed" and "budget was spent before the baseline was measured" in job.message
    jobs = [api.get_job(i) for t in [status.baseline, *status.trials] for i in t.job_ids]
    assert jobs and all(j.status.finished for j in jobs)  # nothing of it is left to run
    assert any(j.status.value == "cancelled" for j in jobs)  # stopped by the budget, not finished
    assert TIGHT_BUDGET_S <= status.elapsed_s <= TIGHT_BUDGET_S + 20  # stopped soon after the budget


def test_the_best_so_far_survives_a_killed_worker(searched):
    before, after, api = searched["before"], searched["after"], searched["api"]
    job = searched["job"]
    assert job.attempts == 2 and after.restarts == 1  # re-queued once by the new worker's sweep, then resumed
    by_number = {t.number: t for t in after.trials}
    for number, job_ids in searched["jobs_before"].items():
        again = by_number[number]  # finished trials are reused, not re-run: the same jobs, no new ones
        assert sorted(again.job_ids) == job_ids, f"trial {number} ran again"
        assert again.state == next(t.state for t in before.trials if t.number == number)
    points = [tuple(sorted(t.params.items())) for t in after.trials]
    assert len(points) == len(set(points)), "a point was tried twice"
    assert [t.number for t in after.trials] == list(range(1, len(after.trials) + 1))
    pipelines = {j.pipeline for j in api.list_jobs(limit=500) if j.pipeline and j.pipeline.startswith(f"search-{job.id}-")}
    confirming = {f"search-{job.id}-confirm"} if after.confirmation else set()  # the best measured again, at the end
    trials = {t.pipeline for t in after.trials if t.job_ids}  # one ruled out by an earlier evaluation has no job
    assert pipelines == trials | {after.baseline.pipeline} | confirming  # no orphan trial
    for trial in before.trials:  # what was measured before the kill is what the resumed search reads
        if trial.state == "complete":
            assert (by_number[trial.number].p50_ms, by_number[trial.number].accuracy) == (trial.p50_ms, trial.accuracy)
    if before.best is not None:  # a sound trial within the drop (its cell may be unstable on a loaded machine)
        assert after.best is not None and after.best.p50_ms <= before.best.p50_ms  # the best only gets faster
    assert job.result["search"]["best"] == (after.best.number if after.best else None)  # saved in the job's result


def test_a_degenerate_or_unsound_trial_is_never_picked(searched):
    status = searched["after"]
    degenerate = [t for t in status.trials if any(p.startswith("degenerate") for p in t.problems)
                  or (t.reason or "").startswith("degenerate")]
    assert degenerate, [(t.number, t.params, t.state, t.reason, t.accuracy) for t in status.trials]
    for trial in degenerate:
        assert trial.state == "pruned" and trial.p50_ms is None  # caught after its evaluation: never benchmarked
    excluded = {t.number for t in status.trials if t.problems or t.state != "complete"}
    assert not excluded & set(status.front)
    if status.best is not None:
        assert status.best.number not in excluded and status.best.drop_points <= MAX_DROP and not status.best.problems
    else:  # nothing sound within the drop: every complete trial says why
        assert all(t.problems for t in status.trials if t.state == "complete")


def test_a_cell_unsound_by_noise_is_measured_again_and_never_made_a_fact(searched):
    """With a sample floor no cell can reach, every cell is unsound only by how it was measured: the search measures
    the baseline and the trial again (REMEASURES more times each, no more), and still picks nothing."""
    from jobs.search.runner import REMEASURES

    api = searched["api"]
    job = api.submit_search("bare", "toy", max_drop_points=MAX_DROP, batch_size=1, seq_len=32, budget_s=BUDGET_S,
                            space={"student": ["none"], "backend": ["pytorch-int8"]}, quick=True, n_trials=1)
    floor = {"WORKBENCH_MIN_SAMPLES": "100000"}
    run_cli("worker", "--burst", env=floor)
    with pytest.MonkeyPatch.context() as mp:  # the reader's rules decide what is sound, as the search's did
        mp.setenv(*next(iter(floor.items())))
        status = api.search_status(job.id)
    assert api.get_job(job.id).status.value == "succeeded", api.job_log(job.id)[-3000:]
    for row in (status.baseline, *status.trials):
        benchmarks = [api.get_job(i) for i in row.job_ids if api.get_job(i).kind == "benchmark"]
        assert len(benchmarks) == 1 + REMEASURES and all(b.status.value == "succeeded" for b in benchmarks)
        assert row.only_noisy and any(p.startswith("too few samples") for p in row.problems)
    assert status.best is None and status.front == []
    assert "measuring again (too few samples" in api.job_log(job.id)


def test_a_search_run_again_starts_from_what_an_earlier_search_made(searched):
    """The same model, data and steps in a new search: its trials start from the variants the first search's jobs
    made (the same kind, params, input, dataset and evaluation), so nothing is distilled or quantized twice, and a
    trial whose student the first search's evaluation rules out is stopped without running."""
    api, first = searched["api"], searched["after"]
    job = api.submit_search("bare", "toy", max_drop_points=MAX_DROP, batch_size=1, seq_len=32, budget_s=BUDGET_S,
                            space={"student": ["none", "small-4x256"], "backend": ["pytorch-int8"]}, quick=True,
                            n_trials=2)
    run_cli("worker", "--burst")
    assert api.get_job(job.id).status.value == "succeeded", api.job_log(job.id)[-3000:]
    again = api.search_status(job.id)
    made_before = {t.params["student"]: t for t in first.trials if t.params["backend"] == "pytorch-int8"}
    assert sorted(t.params["student"] for t in again.trials) == ["none", "small-4x256"]
    for trial in again.trials:
        earlier = made_before[trial.params["student"]]
        reused = trial.reused
        assert reused is not None and reused["trial"] is None and reused["pipeline"].startswith(
            f"search-{searched['job'].id}-"), trial
        maker = api.get_job(reused["job"])
        assert maker.status.value == "succeeded" and maker.produced_variant_id == reused["variant_id"]
        made_here = [api.get_job(i) for i in trial.job_ids if api.get_job(i).kind not in ("evaluate", "benchmark")]
        if trial.params["student"] == "none":  # full depth in int8: the first search's variant, evaluated here
            assert reused["steps"] == 1 and trial.reused_whole and made_here == [], trial
            assert reused["variant_id"] == earlier.variant_id and trial.variant_id == earlier.variant_id
            assert trial.state == "complete" and trial.accuracy == pytest.approx(earlier.accuracy)
        else:  # its student was made (and ruled out) by the first search: stopped before quantizing it
            assert reused["steps"] == 1 and maker.kind == "distill" and trial.state == "pruned", trial
            assert all(j.status.value == "cancelled" for j in made_here)
    assert "made already by job" in api.job_log(job.id)


def test_steps_made_elsewhere_are_a_chain_of_jobs_that_made_what_the_trial_would(home):
    """`made_elsewhere` on catalog rows: the longest chain of succeeded jobs from the start variant with the trial's
    kinds and params, on its data, in a pipeline that evaluated as the search does; not this search's own, not a job
    of no pipeline, not a step bound to the machine that ran it; where a job ran is not part of what it made."""
    from jobs.search.elsewhere import made_elsewhere
    from storage import catalog, queue
    from storage.orm import JobStatus
    from tests.support.rows import placeholder_dataset, placeholder_model

    model, root = placeholder_model()
    data = placeholder_dataset()
    scoring = {"split": "test", "max_examples": 0, "batch_size": 32, "tolerance_points": 0.5}
    distill = ("distill", {"student": "half-layers", "epochs": 2, "lora_target_modules": ("query", "value")})
    quantize = ("quantize", {"method": "ort-dynamic-int8", "reduce_range": "on", "op_types": ()})

    def ran(step, source, pipeline, evaluation=scoring, **extra):
        kind, params = step
        job = queue.enqueue(kind, {**json.loads(json.dumps(params)), **extra}, model_id=model.id, variant_id=source.id,
                            dataset_id=data.id, pipeline=pipeline, evaluation=evaluation)
        assert queue.claim_next("w", ["cpu"]).id == job.id
        made = catalog.create_variant(model_id=model.id, parent_id=source.id, name=f"made by {job.id}",
                                      artifact_dir="/nonexistent", runtime="pytorch", precision="fp32", recipe={},
                                      files=[], sha256=str(job.id), size_bytes=1)
        assert queue.finish(job.id, JobStatus.SUCCEEDED, produced_variant_id=made.id)
        return job.id, made

    def found(steps, evaluation=scoring):
        return made_elsewhere(root.id, steps, data.id, evaluation, "search-9-")

    assert found([distill, quantize]) is None
    ran(distill, root, None)  # a single job (the Optimize tab's): no pipeline holds its variant's evaluation
    ran(distill, root, "search-9-t1")  # this search's own: an earlier trial's, found by the search itself
    ran(distill, root, "search-5-t2", evaluation={**scoring, "max_examples": 200})  # scored on fewer examples
    assert found([distill, quantize]) is None
    made, student = ran(distill, root, "search-5-t2", ran_on={"node": "10.0.0.2"})  # Ray notes where it ran
    assert found([distill, quantize]) == {"trial": None, "steps": 1, "variant_id": student.id, "job": made,
                                          "pipeline": "search-5-t2"}
    assert found([distill], {**scoring, "tolerance_points": 1.0})["job"] == made  # a tolerance only flags
    quantized, int8 = ran(quantize, student, "search-5-t3")
    assert found([distill, quantize]) == {"trial": None, "steps": 2, "variant_id": int8.id, "job": quantized,
                                          "pipeline": "search-5-t3"}
    auto = ("quantize", {**quantize[1], "reduce_range": "auto"})  # resolved on the CPU that ran it
    ran(auto, student, "search-5-t4")
    assert found([distill, auto])["steps"] == 1
    torch_int8 = ("quantize", {"method": "torch-dynamic-int8", "reduce_range": "auto"})  # takes no reduce_range
    ran(torch_int8, student, "search-5-t5")
    assert found([distill, torch_int8])["steps"] == 2


def test_compare_shows_a_search_read_only_with_the_wizards_figures(searched):
    """Compare's Searches section (what viewers get; the wizard is editors'): the newest search unless one is picked,
    with the same budget line, best sentence and trial rows as the wizard's Search step."""
    from workbench.tabs.compare_searches import searches_view
    from workbench.tabs.wizard_search import views

    job = searched["job"]
    picker, budget, best, chart, table = searches_view(str(job.id), "accuracy")
    assert picker["value"] == str(job.id) and str(job.id) in [v for _, v in picker["choices"]]
    wizard = views(searched["api"].search_status(job.id), "accuracy")
    assert (budget, best) == wizard[:2] and budget.startswith("**Budget:**")
    assert table["visible"] and table["value"].equals(wizard[3]["value"]) and chart["visible"]
    assert len(table["value"]) == len(searched["after"].trials)  # a row per trial
    newest, *_ = searches_view(None)
    assert newest["value"] == str(max(int(v) for _, v in newest["choices"]))  # nothing picked: the newest search


def test_the_front_equals_a_brute_force_computation(searched):
    from jobs.search.status import best

    status = searched["after"]
    eligible = [t for t in status.trials if t.state == "complete" and not t.problems]

    def dominated(t):
        return any(u.p50_ms <= t.p50_ms and u.accuracy >= t.accuracy and (u.p50_ms < t.p50_ms or u.accuracy > t.accuracy)
                   for u in eligible if u is not t)

    expected = sorted((t for t in eligible if not dominated(t)), key=lambda t: t.p50_ms)
    assert status.front == [t.number for t in expected]
    within = [t for t in eligible if t.drop_points <= MAX_DROP + 1e-9]
    pick = best(status.trials, status.baseline, MAX_DROP)  # the search's own pick, before its run-off
    assert (pick.number if pick else None) == (min(within, key=lambda t: t.p50_ms).number if within else None)
    again = status.confirmation
    decided = again.picked if again is not None and again.state == "complete" else (pick.number if pick else None)
    assert (status.best.number if status.best else None) == decided


def test_the_best_is_measured_again_with_its_runners_up_and_the_baseline_in_one_job(searched):
    """Once the search stops, its best, the next fastest trials within the drop and the baseline are benchmarked in
    one job of their own, interleaved: the speed-up it ends with is a same-run ratio, shown beside the best, and a
    runner-up replaces the pick only when that job shows it faster beyond doubt."""
    from jobs.search.confirm import RUNOFF_SIZE
    from jobs.search.runner import REMEASURES
    from jobs.search.status import best
    from workbench.search_words import best_sentence

    api, status = searched["api"], searched["after"]
    again = status.confirmation
    pick = best(status.trials, status.baseline, MAX_DROP)
    if pick is None:  # nothing picked (a loaded machine can leave every cell unsound): nothing to confirm
        assert again is None and status.best is None
        return
    assert again is not None and again.trial == pick.number and again.state == "complete", again
    within = [t for t in status.trials if t.eligible and t.drop_points <= MAX_DROP + 1e-9 and t.number != pick.number]
    runners_up = []
    for t in sorted(within, key=lambda t: t.p50_ms):
        if t.variant_id not in [pick.variant_id, *[r.variant_id for r in runners_up]]:
            runners_up.append(t)
    expected = [(pick.number, pick.variant_id)] + [(t.number, t.variant_id) for t in runners_up][: RUNOFF_SIZE - 1]
    assert [(e.trial, e.variant_id) for e in again.entrants] == expected
    job = api.get_job(again.job_id)
    assert job.kind == "benchmark" and job.status.value == "succeeded"
    runoffs = [j for j in api.list_jobs() if j.pipeline == f"search-{searched['job'].id}-confirm"]
    assert again.runs == len(runoffs) and job.id == max(j.id for j in runoffs)  # the newest is the one read
    # measured again only while the winner's or the baseline's cell was unsound by noise, REMEASURES more times at most
    assert again.runs == 1 + REMEASURES if again.problems else again.runs <= 1 + REMEASURES
    assert sorted(job.result["variants"]) == sorted([v for _, v in expected] + [status.baseline.variant_id])
    assert again.job_id not in [i for t in [status.baseline, *status.trials] for i in t.job_ids]
    winner = next(e for e in again.entrants if e.trial == again.picked)
    assert status.best.number == again.picked and (again.picked == pick.number) == (not again.why)
    assert again.speedup == pytest.approx(again.baseline_p50_ms / again.best_p50_ms) == pytest.approx(winner.speedup)
    assert "in one job" in searched["job"].message
    figures = f"({again.best_p50_ms:.2f} vs {again.baseline_p50_ms:.2f} ms p50)"
    if again.sound:  # the same-job figure leads the sentence; the trial's own follows
        assert f"— {again.speedup:.1f}x faster {figures}" in best_sentence(status), best_sentence(status)
    else:
        assert f"{again.speedup:.1f}x {figures}{again.which_job}, not sound" in best_sentence(status), best_sentence(status)


def test_a_runner_up_wins_the_run_off_only_when_faster_beyond_doubt():
    """The run-off's rule on drawn latencies: clearly faster wins, overlapping stays with the search's pick, and a
    cell with problems neither wins nor loses."""
    import numpy as np

    from jobs.search.confirm import Confirmation, Entrant, candidates, runoff_winner
    from jobs.search.status import TrialRow, after_runoff

    rng = np.random.default_rng(0)
    samples = {}

    def entrant(trial, centre, spread=0.2, problems=(), drop=None):
        samples[trial] = tuple(rng.normal(centre, spread, 40))
        return Entrant(trial, trial * 10, centre, None, problems, drop)

    pick = entrant(1, 10.0)
    assert runoff_winner(pick, [], samples) == (pick, "")
    winner, how = runoff_winner(pick, [entrant(2, 9.95, 0.5), entrant(3, 8.0), entrant(4, 7.0)], samples)
    assert winner.trial == 4 and how.startswith("trial 4 ran 1.4") and "as fast as trial 1 in the same job" in how
    assert runoff_winner(pick, [entrant(2, 9.9, 1.0)], samples) == (pick, "")  # within noise: the pick stays
    # 4 % faster with a tight interval: within the benchmark's 5 % resolution, so not beyond doubt; at 1 % it is
    assert runoff_winner(pick, [entrant(2, 9.6, 0.05)], samples) == (pick, "")
    assert runoff_winner(pick, [entrant(2, 9.6, 0.05)], samples, resolution=0.01)[0].trial == 2
    assert runoff_winner(pick, [entrant(2, 11.0)], samples) == (pick, "")  # slower
    assert runoff_winner(pick, [entrant(2, 5.0, problems=("unstable",))], samples) == (pick, "")
    assert runoff_winner(pick, [Entrant(5, 50, problems=("not measured at the goal's cell",))], samples) == (pick, "")
    unsound = entrant(1, 10.0, problems=("machine busy",))
    assert runoff_winner(unsound, [entrant(2, 5.0)], samples) == (unsound, "")
    # a tie in speed goes to the more accurate; speed first
    pick = entrant(1, 10.0, drop=0.37)
    winner, how = runoff_winner(pick, [entrant(2, 10.4, 0.05, drop=0.13)], samples)  # 4 % slower: as fast
    assert winner.trial == 2 and how.startswith("trial 2 ran as fast as trial 1 in the same job (trial 1: 1.04x")
    assert how.endswith("not beyond the benchmark's 5% resolution) and loses 0.13 points, not 0.37")
    assert runoff_winner(pick, [entrant(2, 10.0, drop=0.45)], samples) == (pick, "")  # level, less accurate
    assert runoff_winner(pick, [entrant(2, 10.0)], samples) == (pick, "")  # its accuracy unknown: no tie broken
    assert runoff_winner(pick, [entrant(2, 7.0, drop=0.45)], samples)[0].trial == 2  # faster beyond doubt
    winner, how = runoff_winner(pick, [entrant(2, 7.0, drop=0.45), entrant(3, 7.0, drop=0.2)], samples)
    assert winner.trial == 3 and how  # whichever of the two level ones the interval puts first

    def row(number, variant, p50, eligible=True):
        return TrialRow(number, "complete" if eligible else "failed", {}, [], variant, 0.8, 0.0, p50, None, None, [],
                        None, [])

    rows = [row(1, 11, 5.0), row(2, 11, 4.0), row(3, 12, 6.0), row(4, 13, 5.5), row(5, 14, 9.0)]
    assert candidates(rows[0], rows) == [(1, 11), (4, 13), (3, 12)]  # one per variant, fastest first
    done = Confirmation(1, "complete", 7, 5.0, 20.0, 4.0, winner=4, why="trial 4 ran ...")
    assert after_runoff(rows[0], rows, done).number == 4
    assert after_runoff(rows[0], rows, Confirmation(1, "running", 7)).number == 1
    assert after_runoff(rows[2], rows, done).number == 3  # a run-off of another pick does not decide this one
    assert after_runoff(rows[0], [*rows[:3], row(4, 13, 5.5, eligible=False)], done).number == 1
    assert after_runoff(None, rows, done) is None


def test_a_run_off_unsound_by_noise_says_which_cells_and_its_sentence_which_job_it_is():
    """A run-off cell unsound only by how it was measured (the pick's, a runner-up's or the baseline's) is noise; a
    runner-up that was not measured at all is not, nor is a run-off still running. Only the winner's and the
    baseline's make the figure unsound (`problems`, what the search measures again for)."""
    from jobs.search.confirm import NOT_MEASURED, Confirmation, Entrant
    from workbench.search_words import confirmation_sentence

    def runoff(entrants=(), baseline=(), runs=1, state="complete"):
        problems = tuple(f"trial 1: {p}" for e in entrants if e.trial == 1 for p in e.problems) \
            + tuple(f"baseline: {p}" for p in baseline)
        return Confirmation(1, state, 9, 10.0, 47.0, 4.7, problems, winner=1, runs=runs,
                            entrants=(Entrant(1, 11, 10.0, 4.7), *entrants), baseline_problems=baseline)

    assert runoff().noise == () and runoff().sound
    unstable = runoff(baseline=("unstable: window medians 6% apart",))
    assert unstable.noise == ("baseline: unstable: window medians 6% apart",) and not unstable.sound
    busy_runner_up = runoff([Entrant(3, 13, 9.0, 5.2, ("machine busy (other processes and steal took 30% of the CPU)",))])
    assert busy_runner_up.noise == ("trial 3: machine busy (other processes and steal took 30% of the CPU)",)
    assert busy_runner_up.sound and not busy_runner_up.problems  # the winner's figure stands: no new job
    assert runoff([Entrant(3, 13, problems=(NOT_MEASURED,))]).noise == ()
    assert runoff(baseline=("unstable",), state="running").noise == ()

    def said(confirmation):
        return confirmation_sentence(type("Status", (), {"confirmation": confirmation})())

    assert said(runoff()) == "Measured again in one job with the baseline: 4.7x (10.00 vs 47.00 ms p50)."
    assert said(runoff(runs=2)) == ("Measured again in one job with the baseline: 4.7x (10.00 vs 47.00 ms p50) in "
                                    "run-off job 2 (the earlier had cells unsound by noise).")
    assert said(runoff(baseline=("unstable",), runs=3)).endswith("in run-off job 3 (the earlier had cells unsound by "
                                                                 "noise), not sound: baseline: unstable.")
    assert said(Confirmation(1, "running", 9, runs=2)) == ("Measuring trial 1 and the baseline again in one job in "
                                                           "run-off job 2 (the earlier had cells unsound by noise)…")


def test_front_and_best_equal_brute_force_on_many_random_trials():
    """The same functions the search uses, on 300 random sets of trials with ties, problems and failed trials."""
    import random

    from jobs.search.status import TrialRow, best, front

    def row(number, state="complete", p50=None, accuracy=None, problems=()):
        return TrialRow(number, state, {}, [], number, accuracy, None, p50, None, None, list(problems), None, [])

    rng = random.Random(0)
    for _ in range(300):
        rows = []
        for number in range(1, rng.randint(1, 12)):
            state = rng.choice(["complete"] * 4 + ["pruned", "failed", "running"])
            measured = state == "complete"
            rows.append(row(number, state, rng.choice([1.0, 2.0, 3.0, rng.uniform(1, 5)]) if measured else None,
                            rng.choice([0.6, 0.7, 0.8]) if state != "failed" else None,
                            rng.choice([(), (), ("unstable: window medians 9% apart",), ("degenerate: x",)])))
        baseline = row(0, p50=6.0, accuracy=0.8)
        eligible = [r for r in rows if r.state == "complete" and not r.problems]
        on_front = [r for r in eligible if not any(
            u.p50_ms <= r.p50_ms and u.accuracy >= r.accuracy and (u.p50_ms < r.p50_ms or u.accuracy > r.accuracy)
            for u in eligible)]
        # equal points (same latency and accuracy) are one point on the front: the first one found stays
        unique = {}
        for r in on_front:
            unique.setdefault((r.p50_ms, r.accuracy), r)
        assert sorted(front(rows)) == sorted(r.number for r in unique.values())
        within = [r for r in eligible if (0.8 - r.accuracy) * 100 <= 10 + 1e-9]
        chosen = best(rows, baseline, 10)
        assert (chosen.p50_ms if chosen else None) == (min(r.p50_ms for r in within) if within else None)
        assert chosen is None or not chosen.problems


def test_search_status_on_the_command_line(searched):
    import json

    job, status = searched["job"], searched["after"]
    shown = json.loads(run_cli("search-status", str(job.id), "--json").stdout)
    assert shown["job_id"] == job.id and shown["stop_reason"] == status.stop_reason
    assert [t["number"] for t in shown["trials"]] == [t.number for t in status.trials]
    assert (shown["best"] or {}).get("number") == (status.best.number if status.best else None)
    assert shown["front"] == status.front and shown["baseline"]["variant_id"] == status.baseline.variant_id
    text = run_cli("search-status", str(job.id)).stdout
    assert f"search job {job.id}: succeeded" in text and "stopped: trial limit reached" in text
    assert (f"best: trial {status.best.number}" if status.best else "best: none yet") in text
    for trial in status.trials:
        assert f" {trial.number} {trial.state}" in text


def test_bad_input_is_refused_with_nothing_queued(home, tmp_path):
    from jobs import api
    from storage import queue
    from storage.errors import InvalidInput, NotFound
    from tests.support.rows import placeholder_dataset, placeholder_model

    placeholder_model("m")
    placeholder_dataset("d", labels=("negative", "neutral", "positive"))
    for kwargs, error, words in [
        ({"max_drop_points": -1, "budget_s": 60}, InvalidInput, "maximum accuracy drop"),
        ({"max_drop_points": 1, "budget_s": 0}, InvalidInput, "time budget"),
        ({"max_drop_points": 1, "budget_s": 60, "batch_size": 0}, InvalidInput, "batch size"),
        ({"max_drop_points": 1, "budget_s": 60, "space": {"runtime": ["onnx"]}}, InvalidInput, "unknown search dimension"),
        ({"max_drop_points": 1, "budget_s": 60, "space": {"student": ["none"], "prune": ["none"],
                                                            "backend": ["pytorch-fp32"]}},
         InvalidInput, "no point besides the fp32 baseline"),
    ]:
        with pytest.raises(error, match=words):
            api.submit_search("m", "d", **kwargs)
    with pytest.raises(NotFound):
        api.submit_search("no-such-model", "d", max_drop_points=1, budget_s=60)
    with pytest.raises(NotFound):
        api.submit_search("m", "no-such-dataset", max_drop_points=1, budget_s=60)
    assert queue.list_jobs() == []
    refused = run_cli("search", "m", "d", "--max-drop", "-1", "--budget-min", "5", check=False)
    assert refused.returncode == 2 and "maximum accuracy drop" in refused.stderr
    assert queue.list_jobs() == []


def test_a_worker_restricted_to_a_pipeline_claims_only_its_jobs(home):
    """How a search runs its trials while it holds the only worker slot: a burst worker for one pipeline."""
    from jobs.runner.worker import Worker
    from storage import queue

    other = queue.enqueue("test-sleep", {"seconds": 0}, pipeline="someone-else")
    mine = [queue.enqueue("test-sleep", {"seconds": 0}, pipeline="search-9-t1") for _ in range(2)]
    assert queue.claim_next("w", ["cpu"], pipeline="nothing-queued") is None
    assert Worker(burst=True, poll_interval=0.05, pipeline="search-9-t1").run() == 2
    assert [queue.get_job(j.id).status.value for j in mine] == ["succeeded", "succeeded"]
    assert queue.get_job(other.id).status.value == "queued"  # left to the other workers


def test_every_point_of_the_space_is_a_pipeline_the_workbench_accepts(home):
    """The space offers only what runs here, and each of its points is a recipe the pipeline checks accept."""
    from jobs.runner.submit import Step, check_pipeline
    from jobs.runtimes.devices import fast_bf16
    from jobs.search import space
    from jobs.search.goal import SearchGoal
    from tests.support.rows import placeholder_dataset, placeholder_model

    _, root = placeholder_model("m")
    placeholder_dataset("d", labels=("negative", "neutral", "positive"))
    full = space.default_space("cpu", quick=False)
    assert not {"tensorrt-fp16", "pytorch-fp16"} & set(full["backend"])  # GPU backends: not on a CPU
    assert ("pytorch-bf16" in full["backend"]) == fast_bf16("cpu")  # bf16 only where it is fast
    points = space.points(full)
    assert len(points) == space.size(full) and not any(space.is_baseline(p) for p in points)
    assert len({space.key(p) for p in points}) == len(points)
    first = space.wizard_point(full, "cpu")  # the wizard's recipe for this CPU is tried first
    assert first is None or space.key(first) in {space.key(p) for p in points}
    goal = SearchGoal(max_drop_points=1, budget_s=60)
    for point in points:
        for quick in (False, True):
            steps = space.steps(point, goal, quick=quick, fusion_ok=True)
            assert steps, point
            check_pipeline([Step(s["kind"], s["params"]) for s in steps], variant=root.id, dataset="d")
    # a student is made once and reused by later trials, and needs the data: it trains on more than a recovery
    hour = SearchGoal(max_drop_points=1, budget_s=3600)
    recovered = next(p for p in points if p["student"] != "none" and p.get("recovery") == "finetune")
    caps = {s["kind"]: s["params"]["max_train_examples"]
            for s in space.steps(recovered, hour, quick=False, fusion_ok=True) if s["kind"] in ("distill", "finetune")}
    assert caps["distill"] > caps["finetune"] >= 2000, caps


def test_on_real_traffic_the_space_also_tries_a_shorter_maximum_length(home):
    """A maximum length (a fraction of the variant's own) is a dimension on real traffic only; a truncated point's
    recipe is the same point's at full length plus one truncate step, which the pipeline checks accept."""
    from jobs.runner.submit import Step, check_pipeline
    from jobs.search import space
    from jobs.search.goal import SearchGoal
    from storage.errors import InvalidInput
    from tests.support.rows import placeholder_dataset, placeholder_model
    from workbench.search_words import point_words

    _, root = placeholder_model("m")
    placeholder_dataset("d", labels=("negative", "neutral", "positive"))
    grid, real = space.build_space("cpu", False, None), space.build_space("cpu", False, None, "real")
    assert "max_length" not in grid and real["max_length"] == ("full", "3/4", "1/2")
    grid_points, real_points = space.points(grid), space.points(real)
    # every grid point (and the baseline) at three lengths, less the baseline at full length
    assert len(real_points) == 3 * (len(grid_points) + 1) - 1
    assert {space.key(p) for p in grid_points} == {space.key({k: v for k, v in p.items() if k != "max_length"})
                                                   for p in real_points if p["max_length"] == "full"}
    # the baseline as the sampler names it in each space: never a trial
    assert space.baseline_point(grid) == {"student": "none", "prune": "none", "backend": "pytorch-fp32"}
    assert space.baseline_point(real) == {**space.baseline_point(grid), "max_length": "full"}
    assert space.is_baseline(space.baseline_point(real))
    assert space.key(space.baseline_point(real)) not in {space.key(p) for p in real_points}
    first = space.wizard_point(real, "cpu")  # the wizard's recipe, at the length it was trained at
    assert first is None or (first["max_length"] == "full" and space.key(first) in {space.key(p) for p in real_points})
    goal = SearchGoal(max_drop_points=1, budget_s=60, traffic="real")
    for point in real_points:
        steps = space.steps(point, goal, quick=False, fusion_ok=True)
        full = space.steps({**point, "max_length": "full"}, goal, quick=False, fusion_ok=True)
        if point["max_length"] == "full":
            assert all(s["kind"] != "truncate" for s in steps)
        else:  # last, so it reuses the whole recipe of the point at full length
            assert steps[:-1] == full and steps[-1] == {"kind": "truncate", "params": {
                "fraction": space.TRUNCATIONS[point["max_length"]]}}
            assert "truncated to" in point_words(point)
        check_pipeline([Step(s["kind"], s["params"]) for s in steps], variant=root.id, dataset="d")
    # a grid cell sets its own length: a shorter maximum could only lose accuracy there
    with pytest.raises(InvalidInput, match="real traffic only"):
        space.build_space("cpu", False, {"max_length": ["full", "1/2"]})
    assert "max_length" in space.build_space("cpu", False, {"max_length": ["full"]})


def test_a_distillation_trains_on_what_this_machine_can_train_in_its_share_of_the_budget():
    """Eight examples per second of budget, but never more than DISTILL_SHARE of the budget at the speed this
    machine fine-tuned the baseline (a slower CPU gets less data, not a distillation the budget cuts short)."""
    from jobs.search import space
    from jobs.search.goal import SearchGoal

    def record(mode, examples, seconds):
        return {"training": {"mode": mode, "train_examples": examples, "history": [{"seconds": s} for s in seconds]}}

    assert space.training_rate(record("full", 600, [20.0, 30.0, 12.0])) == 50.0  # the fastest (least disturbed) epoch
    assert space.training_rate(record("lora", 600, [10.0])) is None  # LoRA trains faster than a distillation can
    assert space.training_rate({"training": {"mode": "full", "train_examples": 600, "history": []}}) is None
    assert space.training_rate(None) is None and space.training_rate({}) is None
    hour = 3600.0
    assert space.distill_caps(hour)["max_train_examples"] == 28_800
    epochs = space.distill_caps(hour)["epochs"]
    slow = space.distill_caps(hour, 15.0)["max_train_examples"]  # a half-depth student from the logits
    cost = space.distill_cost("half-layers", epochs)
    assert slow == int(space.DISTILL_SHARE * hour * 15.0 / cost) < 28_800
    assert slow * cost / 15.0 <= space.DISTILL_SHARE * hour  # it fits in its share at that speed
    # a shallower student costs less a text, so it gets more of the data; the teacher's hidden states cost more
    third = space.distill_caps(hour, 15.0, "third-layers")["max_train_examples"]
    hidden = space.distill_caps(hour, 15.0, "third-layers", intermediate=True)["max_train_examples"]
    assert hidden < third and slow < third < 28_800
    assert space.distill_cost("third-layers", epochs) < cost < space.distill_cost("half-layers", epochs, True)
    assert space.distill_caps(hour, 1000.0)["max_train_examples"] == 28_800  # a fast machine: the usual cap
    assert space.distill_caps(60.0, 0.1)["max_train_examples"] == 2000  # never below the floor
    goal = SearchGoal(max_drop_points=1, budget_s=hour)
    for student, intermediate, expected in (("half-layers", "off", slow), ("third-layers", "off", third),
                                            ("third-layers", "on", hidden)):
        point = {"student": student, "intermediate": intermediate, "prune": "none", "backend": "pytorch-fp32"}
        distill = space.steps(point, goal, quick=False, fusion_ok=True, train_rate=15.0)[0]
        assert distill["kind"] == "distill" and distill["params"]["max_train_examples"] == expected


def test_a_search_opens_with_the_wizards_recipe_then_the_shallowest_student():
    """The first two trials, before the sampler chooses: the wizard's recipe for this CPU, then the shallowest
    student made from the teacher's layers, from its logits, on that recipe's runtime; both points of the space."""
    from jobs.search import space

    for quick in (False, True):
        built = space.default_space("cpu", quick=quick)
        valid = {space.key(p) for p in space.points(built)}
        wizard = space.wizard_point(built, "cpu")
        opening = space.opening_points(built, "cpu")
        student = opening[-1]
        assert student == space.student_point(built, wizard) and space.key(student) in valid
        assert student["student"] == ("half-layers" if quick else "third-layers")  # the shallowest in the space
        assert student["intermediate"] == "off" and student["prune"] == "none"
        assert opening == ([wizard] if wizard else []) + [student]
        runs_as = wizard or space.baseline_point(built)
        assert {k: v for k, v in student.items() if k != "intermediate"} == {**runs_as, "student": student["student"]}
    # a space without a student made from the teacher's layers has no student opening
    no_students = space.build_space("cpu", False, {"student": ["none", "small-4x256"]})
    assert space.student_point(no_students, space.wizard_point(no_students, "cpu")) is None
    assert space.opening_points(no_students, "cpu") == [p for p in [space.wizard_point(no_students, "cpu")] if p]


def test_a_real_traffic_search_measures_a_truncated_variant_at_its_shorter_length(tmp_path, monkeypatch, minilm_dir):
    """The smallest real-traffic space with a length dimension: fp32 at full length is the baseline, so the one
    trial is that model read at half its length, made by a truncate job, evaluated and measured on real traffic."""
    from jobs import api
    from jobs.runtimes.base import read_variant_meta
    from storage import catalog, db
    from tests.conftest import use_database
    from tests.support.tiny import tiny_encoder

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    use_database(monkeypatch, None)
    for name, value in WORKER_ENV.items():
        monkeypatch.setenv(name, value)
    db.dispose_all()
    db.upgrade()
    try:
        api.add_model(api.ModelRequest(str(tiny_encoder(tmp_path / "bare", minilm_dir)), name="bare"))
        api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(tmp_path / "toy.csv")), name="toy"))
        api.submit("finetune", {"epochs": 8, "learning_rate": 0.003, "max_length": 16, "max_val_examples": 20},
                   model="bare", dataset="toy", evaluation={"max_examples": 0})
        run_cli("worker", "--burst")
        job = api.submit_search("bare", "toy", max_drop_points=100, traffic="real", budget_s=BUDGET_S, quick=True,
                                space={"student": ["none"], "prune": ["none"], "backend": ["pytorch-fp32"],
                                       "max_length": ["full", "1/2"]})
        run_cli("worker", "--burst")
        assert api.get_job(job.id).status.value == "succeeded", api.job_log(job.id)[-3000:]
        status = api.search_status(job.id)
        assert status.stop_reason == "space exhausted"
        assert [t.params for t in status.trials] == [{"student": "none", "prune": "none", "backend": "pytorch-fp32",
                                                      "max_length": "1/2"}]
        trial = status.trials[0]
        assert trial.state == "complete" and [s["kind"] for s in trial.steps] == ["truncate"], trial
        assert read_variant_meta(catalog.get_variant(trial.variant_id).artifact_dir)["max_length"] == 8
        measured = [m for m in catalog.list_measurements(variant_ids=[trial.variant_id]) if m.traffic]
        assert measured and all(m.traffic["token_lengths"]["max"] <= 8 for m in measured)
    finally:
        db.dispose_all()


def test_the_fastest_runtime_is_tried_next_on_a_smaller_model_already_made():
    """What the 60-minute run on the AMD EPYC missed: a half-depth student within the drop and ONNX Runtime int8
    the fastest on the full model, never tried together. Their combination is the next trial, once."""
    from jobs.search import space
    from jobs.search.combine import next_combination, runtime_gain
    from jobs.search.status import TrialRow

    full = space.default_space("cpu", quick=False)
    ort = {"student": "none", "prune": "none", "backend": "onnx-int8", "ort_level": "basic", "reduce_range": "on"}
    student = {"student": "half-layers", "intermediate": "off", "prune": "none"}

    def keys(of_space):
        return {space.key(p) for p in space.points(of_space)}

    def row(number, params, speedup, drop, state="complete", problems=()):
        return TrialRow(number, state, params, [], number + 10, 0.78, drop, 10.0, 100.0, speedup, list(problems),
                        f"p{number}", [])

    rows = [row(1, ort, 2.33, 0.39), row(2, {**student, "backend": "openvino-int8"}, 1.41, 0.08),
            row(3, {**student, "backend": "pytorch-int8"}, 1.8, 0.60),  # past the drop: not a model to build on
            row(4, {"student": "third-layers", "intermediate": "off", "prune": "none", "backend": "pytorch-fp32"},
                2.9, 0.2, problems=("unstable",))]  # unsound: not a model to build on either
    tried = {space.key(r.params) for r in rows}
    assert next_combination(rows, 0.5, keys(full), tried) == {**student, **{k: v for k, v in ort.items()
                                                                       if k not in ("student", "prune")}}
    assert next_combination(rows, 0.5, keys(full), tried | {space.key({**student, **ort, **student})}) is None  # once
    assert next_combination(rows[:1], 0.5, keys(full), tried) is None  # no smaller model yet
    assert next_combination(rows, 0.05, keys(full), tried) is None  # nothing within a tighter drop
    # a smaller model that is itself the fastest: nothing to combine (its own point is tried)
    assert next_combination([row(2, {**student, "backend": "openvino-int8"}, 3.0, 0.08)], 0.5, keys(full), tried) is None
    # a runtime this space does not hold is never proposed
    narrow = {**full, "backend": tuple(b for b in full["backend"] if b != "onnx-int8")}
    assert next_combination(rows, 0.5, keys(narrow), tried) is None
    # the EPYC run at 21 minutes: a half-depth student within the drop by its own evaluation, in a trial whose pruning
    # then lost 20 points; ONNX Runtime int8 the fastest complete trial. The student alone is a smaller model made.
    pruned = row(2, {**student, "prune": "structured-50", "recovery": "none", "backend": "onnx-int8", "ort_level": "all"},
                 None, None, state="pruned")
    early = [rows[0], pruned]
    combined = {**student, **{k: v for k, v in ort.items() if k not in ("student", "prune")}}
    assert next_combination(early, 0.5, keys(full), tried) is None  # the trials alone offer no smaller model
    assert next_combination(early, 0.5, keys(full), tried, [student]) == combined
    # a smaller model of a complete trial comes before a student read from a step
    third = {"student": "third-layers", "intermediate": "on", "prune": "none"}
    assert next_combination(rows, 0.5, keys(full), tried, [third]) == combined
    assert next_combination(rows, 0.5, keys(full), tried | {space.key(combined)}, [third]) == \
        {**third, **{k: v for k, v in ort.items() if k not in ("student", "prune")}}
    # the second EPYC run at 48 minutes: a student in PyTorch fp32 measured faster (3.48x) than ONNX Runtime int8 of
    # the full model (2.72x), by its smaller model, not its runtime. The runtime tried next is still ONNX Runtime int8:
    # it ran the full model 2.72x faster than fp32, while OpenVINO int8 ran the other student 0.95x as fast as fp32.
    inter = {**student, "intermediate": "on"}
    second = [row(1, ort, 2.72, 0.39), row(4, {**inter, "backend": "pytorch-fp32"}, 3.48, 0.47),
              row(6, {**student, "backend": "openvino-int8"}, 2.31, 0.08),
              row(7, {**student, "backend": "pytorch-fp32"}, 2.43, -0.05)]
    assert next_combination(second, 0.5, keys(full), {space.key(r.params) for r in second}) == \
        {**inter, **{k: v for k, v in ort.items() if k not in ("student", "prune")}}
    assert runtime_gain(second[2], second) == pytest.approx(2.31 / 2.43)
    assert runtime_gain(row(2, {**student, "backend": "openvino-int8"}, 3.0, 0.08), rows) is None  # no fp32 of it
