"""Plain, frozen records handed to callers. ORM rows never leave `storage`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from storage.orm import JobStatus

T = TypeVar("T")


def from_row(cls: type[T], row: Any) -> T:
    values = {f.name: getattr(row, f.name) for f in fields(cls)}
    if "artifact_dir" in values:  # a row names its artifact by kind and sha256: where it is on this node
        from storage.shared_artifacts import local_dir

        values["artifact_dir"] = local_dir(values["artifact_dir"])
    return cls(**values)  # type: ignore[arg-type]


def to_dict(entity: Any) -> dict[str, Any]:
    """JSON-friendly dict (datetimes as ISO strings, enums as values) for `--json` output and the UI."""

    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat(timespec="seconds") + "Z"
        if isinstance(value, JobStatus):
            return value.value
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return convert(asdict(entity))


@dataclass(frozen=True)
class Model:
    id: int
    name: str
    source_kind: str
    source: str
    allow_pickle: bool
    info: dict[str, Any]
    created_at: datetime
    task: str  # what the workbench does with it (jobs.tasks): "text-classification"


@dataclass(frozen=True)
class Dataset:
    id: int
    name: str
    source_kind: str
    source: str
    text_column: str
    label_column: str
    labels: list[str]
    class_counts: dict[str, int]
    num_rows: int
    split_seed: int
    split_fractions: dict[str, float]
    split_sizes: dict[str, int]
    artifact_dir: str
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class Variant:
    id: int
    model_id: int
    parent_id: int | None
    name: str
    artifact_dir: str
    runtime: str
    precision: str
    recipe: dict[str, Any]
    files: list[dict[str, Any]]
    sha256: str
    size_bytes: int
    dataset_id: int | None
    info: dict[str, Any]
    created_at: datetime

    def ensure_local(self) -> Path:
        """This variant's folder on this node, fetched first from a URL artifact root; ArtifactUnavailable
        saying why not (what `jobs.runtimes.load_predictor` calls before loading a stored variant)."""
        from storage.shared_artifacts import ensure_variant

        return ensure_variant(self)


@dataclass(frozen=True)
class Worker:
    id: str
    hostname: str
    pid: int
    devices: list[str]
    device_info: dict[str, Any]
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    params: dict[str, Any]
    status: JobStatus
    device: str
    progress: float
    message: str
    error: str | None
    result: dict[str, Any]
    model_id: int | None
    variant_id: int | None
    dataset_id: int | None
    produced_variant_id: int | None
    depends_on_id: int | None
    pipeline: str | None
    priority: int
    evaluation: dict[str, Any] | None
    worker_id: str | None
    pid: int | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        from storage.orm import utcnow

        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()


@dataclass(frozen=True)
class LogTail:
    """The end of a job's log (its log is read on its own, never with the job); `omitted`: earlier text was cut."""

    text: str
    omitted: bool


@dataclass(frozen=True)
class Evaluation:
    id: int
    variant_id: int
    dataset_id: int
    job_id: int | None
    split: str
    num_examples: int
    accuracy: float
    macro_f1: float
    confusion: dict[str, Any]
    agreement_with_parent: float | None
    parent_accuracy: float | None
    tolerance_points: float
    flagged: bool
    predictions: list[Any]
    created_at: datetime
    majority_accuracy: float | None = None
    majority_label: str | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    per_class_recall: dict[str, Any] = field(default_factory=dict)
    degenerate: bool = False
    degenerate_reason: str | None = None

    @property
    def drop_points(self) -> float | None:
        """Accuracy points lost against the parent on the same examples (positive = worse)."""
        return None if self.parent_accuracy is None else round((self.parent_accuracy - self.accuracy) * 100, 2)


@dataclass(frozen=True)
class Measurement:
    id: int
    variant_id: int
    job_id: int | None
    dataset_id: int | None
    device: str
    batch_size: int
    seq_len: int
    samples: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    throughput_sps: float
    tokens_per_s: float
    peak_rss_bytes: int | None
    gpu_peak_bytes: int | None
    load_time_s: float | None
    threads: int | None
    stable: bool
    spread: float | None
    fingerprint: dict[str, Any]
    fingerprint_hash: str
    created_at: datetime
    samples_ms: list[float] | None = None
    load: dict[str, Any] = field(default_factory=dict)
    rough: bool = False
    traffic: dict[str, Any] | None = None  # real-traffic cell (seq_len 0): its length distribution; None = grid cell


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    variant_a_id: int
    variant_b_id: int
    split_b_percent: float
    created_at: datetime


@dataclass(frozen=True)
class TrafficRequest:
    id: int
    experiment_id: int
    user_id: str
    arm: str
    variant_id: int
    text: str
    label: str
    confidence: float
    latency_ms: float
    source: str
    feedback: str | None
    created_at: datetime
    feedback_at: datetime | None


@dataclass(frozen=True)
class AliasEvent:
    id: int
    tracking_uri: str
    registered_model: str
    alias: str
    action: str
    version: str
    previous_version: str | None
    undone: bool
    created_at: datetime


@dataclass(frozen=True)
class Deployment:
    """A model server started for a variant; `status`: starting | ready | crashed | stopped."""

    id: int
    name: str
    variant_id: int
    variant_sha256: str
    alias: str | None
    host: str
    port: int
    config: dict[str, Any]
    pid: int | None
    status: str
    reason: str | None
    log_path: str
    created_at: datetime
    started_at: datetime | None
    ready_at: datetime | None
    stopped_at: datetime | None
    canary_variant_id: int | None = None  # the canary beside the stable variant (None: no canary now)
    canary_variant_sha256: str | None = None
    canary_ref: str | None = None  # what the canary was asked as (an id, a name, NAME@ALIAS)
    canary_percent: float = 0.0  # of users routed to the canary
    rollout: dict[str, Any] = field(default_factory=dict)  # the automatic-rollback thresholds

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether it has (or should have) a live server process."""
        return self.status in ("starting", "ready")


@dataclass(frozen=True)
class DriftSample:
    """One sampled request text: its token count, unknown-token rate (None: the runtime cannot tell), answer."""

    id: int
    deployment_id: int
    variant_id: int
    arm: str | None
    sampled_at: datetime
    tokens: int
    unknown_token_rate: float | None
    label: str
    confidence: float


@dataclass(frozen=True)
class DeploymentEvent:
    """A step of a deployment's rollout; `kind`: canary | percent | promote | rollback | auto_rollback."""

    id: int
    deployment_id: int
    kind: str
    message: str
    details: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class LoadTest:
    """One concurrency level of a load test against a deployment (see storage.orm.SqlLoadTest)."""

    id: int
    job_id: int | None
    deployment_id: int
    variant_id: int
    variant_ids: list[int]
    dataset_id: int | None
    split: str | None
    device: str
    concurrency: int
    texts_per_request: int
    sent: int
    ok: int
    errors: dict[str, int]
    seconds: float
    stopped_by: str
    requests_per_s: float
    texts_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    load: dict[str, Any]
    fingerprint: dict[str, Any]
    fingerprint_hash: str
    created_at: datetime
