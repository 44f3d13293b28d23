"""SQLAlchemy ORM classes. They never leave `storage`: the store converts them to entities at its boundary."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Naive UTC: SQLite keeps no time zone, so every timestamp is UTC by convention."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime()}


class SqlModel(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source_kind: Mapped[str] = mapped_column(String(20))  # builtin | local | archive | onnx | hub
    source: Mapped[str] = mapped_column(Text)
    allow_pickle: Mapped[bool] = mapped_column(Boolean, default=False)
    # what the model does (see jobs.tasks): decides its inputs, outputs, quality metric and what a benchmark measures
    task: Mapped[str] = mapped_column(String(60), default="text-classification", server_default="text-classification")
    # Filled by the `inspect` job: architecture, parameters, task, tokenizer, labels, ...
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlDataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source_kind: Mapped[str] = mapped_column(String(20))  # builtin | upload
    source: Mapped[str] = mapped_column(Text)
    text_column: Mapped[str] = mapped_column(String(200))
    label_column: Mapped[str] = mapped_column(String(200))
    labels: Mapped[list[Any]] = mapped_column(default=list)
    class_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    num_rows: Mapped[int] = mapped_column(Integer)
    split_seed: Mapped[int] = mapped_column(Integer)
    split_fractions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    split_sizes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifact_dir: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlVariant(Base):
    __tablename__ = "variants"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("variants.id", ondelete="SET NULL"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    artifact_dir: Mapped[str] = mapped_column(Text)
    runtime: Mapped[str] = mapped_column(String(40))  # pytorch | onnxruntime | tensorrt
    precision: Mapped[str] = mapped_column(String(40))  # fp32 | bf16 | fp16 | int8 ...
    recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)
    files: Mapped[list[Any]] = mapped_column(default=list)  # [{"path", "size", "sha256"}]
    sha256: Mapped[str] = mapped_column(String(64))  # hash of the sorted file manifest
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # the dataset whose labels the classification head was trained on; children inherit it
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)  # facts from the job: sparsity, training history...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlWorker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    devices: Mapped[list[Any]] = mapped_column(default=list)  # ["cpu"] or ["cpu", "cuda"]
    device_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]


class SqlJob(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(80))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]),
        default=JobStatus.QUEUED,
    )
    device: Mapped[str] = mapped_column(String(10), default="cpu")  # cpu | cuda | any
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int | None] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    produced_variant_id: Mapped[int | None] = mapped_column(ForeignKey("variants.id", ondelete="SET NULL"))
    depends_on_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    pipeline: Mapped[str | None] = mapped_column(String(40), index=True)  # shared by the steps of one pipeline
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher runs first among runnable jobs
    evaluation: Mapped[dict[str, Any] | None]  # params of the evaluation queued when this job yields a variant
    worker_id: Mapped[str | None] = mapped_column(String(80))
    pid: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=2)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]


class SqlJobLogChunk(Base):
    """A piece of a job's log, appended as the job prints: read in order, paged, or from the end."""

    __tablename__ = "job_log_chunks"
    __table_args__ = (Index("ix_job_log_chunks_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlMeasurement(Base):
    """One benchmark cell: a variant at one batch size and sequence length on one hardware fingerprint."""

    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(primary_key=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    device: Mapped[str] = mapped_column(String(40))
    batch_size: Mapped[int] = mapped_column(Integer)
    seq_len: Mapped[int] = mapped_column(Integer)
    samples: Mapped[int] = mapped_column(Integer)
    p50_ms: Mapped[float] = mapped_column(Float)
    p90_ms: Mapped[float] = mapped_column(Float)
    p95_ms: Mapped[float] = mapped_column(Float)
    p99_ms: Mapped[float] = mapped_column(Float)
    mean_ms: Mapped[float] = mapped_column(Float)
    std_ms: Mapped[float] = mapped_column(Float)
    throughput_sps: Mapped[float] = mapped_column(Float)
    tokens_per_s: Mapped[float] = mapped_column(Float)
    peak_rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gpu_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)
    load_time_s: Mapped[float | None] = mapped_column(Float)
    threads: Mapped[int | None] = mapped_column(Integer)
    stable: Mapped[bool] = mapped_column(Boolean, default=False)  # the stop rule converged (not a time/sample cap)
    spread: Mapped[float | None] = mapped_column(Float)  # relative spread of the last window medians
    # every timed call in ms, so a speedup can carry a bootstrap interval (None for rows measured before 0006)
    samples_ms: Mapped[list[Any] | None] = mapped_column(JSON)
    # the machine's load while the cell ran: {"loadavg_1m", "other_cpu_fraction", "steal_fraction", "cpus"}
    load: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rough: Mapped[bool] = mapped_column(Boolean, default=False)  # a quick-trial cell: shown, never used as advice
    # a real-traffic cell's inputs (seq_len 0): token-length quantiles, padding waste, bucketing; None on a grid cell
    traffic: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fingerprint: Mapped[dict[str, Any]] = mapped_column(default=dict)
    fingerprint_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlEvaluation(Base):
    """Accuracy of one variant on one dataset split."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    split: Mapped[str] = mapped_column(String(20))
    num_examples: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)
    macro_f1: Mapped[float] = mapped_column(Float)
    confusion: Mapped[dict[str, Any]] = mapped_column(default=dict)
    agreement_with_parent: Mapped[float | None] = mapped_column(Float)
    parent_accuracy: Mapped[float | None] = mapped_column(Float)  # the parent's accuracy on the same examples
    tolerance_points: Mapped[float] = mapped_column(Float, default=1.0)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)  # more than the tolerance below its parent
    predictions: Mapped[list[Any]] = mapped_column(default=list)  # predicted label index per example, in split order
    # validity: is the model better than always answering the most common label of these examples?
    majority_accuracy: Mapped[float | None] = mapped_column(Float)
    majority_label: Mapped[str | None] = mapped_column(String(200))
    accuracy_low: Mapped[float | None] = mapped_column(Float)  # Wilson 95 % interval of the accuracy
    accuracy_high: Mapped[float | None] = mapped_column(Float)
    per_class_recall: Mapped[dict[str, Any]] = mapped_column(default=dict)  # label -> recall (None: no example)
    degenerate: Mapped[bool] = mapped_column(Boolean, default=False)
    degenerate_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlExperiment(Base):
    """A simulated traffic split between two variants: a share of users goes to B, the rest to A."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    variant_a_id: Mapped[int] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"), index=True)
    variant_b_id: Mapped[int] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"), index=True)
    split_b_percent: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlTrafficRequest(Base):
    """One request routed to an arm of an experiment, its answer, and the user's feedback when given."""

    __tablename__ = "traffic_requests"
    __table_args__ = (Index("ix_traffic_requests_experiment_arm", "experiment_id", "arm"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(200))
    arm: Mapped[str] = mapped_column(String(1))  # A | B
    variant_id: Mapped[int] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(20), default="manual")  # manual | simulated
    feedback: Mapped[str | None] = mapped_column(String(10))  # correct | wrong
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    feedback_at: Mapped[datetime | None]


