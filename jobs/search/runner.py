"""The search job's body: measure the baseline, then ask the study for points and run each as a trial of real jobs
until the goal is met, the budget is spent, the trial limit is reached or the space is exhausted.

A trial is one pipeline: the steps that make its variant (each new variant evaluated, as always), then, only when
the evaluation is within the goal's drop and not degenerate, a benchmark of the variant at the goal's cell on this
machine. The best-so-far, the front and every trial are saved in the job's partial result after each change, so
they survive a crash and the UI follows them live; a restarted search resumes from them (see record.py).
"""

from __future__ import annotations

import json
import signal
import statistics
import threading
import time
from typing import Any, Callable

from jobs.decisions.compare import Rules
from jobs.runner.context import JobCancelled, JobContext, JobResult
from jobs.runner.executors import Executor, get_executor
from jobs.runner.submit import Step, check_evaluation_params, check_pipeline, submit_pipeline
from jobs.search import space as search_space
from jobs.search import study as search_study
from jobs.search.combine import next_combination, students_within
from jobs.search.confirm import candidates as confirm_candidates
from jobs.search.confirm import pipeline_name as confirm_pipeline
from jobs.search.confirm import read_confirmation
from jobs.search.drive import ShuttingDown, run_pipeline
from jobs.search.elsewhere import made_elsewhere
from jobs.search.goal import SearchGoal
from jobs.search.outcomes import Outcome, evaluation_failed, evaluation_in, making_steps, read
from jobs.search.record import CUT_BY_BUDGET, SearchRecord, TrialRecord, made_by, pipeline_name
from jobs.search.status import DROP_EPSILON, TrialRow, best, front, trial_row, trial_rows, within_drop
from jobs.tracking.runs import Tracker
from storage import catalog, queue, settings
from storage.entities import Dataset, Evaluation, Variant
from storage.errors import InvalidInput

REMEASURES = 2  # benchmarks a variant may get beyond its first when noise made its cell unsound
TRAINING_KINDS = ("finetune", "distill")  # steps that can win accuracy back
# How far past the allowed drop a step's variant may be before a trial whose later steps only change precision or
# runtime is stopped: a margin for an int8 or bf16 step that happens to gain a little, not a measured bound.
MIDWAY_SLACK_POINTS = 1.0


def goal_of(params: Any) -> SearchGoal:
    return SearchGoal(max_drop_points=params.max_drop_points, budget_s=params.budget_s, batch_size=params.batch_size,
                      seq_len=params.seq_len, traffic=params.traffic, device=params.device,
                      speedup=params.speedup or None)


