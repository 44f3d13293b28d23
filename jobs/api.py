"""The core's face: the one module the UI and the CLI call. It returns entities and plain data, never rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobs.decisions.compare import (
    NEWEST_PER_VARIANT,
    Comparison,
    Decision,
    Point,
    build_comparison,
    cell_label,
    decide,
    display_rows,
    focus_variants,
    length_label,
)
from jobs.intake.builtin import BUILTIN_DATASETS, BUILTIN_MODELS
from jobs.intake.datasets import DatasetRequest, add_dataset, load_split, split_class_counts
from jobs.intake.models import IntakeResult, ModelRequest, add_model
from jobs.ml.lineage import VariantSummary, lineage, training_history
from jobs.ml.lineage import variant_tree as _variant_tree
from jobs.runner.params import describe, parse_params
from jobs.runner.registry import all_kinds, get_kind
from jobs.runner.submit import Step, check_pipeline, parse_steps, rerun_recipe, submit, submit_pipeline
from storage import catalog, queue, settings
from storage.entities import Dataset, Job, LogTail, Model, Variant, Worker
from storage.orm import JobStatus

if TYPE_CHECKING:
    from jobs.playground.ab import SideBySide, TestSetComparison
    from jobs.playground.predict import BatchPrediction, Prediction

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_MODELS",
    "DatasetRequest",
    "IntakeResult",
    "ModelRequest",
    "add_dataset",
    "add_model",
    "submit",
    "submit_pipeline",
    "check_pipeline",
    "Comparison",
    "Decision",
    "Point",
    "decide",
    "display_rows",
    "cell_label",
    "length_label",
    "focus_variants",
    "NEWEST_PER_VARIANT",
    "parse_steps",
    "rerun_recipe",
    "Step",
    "JobStatus",
]


def list_models() -> list[Model]:
    return catalog.list_models()


def get_model(ref: int | str) -> Model:
    return catalog.get_model(ref)


def list_datasets() -> list[Dataset]:
    return catalog.list_datasets()


def get_dataset(ref: int | str) -> Dataset:
    return catalog.get_dataset(ref)


def preview_dataset(ref: int | str, split: str = "train", rows: int = 20) -> list[dict[str, Any]]:
    return load_split(catalog.get_dataset(ref), split).head(rows).to_dict(orient="records")


def dataset_distribution(ref: int | str) -> dict[str, dict[str, int]]:
    return split_class_counts(catalog.get_dataset(ref))


def list_variants(model: int | str | None = None) -> list[Variant]:
    return catalog.list_variants(catalog.get_model(model).id if model is not None else None)


def get_variant(ref: int | str) -> Variant:
    return catalog.get_variant(ref)


def list_jobs(status: str | None = None, limit: int = 200) -> list[Job]:
    return queue.list_jobs(JobStatus(status) if status else None, limit=limit)


def get_job(job_id: int | str) -> Job:
    return queue.get_job(job_id)


def job_log(job_id: int | str) -> str:
    return queue.job_log(queue.get_job(job_id).id)


def job_log_chunks(job_id: int, after_id: int = 0) -> list[tuple[int, str]]:
    """The log chunks (id, text) appended after chunk `after_id`, oldest first, one page at a time."""
    return queue.log_chunks(job_id, after_id)


def job_log_tail(job_id: int | str, max_chars: int) -> LogTail:
    return queue.log_tail(queue.get_job(job_id).id, max_chars)


def cancel_job(job_id: int | str) -> Job:
    return queue.request_cancel(job_id)


def job_counts() -> dict[str, int]:
    return queue.count_by_status()


def live_workers() -> list[Worker]:
    return queue.live_workers(settings.get("WORKBENCH_STALE_AFTER_S"))


def executor_status():
    """Where jobs run now: live workers by executor; for Ray the cluster's nodes (read in the background, never
    waited on) and the running jobs on each."""
    from jobs.runner.executor_status import executor_status as read

    return read()


def cluster_status(address: str | None = None):
    """The Ray cluster a ray executor runs jobs on (RAY_ADDRESS): its nodes, their resources, what runs where."""
    from jobs.runner.cluster import cluster_status as read_cluster

    return read_cluster(address)


def job_kinds() -> list[dict[str, Any]]:
    """Each registered kind with its parameters, for forms and `workbench jobs kinds`."""
    return [
        {
            "name": k.name,
            "summary": k.summary,
            "device": k.device,
            "needs_variant": k.needs_variant,
            "needs_dataset": k.needs_dataset,
            # what the Optimize tab offers: kinds that take a variant and are not queued by the workbench itself
            "pipeline_step": k.needs_variant and not k.automatic,
            "yields_variant": k.output_runtime is not None,  # a step after it takes that variant (else: last step)
            "params": [vars(f) for f in describe(k.params_cls)],
        }
        for k in all_kinds()
    ]


def kind_defaults(name: str) -> dict[str, Any]:
    return {f.name: f.default for f in describe(get_kind(name).params_cls)}


def peek_columns(path: str) -> list[str]:
    """Column names of an uploaded table, to offer as text / label choices before intake."""
    from pathlib import Path

    from jobs.intake.datasets import peek_columns as table_columns

    return table_columns(Path(path))  # from the head or the Parquet footer: the rows are not read


# ---- optimization: pipelines, lineage, evaluations ---------------------------------------------------------


def variant_tree(model: int | str | None = None) -> list[VariantSummary]:
    return _variant_tree(catalog.get_model(model).id if model is not None else None)


def variant_detail(ref: int | str) -> dict[str, Any]:
    """One variant with its lineage, recipe, evaluations and training curve."""
    variant = catalog.get_variant(ref)
    return {
        "variant": variant,
        "lineage": lineage(variant),
        "evaluations": catalog.list_evaluations(variant.id),
        "history": training_history(variant),
        "summary": next((s for s in _variant_tree(variant.model_id) if s.id == variant.id), None),  # one model's tree
    }


def export_space(variant: int | str, directory: str, *, force: bool = False, title: str | None = None,
                 license_: str = "other", check: bool = True):
    """A runnable Gradio demo of one variant in `directory` (Hugging Face Space layout): app.py, requirements.txt,
    README.md with Space metadata, model/. Refuses a non-empty directory unless `force`; see jobs.export.space."""
    from jobs.export import space

    return space.export_space(variant, directory, force=force, title=title, license_=license_, check=check)


def zip_variant(variant: int | str, out: str | None = None):
    """The variant's files (weights, ONNX graphs, tokenizer, config) as one zip at `out` (default: a temporary
    directory), each checked against its recorded sha256; refused, leaving nothing, if one is missing or changed."""
    from jobs.export.variant_zip import zip_variant as make_zip

    return make_zip(variant, out)


def export_deployment(variant: int | str, directory: str, *, force: bool = False, name: str | None = None,
                      replicas: int = 1, max_replicas: int = 4):
    """A deployment bundle of one variant (id, name or NAME@ALIAS) in `directory`: the model files with
    SHA256SUMS, the workbench's model server copied in (`python -m bundle_server`, offline), pinned requirements,
    a Dockerfile, Kubernetes manifests and a README. Refuses a non-empty directory unless `force`; see
    jobs.export.deployment."""
    from jobs.export.deployment import export_deployment as export

    return export(variant, directory, force=force, name=name, replicas=replicas, max_replicas=max_replicas)


def zip_deployment(variant: int | str, name: str | None = None):
    """The deployment bundle of one variant as a zip in a fresh temporary directory (the Deploy tab's download)."""
    from jobs.export.deployment import zip_deployment as make_zip

    return make_zip(variant, name=name)


def explain_defaults(kind: str, params: dict[str, Any] | None, dataset: int | str | None) -> dict[str, str]:
    """What each parameter left on auto becomes for this dataset, and why (shown before launch)."""
    k = get_kind(kind)
    if k.explain is None:
        return {}
    parsed = parse_params(k.params_cls, params)
    return k.explain(parsed, catalog.get_dataset(dataset) if dataset is not None else None)


def kind_availability() -> dict[str, str]:
    """Kinds this installation cannot run, with the reason (shown in the UI and CLI)."""
    out = {}
    for k in all_kinds():
        ok, reason = k.availability()
        if not ok:
            out[k.name] = reason
    return out


# ---- comparison --------------------------------------------------------------------------------------------


def comparison(dataset: int | str | None = None, fingerprint: str | None = None,
               run: int | str | None = None) -> Comparison:
    """One benchmark run's measurements (the newest unless `run` names a job id, or NEWEST_PER_VARIANT) on one
    hardware fingerprint (never mixed), with accuracy and validity."""
    dataset_id = catalog.get_dataset(dataset).id if dataset not in (None, "") else None
    if isinstance(run, str) and run.strip().isdigit():
        run = int(run)
    return build_comparison(dataset_id, fingerprint or None, run if run not in ("", None) else None)


def across_machines(dataset: int | str | None = None, batch_size: int | None = None, seq_len: int | None = None,
                    baseline: int | str | None = None):
    """One batch x seq cell on every machine: one column per hardware class and fingerprint (each its newest run
    there), p50 and throughput per variant, speedups only within a column (jobs/decisions/machines.py)."""
    from jobs.decisions.machines import across_machines as build

    dataset_id = catalog.get_dataset(dataset).id if dataset not in (None, "") else None
    baseline_id = catalog.get_variant(baseline).id if baseline not in (None, "") else None
    return build(dataset_id, batch_size, seq_len, baseline_id)


def hardware_advice(kind: str, params: dict[str, Any] | None = None) -> list[str]:
    """Known slow paths for this kind on this machine, and what it has measured, before a launch."""
    from jobs.decisions.advice import advice

    return advice(kind, params or {})


# ---- playground: predictor, A/B, traffic split -------------------------------------------------------------


def resolve_variant(ref: int | str) -> Variant:
    """A variant by id, by name, or by registry alias `NAME@ALIAS` (e.g. `minilm-l6@production`): the variant the
    alias points at now. The playground and the CLI take any of these wherever they take a variant."""
    from jobs.tracking.variant_refs import resolve_variant as resolve

    return resolve(ref)


def predict(variant: int | str, text: str) -> Prediction:
    """One text through a cached predictor of the variant: probabilities, latency, tokens, truncation."""
    from jobs.playground.predict import predict_text

    return predict_text(resolve_variant(variant).id, text)


def predict_batch(variant: int | str, texts: list[str], progress=None) -> BatchPrediction:
    from jobs.playground.predict import predict_texts

    return predict_texts(resolve_variant(variant).id, texts, progress=progress)


def texts_from_lines(pasted: str) -> list[str]:
    from jobs.playground.predict import split_lines

    return split_lines(pasted)


def texts_from_file(path: str, column: str | None = None) -> list[str]:
    from jobs.playground.predict import read_texts_file

    return read_texts_file(path, column)


def example_texts(dataset: int | str, split: str = "test", count: int = 20) -> list[tuple[str, str]]:
    """(text, gold label) pairs from a dataset split, a fixed sample, to try in the playground."""
    from jobs.ml.data import split_examples

    examples = split_examples(catalog.get_dataset(dataset), split, count)
    return list(zip(examples.texts, examples.labels, strict=True))


def ab_compare(variant_a: int | str, variant_b: int | str, text: str) -> SideBySide:
    from jobs.playground.ab import compare_text

    return compare_text(resolve_variant(variant_a).id, resolve_variant(variant_b).id, text)


def ab_test_set(variant_a: int | str, variant_b: int | str, dataset: int | str, split: str = "test", limit: int = 0,
                progress=None, alpha: float | None = None) -> TestSetComparison:
    """Both variants on a split: accuracies, McNemar's test and its verdict at `alpha` (default 0.05), latency, and
    where they disagree."""
    from jobs.playground.ab import SIGNIFICANCE, compare_on_split

    return compare_on_split(resolve_variant(variant_a).id, resolve_variant(variant_b).id, dataset, split, limit,
                            progress=progress, alpha=SIGNIFICANCE if alpha is None else alpha)


def loaded_predictors() -> list:
    from jobs.playground.predictor_cache import CACHE

    return CACHE.contents()


def start_experiment(variant_a: int | str, variant_b: int | str, split_b_percent: float, name: str | None = None):
    from jobs.playground import traffic

    # an alias is resolved once: the experiment keeps the variants it pointed at when it started
    return traffic.start_experiment(resolve_variant(variant_a).id, resolve_variant(variant_b).id, split_b_percent, name)


def list_experiments():
    from jobs.playground import traffic

    return traffic.list_experiments()


def get_experiment(ref: int | str):
    from storage import traffic

    return traffic.get_experiment(ref)


def route_request(experiment: int | str, user_id: str, text: str):
    from jobs.playground import traffic

    return traffic.route(experiment, user_id, text)


def record_feedback(request_id: int | str, correct: bool):
    from jobs.playground import traffic

    return traffic.record_feedback(request_id, correct)


def simulate_traffic(experiment: int | str, dataset: int | str, split: str = "test", requests: int = 200, users: int = 50,
                     progress=None):
    from jobs.playground import traffic

    return traffic.simulate(experiment, dataset, split, requests, users, progress=progress)


def arm_report(experiment: int | str):
    from jobs.playground import traffic

    return traffic.arm_report(experiment)


def recent_requests(experiment: int | str, limit: int = 50):
    from jobs.playground import traffic

    return traffic.recent_requests(experiment, limit)


# ---- MLflow: tracking and the model registry ---------------------------------------------------------------


def mlflow_uri() -> dict[str, Any]:
    """Where job runs and registered models are kept, and the command that opens MLflow's UI on them."""
    from jobs.tracking import runs as tracking

    uri = tracking.tracking_uri()
    return {"tracking_uri": uri, "ui_command": tracking.ui_command(uri), "tracking": settings.get("WORKBENCH_MLFLOW")}


def register_variant(variant: int | str, name: str | None = None) -> dict[str, Any]:
    """A variant as a new version of a registered model (default name: its model's); returns the version."""
    from jobs.tracking import model_registry

    return model_registry.register_variant(variant, name)


def promote(name: str, version: int | str, alias: str = "production", force: bool = False) -> dict[str, Any]:
    """Point an alias (staging, production, ...) of a registered model at one of its versions; a degenerate
    variant's version is refused with the reason unless `force`."""
    from jobs.tracking import model_registry

    return model_registry.promote(name, version, alias, force)


def rollback(name: str, alias: str = "production") -> dict[str, Any]:
    """Move an alias back to the version it pointed to before the last promote."""
    from jobs.tracking import model_registry

    return model_registry.rollback(name, alias)


def registry_state() -> dict[str, Any]:
    """Registered models, their versions (with variant ids), aliases and rollback targets."""
    from jobs.tracking import model_registry

    return model_registry.registry_state()


# ---- optimization wizard -----------------------------------------------------------------------------------


def wizard_defaults() -> dict[str, Any]:
    """The detected target and hardware line, the targets to choose from, and the goal's default values."""
    from jobs.decisions import wizard

    return wizard.defaults()


def detected_target() -> str:
    from jobs.decisions import wizard

    return wizard.detected_target()


def recommend_recipe(model: int | str, dataset: int | str, *, target: str | None = None, max_drop_points: float = 1.0,
                     slo_ms: float | None = None, speedup: float | None = None, batch_size: int = 1, seq_len: int = 128,
                     quick: bool = False, traffic: str = "grid"):
    """The wizard's recipe (steps with defaults and one reason each) for a goal; target None = this machine;
    traffic "real" measures on the test split's own lengths instead of batch_size x seq_len."""
    from jobs.decisions import wizard

    goal = wizard.Goal(target=target or wizard.detected_target(), max_drop_points=max_drop_points,
                       slo_ms=slo_ms or None, speedup=speedup or None, batch_size=batch_size, seq_len=seq_len,
                       traffic=traffic)
    return wizard.recommend(model, dataset, goal, quick=quick)


def edit_recipe(recipe, steps: list[dict[str, Any]], evaluation: dict[str, Any] | None = None):
    """The recipe with the user's steps ([{"kind", "params"}]) and evaluation settings, checked as a pipeline."""
    from jobs.decisions import wizard

    return wizard.edit(recipe, steps, evaluation)


def launch_recipe(recipe):
    """Queue a recipe as one pipeline (with the baseline's evaluation) in one transaction: pipeline id and job ids."""
    from jobs.decisions import wizard

    return wizard.launch(recipe)


def wizard_remeasure(pipeline: str) -> int:
    """Queue a full benchmark of a finished run's variants in the same run; its verdict is then made from it."""
    from jobs.decisions import wizard

    return wizard.remeasure(pipeline)


def submit_search(model: int | str, dataset: int | str, *, max_drop_points: float, batch_size: int = 1,
                  seq_len: int = 128, traffic: str = "grid", device: str = "cpu", budget_s: float,
                  n_trials: int | None = None, space: dict[str, Any] | None = None, quick: bool = False,
                  speedup: float | None = None, seed: int = 0) -> Job:
    """Queue a search (jobs/search/): the fastest variant within `max_drop_points` at batch_size x seq_len (or on
    real traffic), over distillation, pruning, runtimes and precisions, in `budget_s` seconds. Nothing is queued
    when an input is refused."""
    from jobs.search import submit_search as submit_one

    return submit_one(model, dataset, max_drop_points=max_drop_points, batch_size=batch_size, seq_len=seq_len,
                      traffic=traffic, device=device, budget_s=budget_s, n_trials=n_trials, space=space, quick=quick,
                      speedup=speedup, seed=seed)


def search_status(job_id: int | str):
    """A search's goal, budget, trials (recipe, accuracy, latency, speed-up, problems), Pareto front and best."""
    from jobs.search import status

    return status(int(queue.get_job(job_id).id))


def wizard_progress(pipeline: str, goal=None):
    """Overall fraction, one line per job, done/failed, and once done the recommended variant with its comparison."""
    from jobs.decisions import wizard

    return wizard.progress(pipeline, goal)


def recent_wizard_runs(limit: int = 10):
    """The newest wizard runs first (to reopen one after a page reload)."""
    from jobs.decisions import wizard

    return wizard.recent_runs(limit)


# ---- deployments: model servers ----------------------------------------------------------------------------


def deploy(variant: int | str, port: int | None = None, max_batch: int = 16, max_wait_ms: float = 5, replicas: int = 1,
           api_key: str | None = None, **options: Any):
    """Start a model server for a variant (id, name or `NAME@ALIAS`) in its own process and record it as a
    deployment (`starting`; with `wait_s`, after waiting for it to be ready). Options: host, max_queue, timeout_s,
    cache_size, device, threads, name, wait_s; see jobs.serving.deployments.deploy."""
    from jobs.serving import deployments

    return deployments.deploy(variant, port, max_batch, max_wait_ms, replicas, api_key, **options)


def list_deployments(refresh: bool = True) -> list:
    """Every deployment, newest first; running ones checked now (a server that died shows as crashed, with why)."""
    from jobs.serving import deployments

    return deployments.list_deployments(refresh_status=refresh)


def get_deployment(ref: int | str, refresh: bool = True):
    from jobs.serving import deployments

    return deployments.get_deployment(ref, refresh_status=refresh)


def stop_deployment(ref: int | str):
    """Stop a deployment's server (SIGTERM, then SIGKILL after a grace period); it becomes `stopped`."""
    from jobs.serving import deployments

    return deployments.stop(ref)


def deployment_logs(ref: int | str, tail_chars: int = 20_000) -> LogTail:
    """The end of a deployment's server log."""
    from jobs.serving import deployments

    return deployments.logs(ref, tail_chars)


def deployment_metrics(ref: int | str, timeout_s: float = 2.0):
    """One scrape of a deployment's `/metrics` (`jobs.serving.metrics_reader.ServerMetrics`: requests, errors,
    latency and batch-size histograms with their quantiles); MetricsUnavailable, a WorkbenchError with the reason,
    when it is not running or its server does not answer within `timeout_s`."""
    from jobs.serving import deployments, metrics_reader

    deployment = deployments.get_deployment(ref, refresh_status=False)
    if not deployment.running:
        raise metrics_reader.MetricsUnavailable(f"deployment {deployment.id} is {deployment.status}: no server to ask")
    return metrics_reader.read(deployments.metrics_url(deployment), timeout_s)


def deployment_drift(ref: int | str, dataset: int | str | None = None, window: int | None = 1000,
                     min_samples: int | None = None, arm: str | None = None, since=None, **thresholds: float):
    """Drift of a deployment's sampled traffic against a dataset's test split run through its variant
    (`jobs.serving.drift.DriftReport`: PSI of lengths and confidences, chi-square of the label mix, the verdict).
    `dataset`: the reference (default: chosen at deploy, else the one the variant was fine-tuned or evaluated on);
    the live window: the newest `window` samples (None: all), from `since` (a naive UTC datetime) on.
    `thresholds`: psi_watch (0.1), psi_alarm (0.2), chi2_p_alarm (0.01); a None value keeps the default."""
    from jobs.serving import drift

    given = {name: value for name, value in {**thresholds, "min_samples": min_samples}.items() if value is not None}
    unknown = sorted(set(given) - {"psi_watch", "psi_alarm", "chi2_p_alarm", "min_samples"})
    if unknown:
        from storage.errors import InvalidInput

        raise InvalidInput(f"unknown drift thresholds: {', '.join(unknown)}")
    return drift.report(ref, dataset, window, since, thresholds=drift.Thresholds(**given), arm=arm)


# ---- load tests: a deployment at a sweep of concurrencies ---------------------------------------------------


def submit_load_test(deployment: int | str, params: dict[str, Any] | None = None,
                     dataset: int | str | None = None) -> Job:
    """Queue a `loadtest` job against a deployment (on loopback, running), its variant recorded on the job; the
    texts come from `dataset` (default: the deployment's reference, else its variant's dataset)."""
    from storage import deployments as store
    from storage.errors import NotFound

    record = store.get_deployment(deployment)
    try:
        variant = catalog.get_variant(record.variant_id).id
    except NotFound:  # deleted while its server kept running: the job still names the deployment
        variant = None
    if dataset is None:  # the deployment's reference first: the variant's own would otherwise be taken
        from jobs.serving.loadtest import reference_dataset_id

        dataset = reference_dataset_id(record)
    return submit("loadtest", {**(params or {}), "deployment": record.id}, variant=variant, dataset=dataset)


def load_tests(deployment: int | str | None = None, variants: list[int] | None = None,
               fingerprint: str | None = None, job: int | None = None) -> list[dict[str, Any]]:
    """Stored load-test levels, oldest first, each with `busy` (the machine was busy while it ran)."""
    from jobs.serving.loadtest import load_test_rows
    from storage import deployments as store

    deployment_id = store.get_deployment(deployment).id if deployment is not None else None
    return load_test_rows(deployment_id=deployment_id, variant_ids=variants, fingerprint_hash=fingerprint, job_id=job)


# ---- canary rollouts of deployments ------------------------------------------------------------------------


def set_canary_percent(ref: int | str, percent: float):
    """Change a running deployment's canary share live (users only move stable→canary when it rises)."""
    from jobs.serving import rollout

    return rollout.set_percent(ref, percent)


def promote_canary(ref: int | str, force: bool = False):
    """The canary becomes stable in the running server; a deployment made from NAME@ALIAS moves the alias to it."""
    from jobs.serving import rollout

    return rollout.promote(ref, force)


def rollback_canary(ref: int | str):
    """Remove the canary from the running server: the stable variant serves every user again."""
    from jobs.serving import rollout

    return rollout.rollback(ref)


def canary_report(ref: int | str, scrape=None):
    """Per arm: share, requests, errors, p50/p95 (from `scrape`, a deployment_metrics result) and feedback accuracy
    with a Wilson interval (`jobs.serving.rollout.ArmReport`)."""
    from jobs.serving import rollout

    return rollout.arm_report(ref, scrape)


def deployment_events(ref: int | str, limit: int = 50):
    """A deployment's rollout events, newest first (canary deployed, share changed, promoted, rolled back)."""
    from jobs.serving import rollout

    return rollout.events(ref, limit)


def rollout_lines(deployments) -> dict[int, str]:
    """deployment id -> one line on its rollout (its canary now, or the last promote/rollback), for lists."""
    from jobs.serving import rollout
    from storage import rollouts

    last = rollouts.latest_events([d.id for d in deployments])
    return {d.id: line for d in deployments if (line := rollout.rollout_line(d, last.get(d.id)))}


def latest_load_test(deployment: int | str) -> list[dict[str, Any]]:
    """The levels of a deployment's newest load test, by concurrency (empty: none yet)."""
    from jobs.serving.loadtest import latest_run

    return latest_run(load_tests(deployment))
