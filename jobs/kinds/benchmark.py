"""`benchmark`: latency percentiles, throughput, peak memory and load time on a grid of batch sizes x lengths,
or on real traffic.

Grid inputs are real dataset texts padded or cut to each length. With `traffic=real`, each batch size instead
serves texts sampled from the test split, each batch padded to its longest text (see jobs/bench/traffic.py for
what a request is); the row has seq_len 0 and records the length distribution in `traffic`. Every variant runs
in its own process (its own peak RSS); cells are interleaved across variants, with the order rotated each cell,
so ratios share conditions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from jobs.bench.fingerprint import fingerprint, fingerprint_hash
from jobs.bench.stability import StopRule
from jobs.bench.stats import summarize
from jobs.bench.traffic import REAL_TRAFFIC_SEQ, TrafficSpec, sample_texts, texts_for
from jobs.decisions.compare import cell_label
from jobs.ml.data import split_examples
from jobs.ml.lineage import classifies, lineage
from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register
from storage import catalog, shared_artifacts
from storage.entities import Variant
from storage.errors import InvalidInput


@dataclass(frozen=True)
class BenchmarkParams:
    compare_with: tuple[int, ...] = field(default=(), metadata={
        "help": "ids of other variants measured in the same job, interleaved with this one (comma-separated)"})
    compare_with_lineage: bool = field(default=False, metadata={
        "help": "also measure this variant's ancestors that classify the dataset's labels (e.g. the fp32 baseline a "
                "pipeline fine-tuned before), so a pipeline's last step compares everything it made"})
    batch_sizes: tuple[int, ...] = field(default=(1, 16), metadata={"help": "batch sizes to measure (comma-separated)"})
    seq_lens: tuple[int, ...] = field(default=(128,), metadata={"help": "sequence lengths in tokens (comma-separated)"})
    device: Literal["cpu", "cuda"] = field(default="cpu", metadata={"help": "where to run (cuda needs a GPU worker)"})
    threads: int = field(default=0, metadata={"help": "CPU threads per variant; 0 = all cores"})
    warmup: int = field(default=5, metadata={"help": "untimed calls before each cell"})
    window: int = field(default=10, metadata={"help": "timed calls per stability window"})
    rel_spread: float = field(default=0.05, metadata={
        "help": "stop when the medians of the last 3 windows are within this fraction of each other"})
    min_samples: int = field(default=30, metadata={"help": "timed calls at least, per cell"})
    max_seconds: float = field(default=10.0, metadata={"help": "time cap per cell (the row then says it did not converge)"})
    texts: int = field(default=64, metadata={"help": "test-split texts cycled into the batches"})
    rough: bool = field(default=False, metadata={
        "help": "a first look (the wizard's quick trial): its figures are shown but never become advice"})
    traffic: Literal["grid", "real"] = field(default="grid", metadata={
        "help": "grid: every batch padded or cut to each of seq_lens; real: `texts` texts sampled from the test split, "
                "each batch padded to its longest text (seq_lens is not used), per-request p50/p95 and texts/s"})
    bucketing: bool = field(default=False, metadata={
        "help": "real traffic: sort the texts by token length before forming batches, as a server grouping by length"})
    max_length: int = field(default=0, metadata={
        "help": "real traffic: truncate texts at this many tokens; 0 = the variant's own max length"})
    seed: int = field(default=0, metadata={"help": "real traffic: seed of the texts sampled from the test split"})

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1 or max(self.batch_sizes) > 1024:
            raise ValueError("batch_sizes must be between 1 and 1024, e.g. 1,8,32")
        if not self.seq_lens or min(self.seq_lens) < 2 or max(self.seq_lens) > 512:
            raise ValueError("seq_lens must be between 2 and 512 tokens, e.g. 32,128")
        if self.threads < 0 or self.texts < 1:
            raise ValueError("threads must be 0 (all cores) or more, and texts at least 1")
        if self.traffic == "grid" and (self.bucketing or self.max_length):
            raise ValueError("bucketing and max_length apply to real traffic only: add traffic=real")
        if self.max_length and not 2 <= self.max_length <= 512:
            raise ValueError("max_length must be 0 (the variant's own) or between 2 and 512 tokens")
        StopRule(warmup=self.warmup, window=self.window, rel_spread=self.rel_spread, min_samples=self.min_samples,
                 max_seconds=self.max_seconds)  # its checks say how to fix a bad rule


def lineage_to_compare(variant: Variant, labels: list[str], skip: set[int]) -> list[Variant]:
    """The variant's ancestors, original first, that can classify these labels (a bare encoder cannot)."""
    return [v for v in lineage(variant)[:-1] if v.id not in skip and classifies(v, labels)]


def rule_of(params: BenchmarkParams) -> dict:
    return asdict(StopRule(warmup=params.warmup, window=params.window, rel_spread=params.rel_spread,
                           min_samples=params.min_samples, max_seconds=params.max_seconds))


def traffic_spec(params: BenchmarkParams, batch_size: int) -> dict | None:
    """What a variant's process needs for a real-traffic cell at this batch size (None on the grid)."""
    if params.traffic != "real":
        return None
    return asdict(TrafficSpec(texts_for(params.texts, batch_size), params.bucketing, params.max_length, params.seed))