class SqlAliasEvent(Base):
    """One move of an MLflow registered-model alias made here (promote or rollback), so a promote can be undone.

    MLflow keeps only where an alias points now; this is the history. `tracking_uri` keeps registries apart.
    """

    __tablename__ = "alias_events"
    __table_args__ = (Index("ix_alias_events_model_alias", "tracking_uri", "registered_model", "alias"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tracking_uri: Mapped[str] = mapped_column(String(500))
    registered_model: Mapped[str] = mapped_column(String(256))
    alias: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(20))  # promote | rollback
    version: Mapped[str] = mapped_column(String(40))  # where the alias points after this event
    previous_version: Mapped[str | None] = mapped_column(String(40))  # where it pointed before (None: nowhere)
    undone: Mapped[bool] = mapped_column(Boolean, default=False)  # a promote that a rollback reverted
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlDeployment(Base):
    """A model server started for a variant (`jobs.serving.deployments`): where it listens, how it was configured,
    its process and what became of it.

    `variant_id` is deliberately not a foreign key: a deployment is the history of a process that served a variant,
    and deleting the variant must neither delete that history (CASCADE) nor blank which variant it served
    (SET NULL); a server still running keeps serving the files it loaded. `variant_sha256` pins the files it
    served, so the record stays unambiguous even if a variant id were ever reused.
    """

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_status", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))  # what the user asked for: the alias or the variant's name
    variant_id: Mapped[int] = mapped_column(Integer, index=True)
    variant_sha256: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str | None] = mapped_column(String(520))  # the `model@alias` it was asked for; None: a variant
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    # max_batch, max_wait_ms, max_queue, timeout_s, cache_size, device, threads, api_key_set (never the key)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pid: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="starting")  # starting | ready | crashed | stopped
    reason: Mapped[str | None] = mapped_column(Text)  # why it is not ready yet, why it crashed
    log_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ready_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    # a canary beside the stable variant (`jobs.serving.canary`): None when the deployment has none (any more)
    canary_variant_id: Mapped[int | None] = mapped_column(Integer)
    canary_variant_sha256: Mapped[str | None] = mapped_column(String(64))
    canary_ref: Mapped[str | None] = mapped_column(String(520))  # what the user asked for: an id, a name, NAME@ALIAS
    canary_percent: Mapped[float] = mapped_column(Float, default=0.0)
    # the automatic-rollback thresholds: error_rate_increase, p95_ratio, min_requests, window_s
    rollout: Mapped[dict[str, Any]] = mapped_column(default=dict)