def parse_space(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidInput(f"space must be a JSON object of dimension -> allowed values, got {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise InvalidInput("space must be a JSON object of dimension -> allowed values")
    return value


class Search:
    def __init__(self, params: Any, ctx: JobContext):
        self.params, self.ctx = params, ctx
        self.goal = goal_of(params)
        self.start: Variant = ctx.require_variant()
        self.dataset: Dataset = ctx.require_dataset()
        record = SearchRecord.from_result(ctx.job.result)
        if record is None:
            space = search_space.build_space(self.goal.device, params.quick, parse_space(params.space),
                                             self.goal.traffic)
            record = SearchRecord(
                started_at=time.time(), goal=self.goal.as_dict(), space={k: list(v) for k, v in space.items()},
                quick=params.quick, seed=params.seed, start_variant_id=self.start.id,
                baseline_pipeline=pipeline_name(ctx.job.id, None))
        else:
            record.restarts += 1
        self.record = record
        # SIGTERM: a cancel, or the worker shutting down. A plain flag, not an Event: a signal handler must take no
        # lock the interrupted main thread may hold (see Worker.on_signal)
        self.terminated = False
        self.baseline_variant_id: int | None = None
        self.train_rate: float | None = None  # the baseline's fine-tune here, in examples/s (see space.distill_caps)
        self.latest_rows: list[TrialRow] = []  # as of the last refresh_best
        self.executor: Executor | None = None  # set by run(): the executor its trials' workers share
        self.tracker: Tracker | None = None  # set by run(): the MLflow tracker they share
        from jobs.decisions.wizard import _fusion_ok
        from jobs.runner.registry import get_kind

        self.fusion_ok = _fusion_ok(self.start)
        self.evaluation = check_evaluation_params(
            {"max_examples": 0, **(get_kind("evaluate").quick_params if params.quick else {}),
             "tolerance_points": self.goal.max_drop_points})
        self.bench_params = {**self.goal.benchmark_params(),
                             **(get_kind("benchmark").quick_params if params.quick else {})}

    # ---- time, saving, progress ------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.time() - self.record.started_at

    def out_of_time(self) -> bool:
        return self.elapsed() >= self.goal.budget_s

    def save(self) -> None:
        self.record.elapsed_s = round(self.elapsed(), 2)
        self.ctx.record(self.record.to_result())

    def rows(self) -> tuple[TrialRow, list[TrialRow]]:
        return trial_rows(self.record)

    def _row(self, number: int) -> TrialRow:
        return trial_row(self.record, number)

    def refresh_best(self) -> TrialRow | None:
        baseline, rows = self.rows()
        self.latest_rows = rows
        chosen = best(rows, baseline, self.goal.max_drop_points)
        self.record.best = chosen.number if chosen else None
        self.record.front = front(rows)
        return chosen

    def progress(self, message: str) -> None:
        """Budget used as the fraction; written every time (a search's messages are few, none may be thinned)."""
        fraction = min(self.elapsed() / self.goal.budget_s, 0.99)
        self.ctx.log(f"[{fraction:4.0%}] {message}")
        queue.set_progress(self.ctx.job.id, fraction, message)

    def _run_pipeline(self, pipeline: str, hopeless: Callable[[], str | None] | None = None) -> str | None:
        return run_pipeline(pipeline, out_of_time=self.out_of_time, cancelled=self.ctx.cancelled,
                            shutting_down=self.shutting_down, hopeless=hopeless, executor=self.executor,
                            tracker=self.tracker)

    def shutting_down(self) -> bool:
        """SIGTERM without a cancel: the worker running the search is stopping (it re-queues the search)."""
        return self.terminated and not self.ctx.cancelled()

    # ---- the baseline ------------------------------------------------------------------------------------------

    def _enqueue_benchmark(self, pipeline: str, variant_id: int, depends_on: int | None, **extra: Any) -> None:
        plan = check_pipeline([Step("benchmark", {**self.bench_params, **extra})], variant=variant_id,
                              dataset=self.dataset.id)
        queue.enqueue("benchmark", plan.params[0], device=self.goal.device, model_id=self.start.model_id,
                      variant_id=variant_id, dataset_id=self.dataset.id, depends_on_id=depends_on, pipeline=pipeline,
                      max_attempts=settings.get("WORKBENCH_MAX_ATTEMPTS"))

    def _enqueue_evaluation(self, pipeline: str, variant: Any) -> None:
        from jobs.kinds.evaluate import EVALUATION_PRIORITY
        from jobs.runtimes import get_runtime

        queue.enqueue("evaluate", self.evaluation, device=get_runtime(variant.runtime).default_device,
                      model_id=variant.model_id, variant_id=variant.id, dataset_id=self.dataset.id,
                      pipeline=pipeline, priority=EVALUATION_PRIORITY,
                      max_attempts=settings.get("WORKBENCH_MAX_ATTEMPTS"))

    def _measure_again(self, pipeline: str, row_of: Callable[[], TrialRow], what: str) -> str | None:
        """Benchmark the pipeline's variant again while its row is unsound only by how it was measured (a busy
        machine, an unstable cell, too few samples), up to REMEASURES more times while the budget lasts: a busy
        minute is not a verdict on a variant. The newest benchmark is the one read. Returns why the pipeline run
        stopped (budget spent, cancelled, shutting down), else None."""
        while True:
            row = row_of()
            benchmarks = sum(1 for job in queue.pipeline_jobs(pipeline) if job.kind == "benchmark")
            if not row.only_noisy or row.variant_id is None or benchmarks > REMEASURES or self.out_of_time():
                return None
            self.progress(f"{what}: measuring again ({'; '.join(row.noise)})")
            self._enqueue_benchmark(pipeline, row.variant_id, None)
            stopped = self._run_pipeline(pipeline)
            if stopped:
                return stopped

    def baseline(self) -> None:
        """Evaluate and benchmark the fp32 start variant in this search (fine-tuned first when it has no head for the
        dataset's labels), so every speed-up is against a baseline measured here, on the same fingerprint."""
        from jobs.ml.lineage import classifies
        from jobs.runner.registry import get_kind

        record, pipeline = self.record, self.record.baseline_pipeline
        if not queue.pipeline_jobs(pipeline):
            record.baseline_started_s = round(self.elapsed(), 2)
            if classifies(self.start, list(self.dataset.labels)):
                self._enqueue_evaluation(pipeline, self.start)
                self._enqueue_benchmark(pipeline, self.start.id, None)
            else:
                finetune = dict(get_kind("finetune").quick_params) if self.params.quick else {}
                submit_pipeline([Step("finetune", finetune)], variant=self.start.id, dataset=self.dataset.id,
                                evaluation=self.evaluation, pipeline=pipeline)
            self.save()
        self.progress("measuring the baseline (fp32, as given)")
        stopped = self._run_pipeline(pipeline)
        outcome = read(pipeline, self.start.id, self.goal.cell)
        steps = making_steps(outcome.jobs)
        if not stopped and not outcome.failed and outcome.benchmark is None and outcome.evaluation is not None:
            self._enqueue_benchmark(pipeline, outcome.variant_id, steps[-1].id if steps else None)
            stopped = self._run_pipeline(pipeline)
            outcome = read(pipeline, self.start.id, self.goal.cell)
        self.baseline_variant_id = outcome.variant_id
        if not stopped and not outcome.failed and outcome.measurement is not None:
            stopped = self._measure_again(pipeline, lambda: self.rows()[0], "the baseline")
            outcome = read(pipeline, self.start.id, self.goal.cell)
        record.baseline_finished_s = round(self.elapsed(), 2)
        reason = stopped or outcome.failed or evaluation_failed(outcome)
        if reason is None and outcome.evaluation is None:
            reason = "the baseline has no evaluation"
        elif reason is None and outcome.evaluation.degenerate:
            reason = f"the baseline is degenerate ({outcome.evaluation.degenerate_reason}): fix or re-train it first"
        elif reason is None and outcome.measurement is None:
            reason = "the baseline's benchmark measured nothing at the goal's cell; see its log"
        record.baseline_state = "failed" if reason else "complete"
        record.baseline_reason = reason
        self.save()

    # ---- trials --------------------------------------------------------------------------------------------------

    def _classify(self, outcome: Outcome, stopped: str | None) -> tuple[str, str | None]:
        """A finished trial's state and reason, from what its pipeline produced."""
        if stopped == "budget spent":
            return "pruned", CUT_BY_BUDGET
        if stopped and stopped.startswith("hopeless"):
            return "pruned", stopped
        if stopped:
            return "failed", stopped
        if outcome.failed:
            return "failed", outcome.failed
        if outcome.evaluation is None:
            return "failed", evaluation_failed(outcome) or "its variant has no evaluation"
        if outcome.benchmark is None:
            return "running", None  # evaluated, not benchmarked yet
        if outcome.benchmark.status.value != "succeeded":
            return "failed", f"its benchmark (job {outcome.benchmark.id}) {outcome.benchmark.status.value}: " \
                             f"{outcome.benchmark.message}"
        if outcome.measurement is None:
            return "failed", "its benchmark measured nothing at the goal's cell"
        return "complete", None

    def _hopeless(self, ev: Evaluation, baseline: TrialRow) -> str | None:
        """Why an evaluated trial is not worth benchmarking (it could never be picked), or None."""
        if ev.degenerate:
            return f"degenerate: {ev.degenerate_reason}"
        drop = (baseline.accuracy - ev.accuracy) * 100
        if drop > self.goal.max_drop_points + DROP_EPSILON:
            return f"loses {drop:.2f} accuracy points, more than the {self.goal.max_drop_points:g} allowed"
        return None

    def _reused_pipeline(self, trial: TrialRecord) -> str | None:
        """The pipeline that made the variant `trial` starts from (an earlier trial's, or one outside this search)."""
        reused = trial.reused or {}
        if reused.get("pipeline"):
            return reused["pipeline"]
        return self.record.trial(reused["trial"]).pipeline if reused.get("trial") is not None else None  # older records

    def _reused_from(self, trial: TrialRecord) -> list[Any]:
        """The jobs of `_reused_pipeline`, where the variant's evaluation is when it was evaluated there."""
        pipeline = self._reused_pipeline(trial)
        return queue.pipeline_jobs(pipeline) if pipeline else []

    def _made_prefixes(self, other: TrialRecord) -> dict[int, tuple[int, str]]:
        """Prefix length -> the variant an earlier trial had after that many of its steps (succeeded steps only) and
        the pipeline that made it: the one it reused the first from, then its own."""
        offset = other.reused["steps"] if other.reused else 0
        made = {offset: (other.reused["variant_id"], self._reused_pipeline(other))} if other.reused else {}
        for index, job in enumerate(making_steps(queue.pipeline_jobs(other.pipeline)), start=offset + 1):
            if job.status.value != "succeeded" or not job.produced_variant_id:
                break
            made[index] = (job.produced_variant_id, other.pipeline)
        return made

    def reusable(self, trial: TrialRecord) -> dict[str, Any] | None:
        """The longest prefix of this trial's steps (all of them, at best) that an earlier trial already made, as
        {"trial", "steps", "variant_id", "pipeline"}, or jobs outside this search (jobs/search/elsewhere.py; then
        "trial" is None and "job" the last of them): a distillation or a pruning with its recovery is minutes on a
        small CPU, and the same steps from the same start make the same variant, so a trial that differs only later
        starts from it, and one whose whole recipe was made already only evaluates and benchmarks it."""
        found: dict[str, Any] | None = None
        for other in self.record.trials:
            if other.number >= trial.number:
                continue
            for length, (variant_id, pipeline) in self._made_prefixes(other).items():
                if 0 < length <= len(trial.steps) and other.steps[:length] == trial.steps[:length] \
                        and (found is None or length > found["steps"]):
                    found = {"trial": other.number, "steps": length, "variant_id": variant_id, "pipeline": pipeline}
        if found is None or found["steps"] < len(trial.steps):  # more of it made outside this search?
            try:
                plan = check_pipeline([Step(s["kind"], dict(s["params"])) for s in trial.steps],
                                      variant=self.baseline_variant_id, dataset=self.dataset.id)
            except InvalidInput:
                return found  # its submission says why
            made = [(kind.name, params) for kind, params in zip(plan.kinds, plan.params, strict=True)]
            outside = made_elsewhere(self.baseline_variant_id, made, self.dataset.id, self.evaluation,
                                     pipeline_name(self.ctx.job.id, None).removesuffix("base"))
            if outside is not None and (found is None or outside["steps"] > found["steps"]):
                found = outside
        return found

    def hopeless_midway(self, trial: TrialRecord, baseline: TrialRow) -> Callable[[], str | None]:
        """For the pipeline watcher: why a running trial can no longer be within the goal, or None. A step's variant
        that already loses more than the allowed drop plus MIDWAY_SLACK_POINTS, with no training step after it,
        ends the trial there (pruned) instead of exporting, quantizing and evaluating what cannot be picked."""
        offset = trial.reused["steps"] if trial.reused else 0
        found: dict[int, Any] = {}  # step index -> its variant's evaluation, once there (it never changes after)

        def made() -> list[tuple[int, str, Any]]:
            """(step index, kind, evaluation or None) of each step's variant so far, the reused one first."""
            out = []
            if trial.reused:
                if offset - 1 not in found:
                    found[offset - 1] = evaluation_in(self._reused_from(trial), trial.reused["variant_id"])
                out.append((offset - 1, trial.steps[offset - 1]["kind"], found[offset - 1]))
            jobs = queue.pipeline_jobs(trial.pipeline)
            for index, job in enumerate(making_steps(jobs), start=offset):
                if found.get(index) is None:
                    found[index] = evaluation_in(jobs, job.produced_variant_id)
                out.append((index, job.kind, found[index]))
            return out

        def check() -> str | None:
            if baseline.accuracy is None:
                return None
            for index, kind, evaluation in made():
                later = trial.steps[index + 1:]
                if evaluation is None or not later or any(step["kind"] in TRAINING_KINDS for step in later):
                    continue  # the last step is judged whole; a later training step may win accuracy back
                drop = (baseline.accuracy - evaluation.accuracy) * 100
                if drop > self.goal.max_drop_points + MIDWAY_SLACK_POINTS:
                    return (f"hopeless after step {index + 1} ({kind}): it loses {drop:.2f} accuracy points, "
                            f"more than the {self.goal.max_drop_points:g} allowed, and no step after it trains")
            return None

        return check

    def _queue_trial(self, trial: TrialRecord, baseline: TrialRow) -> None:
        """Queue a new trial's jobs: its steps after the longest prefix an earlier trial made. When that trial made
        them all, only an evaluation and a benchmark of its variant; none when its evaluation there already rules
        it out (the same variant judged on the same split twice gives the same verdict)."""
        trial.reused = self.reusable(trial)
        start, steps = self.baseline_variant_id, trial.steps
        if trial.reused:
            start, steps = trial.reused["variant_id"], trial.steps[trial.reused["steps"]:]
            words = "all its steps" if trial.reused_whole else f"its first {trial.reused['steps']} step(s)"
            self.progress(f"trial {trial.number}: {words} were made already by {made_by(trial.reused)}; "
                          f"starting from variant #{start}")
        self.save()  # the reuse is recorded before the jobs: a restart reads the pipeline as the steps after it
        if trial.reused_whole:
            known = evaluation_in(self._reused_from(trial), start)
            verdict = self._hopeless(known, baseline) if known is not None else None
            if verdict:
                where = f"trial {trial.reused['trial']}" if trial.reused.get("trial") is not None \
                    else f"pipeline {trial.reused['pipeline']}"
                trial.state, trial.reason = "pruned", f"{verdict} (its variant #{start}, as evaluated in {where})"
            else:
                self._enqueue_evaluation(trial.pipeline, catalog.get_variant(start))
            return
        try:
            submit_pipeline([Step(s["kind"], dict(s["params"])) for s in steps],
                            variant=start, dataset=self.dataset.id,
                            evaluation=self.evaluation, pipeline=trial.pipeline)
        except InvalidInput as exc:  # a chain this installation refuses: a failed point, not a failed search
            trial.state, trial.reason = "failed", f"not queued: {exc}"

    def run_trial(self, trial: TrialRecord, baseline: TrialRow) -> None:
        """Run (or, after a restart, re-attach to) one trial's pipeline until it is complete, pruned or failed."""
        self.progress(f"trial {trial.number}: " + " -> ".join(s["kind"] for s in trial.steps)
                      + f" ({', '.join(f'{k}={v}' for k, v in trial.params.items())})")
        if trial.state == "running" and not queue.pipeline_jobs(trial.pipeline):
            self._queue_trial(trial, baseline)
        stopped = None
        if trial.state == "running":
            stopped = self._run_pipeline(trial.pipeline, self.hopeless_midway(trial, baseline))
            outcome = read(trial.pipeline, trial.start_variant_id, self.goal.cell)
            state, reason = self._classify(outcome, stopped)
            if state == "running":
                reason = self._hopeless(outcome.evaluation, baseline)
                if reason:
                    state = "pruned"
                else:
                    made = making_steps(outcome.jobs)
                    self._enqueue_benchmark(trial.pipeline, outcome.variant_id, made[-1].id if made else None)
                    stopped = self._run_pipeline(trial.pipeline)
                    state, reason = self._classify(read(trial.pipeline, trial.start_variant_id, self.goal.cell),
                                                   stopped)
            if state == "complete":  # within the drop: worth a sound measurement
                stopped = self._measure_again(trial.pipeline, lambda: self._row(trial.number), f"trial {trial.number}")
            trial.state, trial.reason = state, reason
        trial.finished_s = round(self.elapsed(), 2)
        chosen = self.refresh_best()
        self.save()
        words = f"best so far: trial {chosen.number}, {chosen.speedup:.2f}x" if chosen and chosen.speedup else \
            "no trial within the goal yet"
        self.progress(f"trial {trial.number} {trial.state}{f' ({trial.reason})' if trial.reason else ''}; {words}")
        if stopped == "cancelled":
            self.record.stop_reason = "cancelled"
            self.save()
            raise JobCancelled(f"search job {self.ctx.job.id} cancelled")

    def stop_reason(self, chosen: TrialRow | None) -> str | None:
        if self.ctx.cancelled():
            return "cancelled"
        remaining = self.goal.budget_s - self.elapsed()
        if remaining <= 0:
            return "budget spent"
        durations = [t.duration_s for t in self.record.trials if t.state != "running" and t.duration_s is not None
                     and t.reason != CUT_BY_BUDGET]
        if durations and remaining < statistics.median(durations):
            return "budget spent"  # not enough left for a typical trial: starting one would overrun the budget
        if self.params.n_trials and len(self.record.trials) >= self.params.n_trials:
            return "trial limit reached"
        if self.goal.speedup and chosen is not None and chosen.speedup and chosen.speedup >= self.goal.speedup:
            return "goal met"
        return None

    # ---- the whole search ----------------------------------------------------------------------------------------

    def _on_sigterm(self, *_args: Any) -> None:
        self.terminated = True  # only a flag here: the pipeline watcher tells a cancel from a shutdown

    def run(self) -> JobResult:
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) \
            if threading.current_thread() is threading.main_thread() else None
        self.executor = get_executor(settings.get("WORKBENCH_EXECUTOR"))  # for every trial's worker
        self.tracker = Tracker()
        try:
            return self._run()
        except ShuttingDown:
            self.save()
            self.ctx.log("the worker is stopping: the search stops here and resumes from its record when re-queued")
            # left running, not finished: the worker re-queues it (a SystemExit skips the runner's failure handling)
            raise SystemExit(143) from None
        finally:
            self.executor.close()
            self.tracker.close()  # it logs the last trials' jobs first
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _note_training_rate(self) -> None:
        """How fast this machine trained the baseline, which caps what a distillation may train on."""
        variant = catalog.get_variant(self.baseline_variant_id) if self.baseline_variant_id else None
        self.train_rate = search_space.training_rate(variant.info if variant else None)
        if self.record.quick:
            return
        students = [s for s in self.record.space.get("student", ()) if s != "none"]
        budget, rate = self.goal.budget_s, self.train_rate
        caps = ", ".join(f"{search_space.distill_caps(budget, rate, s)['max_train_examples']:,} "
                         f"examples ({s})" for s in students)
        if not caps:
            return
        self.progress(f"a distillation from the teacher's logits trains on at most {caps}: "
                      + (f"this machine fine-tuned the baseline at {self.train_rate:.1f} examples/s, and one "
                         f"distillation may take {search_space.DISTILL_SHARE:.0%} of the budget" if self.train_rate
                         else "the baseline was not fine-tuned here, so its speed is not known"))

    def _run(self) -> JobResult:
        record = self.record
        self.save()
        if record.baseline_state == "complete":  # measured before a restart
            self.baseline_variant_id = read(record.baseline_pipeline, self.start.id, self.goal.cell).variant_id
        else:
            self.baseline()
        if record.baseline_state != "complete":
            if record.baseline_reason == "cancelled":
                raise JobCancelled(f"search job {self.ctx.job.id} cancelled")
            if record.baseline_reason == "budget spent":
                record.stop_reason = "budget spent"
                self.save()
                raise InvalidInput("the budget was spent before the baseline was measured: give the search more time")
            raise InvalidInput(f"the baseline could not be measured: {record.baseline_reason}")
        self._note_training_rate()
        study = search_study.new_study(record)
        baseline, rows = self.rows()
        space = {k: tuple(v) for k, v in record.space.items()}
        outcomes: dict[tuple, dict[str, Any]] = {  # the baseline is tried: the sampler never makes it a trial
            search_space.key(search_space.baseline_point(space)):
                search_study.outcome_kwargs(baseline, "complete", self.goal.max_drop_points)}
        by_number = {r.number: r for r in rows}
        for trial in record.trials:
            if trial.state == "running":  # its pipeline outlived the last run of this job: wait for it, do not redo it
                self.run_trial(trial, baseline)
                by_number[trial.number] = self._row(trial.number)
            told = search_study.outcome_kwargs(by_number[trial.number], trial.state, self.goal.max_drop_points)
            search_study.add_finished(study, trial.params, record, told)
            outcomes[search_space.key(trial.params)] = told
        valid = {search_space.key(p) for p in search_space.points(space)}  # read once: the space never changes
        total = len(valid)
        for opening in search_space.opening_points(space, self.goal.device):
            if search_space.key(opening) not in outcomes:  # the wizard's recipe, then the shallowest student
                study.enqueue_trial(opening)
        reason = None
        while reason is None:
            reason = self.stop_reason(self.refresh_best())
            if reason:
                break
            if len(outcomes) - 1 >= total:
                reason = "space exhausted"
                break
            combined = next_combination(self.latest_rows, self.goal.max_drop_points, valid, set(outcomes),
                                        students_within(self.latest_rows, lambda ev: self._hopeless(ev, baseline)))
            if combined is not None:  # the best runtime on a smaller model already made: a cheap trial, tried first
                self.progress(f"next: {', '.join(f'{k}={v}' for k, v in combined.items())}, the runtime that gained "
                              "most over fp32 so far, on a smaller model made within the drop")
                study.enqueue_trial(combined)
            picked = search_study.next_point(study, record, outcomes)
            if picked is None:
                reason = "space exhausted"
                break
            optuna_trial, point = picked
            number = len(record.trials) + 1
            trial = TrialRecord(number, point, search_space.steps(point, self.goal, quick=record.quick,
                                                                  fusion_ok=self.fusion_ok, train_rate=self.train_rate),
                                pipeline_name(self.ctx.job.id, number), started_s=round(self.elapsed(), 2))
            record.trials.append(trial)
            self.save()  # recorded before its jobs are queued: a restart finds it and queues them once
            self.run_trial(trial, baseline)
            row = self._row(number)
            told = search_study.outcome_kwargs(row, trial.state, self.goal.max_drop_points)
            search_study.tell(study, optuna_trial, told)
            outcomes[search_space.key(point)] = told
        if reason == "cancelled":
            record.stop_reason = reason
            self.save()
            raise JobCancelled(f"search job {self.ctx.job.id} cancelled")
        record.stop_reason = reason
        chosen = self.refresh_best()
        self.save()
        summary = (f"trial {chosen.number} is the fastest within {self.goal.max_drop_points:g} points: "
                   f"{chosen.speedup:.2f}x the baseline's speed" if chosen and chosen.speedup
                   else "no trial within the goal")
        if chosen is not None and chosen.variant_id is not None:
            summary += "; " + self.confirm(chosen)
        return JobResult(result=record.to_result(), message=f"{reason}; {len(record.trials)} trials; {summary}")

    def confirm(self, chosen: TrialRow) -> str:
        """The run-off (jobs/search/confirm.py): the best trial's variant, its runners-up within the drop and the
        baseline's in one benchmark job, interleaved, after the budget if need be, and again while the winner's or the
        baseline's cell is unsound by noise (REMEASURES more times at most); a restart re-attaches to the job already
        queued. The record's best becomes the run-off's winner. Returns it in words."""
        asked = self.record.confirmation
        if not asked or asked["trial"] != chosen.number:
            entrants = confirm_candidates(chosen, within_drop(self.latest_rows, self.goal.max_drop_points))
            asked = {"trial": chosen.number, "variant_id": chosen.variant_id, "runoff": entrants,
                     "baseline_variant_id": self.baseline_variant_id, "pipeline": confirm_pipeline(self.ctx.job.id)}
            self.record.confirmation = asked
            self.save()  # recorded before its job is queued, as a trial is
        others = [v for _, v in asked.get("runoff", [])[1:]]
        runners_up = f", {len(others)} runner{'s' if len(others) > 1 else ''}-up" if others else ""
        self.progress(f"measuring trial {chosen.number}{runners_up} and the baseline again, in one benchmark job")

        def runoff_job() -> None:
            self._enqueue_benchmark(asked["pipeline"], asked["variant_id"], None,
                                    compare_with=(asked["baseline_variant_id"], *others))

        while True:
            if not queue.pipeline_jobs(asked["pipeline"]):
                runoff_job()
            stopped = run_pipeline(asked["pipeline"], out_of_time=lambda: False, cancelled=self.ctx.cancelled,
                                   shutting_down=self.shutting_down, executor=self.executor, tracker=self.tracker)
            if stopped == "cancelled":
                raise JobCancelled(f"search job {self.ctx.job.id} cancelled")
            confirmation = read_confirmation(self.record, self.goal.cell, Rules.from_settings(),
                                             {r.number: r.drop_points for r in self.latest_rows})
            # again while the figure it ends with is unsound by noise; a runner-up's noise alone is not worth a job
            # that could leave the pick's or the baseline's cell unsound where they were sound
            if stopped or confirmation is None or confirmation.state != "complete" or not confirmation.problems \
                    or confirmation.runs > REMEASURES:
                break
            self.progress(f"the run-off: measuring again ({'; '.join(confirmation.problems)})")
            runoff_job()
        if confirmation is None or confirmation.state != "complete":
            return f"not measured again in one job: {confirmation.reason if confirmation else 'no job'}"
        words = f"{confirmation.speedup:.2f}x in one job with the baseline{confirmation.which_job}"
        if confirmation.why:
            self.record.best = confirmation.picked
            self.save()
            words = f"{confirmation.why}, so trial {confirmation.picked} is the pick: {words}"
        return words + (f" ({'; '.join(confirmation.problems)})" if confirmation.problems else "")


def run(params: Any, ctx: JobContext) -> JobResult:
    return Search(params, ctx).run()