def tracked_cells(job, result: dict) -> dict:
    """Each cell this job measured as MLflow metrics: p50, p95 and throughput per variant x batch x length."""
    if not result.get("variants"):
        return {}
    metrics = []
    for m in catalog.list_measurements(variant_ids=[int(v) for v in result["variants"]]):
        if m.job_id == job.id:
            cell = f"v{m.variant_id}.b{m.batch_size}." + ("real" if m.traffic is not None else f"s{m.seq_len}")
            metrics += [(f"{stat}.{cell}", float(getattr(m, stat)), 0) for stat in ("p50_ms", "p95_ms", "throughput_sps")]
    return {"metrics": metrics}


# A quick trial's cells: enough calls per cell for a speedup with an interval (WORKBENCH_MIN_SAMPLES, 20 by
# default), marked rough so its figures never become "measured on this machine" advice.
QUICK_PARAMS = {"warmup": 3, "window": 5, "min_samples": 20, "max_seconds": 4.0, "texts": 16, "rough": True}


@register("benchmark", BenchmarkParams, summary="Latency, throughput and memory on a batch x length grid or on real traffic",
          device="any", tracking=tracked_cells, cites_measured_speedups=True, quick_params=QUICK_PARAMS,
          progress_weight=2.0)
def run(params: BenchmarkParams, ctx: JobContext) -> JobResult:
    from jobs.bench.process import BenchProcess

    first, dataset = ctx.require_variant(), ctx.require_dataset()
    variants = [first] + [catalog.get_variant(v) for v in params.compare_with if v != first.id]
    if params.compare_with_lineage:
        variants += lineage_to_compare(first, dataset.labels, {v.id for v in variants})
        ctx.log(f"measuring variants {', '.join(str(v.id) for v in variants)} (with the lineage of {first.id})")
    for variant in variants[1:]:  # measured in their own processes from their folders: on this node first
        shared_artifacts.ensure_variant(variant)
    texts_file = ctx.work_dir / "texts.json"
    if params.traffic == "real":  # one seeded sample; each batch size serves a prefix of it rounded to full batches
        longest = max(texts_for(params.texts, b) for b in params.batch_sizes)
        texts = sample_texts(split_examples(dataset, "test").texts, longest, params.seed)
        cells = [(b, REAL_TRAFFIC_SEQ) for b in params.batch_sizes]
    else:
        texts = split_examples(dataset, "test", params.texts).texts
        cells = [(b, s) for s in params.seq_lens for b in params.batch_sizes]
    texts_file.write_text(json.dumps(texts))
    fp = fingerprint(params.device)
    fp_hash = fingerprint_hash(fp)
    ctx.log(f"fingerprint {fp_hash}: {json.dumps(fp)}")
    processes: dict[int, BenchProcess] = {}
    rows = []
    try:
        for i, variant in enumerate(variants):
            ctx.check_cancelled()
            ctx.progress(0.02 + 0.08 * i / len(variants), f"loading variant {variant.id} in its own process")
            processes[variant.id] = BenchProcess(variant, params.device, params.threads, texts_file, ctx.log)
            ready = processes[variant.id].ready
            ctx.log(f"variant {variant.id} loaded in {ready['load_time_s']:.2f} s")
        total, done = len(cells) * len(variants), 0
        for index, (batch, seq) in enumerate(cells):
            order = variants[index % len(variants):] + variants[: index % len(variants)]  # rotate: no fixed first slot
            for variant in order:
                ctx.check_cancelled()
                proc = processes[variant.id]
                reply = proc.run(batch, seq, rule_of(params), traffic_spec(params, batch))
                done += 1
                if "error" in reply:
                    ctx.log(f"variant {variant.id} {cell_label(batch, seq, tokens=True)}: {reply['error']}")
                    continue
                stats = summarize(reply["samples_ms"], batch, seq)
                traffic = reply.get("traffic")
                if traffic:  # tokens/s of real traffic: the texts' own tokens, not the padding computed with them
                    stats["tokens_per_s"] = stats["throughput_sps"] * traffic["token_lengths"]["mean"]
                rows.append({
                    "variant_id": variant.id, "job_id": ctx.job.id, "dataset_id": dataset.id, "device": params.device,
                    "batch_size": batch, "seq_len": seq, **stats,
                    "peak_rss_bytes": reply["peak_rss_bytes"], "gpu_peak_bytes": reply.get("gpu_peak_bytes"),
                    "load_time_s": proc.ready["load_time_s"], "threads": proc.ready["threads"],
                    "stable": reply["stable"], "spread": reply["spread"], "fingerprint": fp, "fingerprint_hash": fp_hash,
                    "samples_ms": [round(x, 4) for x in reply["samples_ms"]], "load": reply["load"],
                    "rough": params.rough, "traffic": traffic,
                })
                load = reply["load"]
                ctx.progress(0.1 + 0.85 * done / total,
                             f"variant {variant.id}: {cell_label(batch, seq, tokens=True)}: p50 {stats['p50_ms']:.2f} ms "
                             f"({stats['samples']} calls, {reply['stopped_by']}; other processes took "
                             f"{load['other_cpu_fraction']:.0%} of the CPU, steal {load['steal_fraction']:.0%}, "
                             f"load average {load['loadavg_1m']})")
    finally:
        for proc in processes.values():
            proc.close()
    if not rows:
        raise InvalidInput("no cell could be measured; see the job log")
    return JobResult(result={"measurements": len(rows), "fingerprint_hash": fp_hash,
                             "variants": [v.id for v in variants], "unstable_cells": sum(not r["stable"] for r in rows)},
                     measurements=rows)