class SqlDeploymentEvent(Base):
    """What happened to a deployment's rollout: a canary deployed, its share changed, promoted, rolled back (by
    a user or automatically by its server, with the figures that decided it)."""

    __tablename__ = "deployment_events"
    __table_args__ = (Index("ix_deployment_events_deployment_id_id", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))  # canary | percent | promote | rollback | auto_rollback
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlServedFeedback(Base):
    """A user's verdict (correct / wrong) on one answer of a model server, keyed by the request id it answered
    with; the arm and variant are the server's own record of who answered."""

    __tablename__ = "served_feedback"
    __table_args__ = (UniqueConstraint("deployment_id", "request_id", name="uq_served_feedback_request"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    request_id: Mapped[str] = mapped_column(String(64))
    arm: Mapped[str] = mapped_column(String(20))
    variant_id: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(200))
    correct: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlDriftSample(Base):
    """One request text a model server sampled for drift monitoring (`jobs.serving.drift`): what it saw and said.

    `unknown_token_rate` is None when the runtime cannot tell which tokens were unknown (never a fake 0);
    `arm` names the canary arm that answered (None: a deployment without arms).
    """

    __tablename__ = "drift_samples"
    __table_args__ = (
        Index("ix_drift_samples_deployment_id_id", "deployment_id", "id"),
        Index("ix_drift_samples_deployment_sampled_at", "deployment_id", "sampled_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    variant_id: Mapped[int] = mapped_column(Integer)  # not a foreign key, like SqlDeployment.variant_id
    arm: Mapped[str | None] = mapped_column(String(20))
    sampled_at: Mapped[datetime] = mapped_column(default=utcnow)
    tokens: Mapped[int] = mapped_column(Integer)
    unknown_token_rate: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)


class SqlDriftReference(Base):
    """A dataset split run once through a variant (keyed by the variant's files' sha256): the distribution a live
    window of drift samples is compared with, cached so a refresh of the Drift view does not re-run the model.
    `samples`: {"tokens": [...], "unknown_token_rate": [... or None], "label": [...], "confidence": [...]}."""

    __tablename__ = "drift_references"
    __table_args__ = (
        UniqueConstraint("variant_sha256", "dataset_id", "split", name="uq_drift_references_variant_dataset_split"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    variant_sha256: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    dataset_sha256: Mapped[str] = mapped_column(String(64))  # a dataset re-imported under the same id is stale
    split: Mapped[str] = mapped_column(String(20))
    num_examples: Mapped[int] = mapped_column(Integer)
    samples: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SqlLoadTest(Base):
    """One concurrency level of a `loadtest` job against a deployment: what was sent, what came back, how fast,
    and the machine's load and fingerprint while it ran. Kept apart from `measurements`: these figures include the
    HTTP path, the batcher and a load generator on the same machine, so advice and speedups never read them."""

    __tablename__ = "load_tests"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int] = mapped_column(Integer, index=True)  # the stable variant; not a foreign key, as deployments
    variant_ids: Mapped[list[Any]] = mapped_column(default=list)  # every variant it served (stable, canary)
    dataset_id: Mapped[int | None] = mapped_column(Integer)  # where the texts came from
    split: Mapped[str | None] = mapped_column(String(20))
    device: Mapped[str] = mapped_column(String(40))
    concurrency: Mapped[int] = mapped_column(Integer)  # senders, each waiting for its answer before the next request
    texts_per_request: Mapped[int] = mapped_column(Integer)
    sent: Mapped[int] = mapped_column(Integer)
    ok: Mapped[int] = mapped_column(Integer)  # answered 200
    errors: Mapped[dict[str, Any]] = mapped_column(default=dict)  # "429" | "503" | "timeout" | "connection" -> count
    seconds: Mapped[float] = mapped_column(Float)
    stopped_by: Mapped[str] = mapped_column(String(20))  # "requests" | "time cap"
    requests_per_s: Mapped[float] = mapped_column(Float)  # answered OK, per second
    texts_per_s: Mapped[float] = mapped_column(Float)
    p50_ms: Mapped[float | None] = mapped_column(Float)  # client-side latency of OK answers; None: none came back OK
    p95_ms: Mapped[float | None] = mapped_column(Float)
    p99_ms: Mapped[float | None] = mapped_column(Float)
    mean_ms: Mapped[float | None] = mapped_column(Float)
    load: Mapped[dict[str, Any]] = mapped_column(default=dict)  # jobs.bench.load, without the server's and our CPU
    fingerprint: Mapped[dict[str, Any]] = mapped_column(default=dict)
    fingerprint_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
