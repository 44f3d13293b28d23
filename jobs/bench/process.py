"""One variant per process: `python -m jobs.bench.process`, driven over stdin/stdout by the benchmark job.

Each variant gets its own process so its peak RSS is its own, and a crash costs one variant. All processes stay
alive while the job sends each cell to each variant in turn (interleaved), so ratios between variants come from
the same minutes of the same machine. Protocol: JSON lines prefixed with PREFIX on stdout; anything else a
library prints is passed through to the job log.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

PREFIX = "@@bench "


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def serve(artifact_dir: str, runtime: str, device: str, threads: int, texts_file: str) -> None:
    from jobs.bench.load import LoadProbe
    from jobs.bench.stability import StopRule, measure
    from jobs.runtimes import load_predictor

    texts = json.loads(Path(texts_file).read_text())
    started = time.perf_counter()
    predictor = load_predictor(SimpleNamespace(artifact_dir=artifact_dir, runtime=runtime), device, threads=threads or None)
    load_time = time.perf_counter() - started
    cuda = device.startswith("cuda")
    _send({"ready": True, "load_time_s": load_time, "peak_rss_bytes": _peak_rss_bytes(), "threads": threads or os.cpu_count()})
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("quit"):
            break
        batch, traffic = command["batch_size"], None
        try:
            rule = StopRule(**command["rule"])
            if command.get("traffic"):
                batches, rule, traffic = real_traffic_batches(predictor, texts, batch, command["traffic"], rule)
            else:
                rows = [texts[i % len(texts)] for i in range(batch)]
                # real texts padded or cut to `seq`
                batches = [predictor.encode(rows, max_length=command["seq_len"], pad_to_max=True)]
        except ValueError as exc:  # a length longer than this model's positions, a bad rule
            _send({"error": str(exc)})
            continue
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        probe = LoadProbe()
        if len(batches) == 1:  # a grid cell: the same batch every call
            call = lambda encoded=batches[0]: predictor.predict_encoded(encoded)  # noqa: E731
        else:  # real traffic: one batch per timed call, in a fixed cycle
            served = itertools.cycle(batches)
            call = lambda served=served: predictor.predict_encoded(next(served))  # noqa: E731
        try:
            timing = measure(call, rule)
        except Exception as exc:  # e.g. a TensorRT profile too small for this cell
            _send({"error": f"{type(exc).__name__}: {exc}"})
            continue
        reply = {"samples_ms": timing.samples_ms, "stable": timing.stable, "spread": timing.spread,
                 "stopped_by": timing.stopped_by, "peak_rss_bytes": _peak_rss_bytes(), "load": probe.finish(),
                 "traffic": traffic}
        if cuda:
            import torch

            reply["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        _send(reply)


def real_traffic_batches(predictor: Any, texts: list[str], batch_size: int, spec: dict[str, Any], rule: Any):
    """The encoded batches of one real-traffic cell (each padded to its longest text), the stop rule fitted to
    them, and the cell's length distribution.

    The rule's window is rounded up to whole passes over the batches, so every window sees the same mix of lengths
    and consecutive windows' medians can agree; the warm-up runs every batch shape once (a runtime may prepare
    per shape on first sight)."""
    from dataclasses import replace

    from jobs.bench.traffic import TrafficSpec, distribution, form_batches

    spec_ = TrafficSpec(**spec)
    served = texts[: spec_.texts]
    max_length = spec_.max_length or predictor.max_length
    untruncated = predictor.token_counts(served)
    lengths = [min(n, max_length) for n in untruncated]  # truncation keeps the special tokens within max_length
    groups = form_batches(lengths, batch_size, spec_.bucketing)
    batches = [predictor.encode([served[i] for i in group], max_length=max_length) for group in groups]
    seen = [int(n) for b in batches for n in b["attention_mask"].sum(axis=1)]
    if sorted(seen) != sorted(lengths):  # the tokenizer is the truth; a mismatch would make the record lie
        raise ValueError("the tokenized batches do not have the token lengths counted for them")
    window = len(batches) * math.ceil(rule.window / len(batches))
    fitted = replace(rule, window=window, warmup=max(rule.warmup, len(batches)),
                     max_samples=max(rule.max_samples, rule.windows * window, rule.min_samples))
    widths = [int(b["attention_mask"].shape[1]) for b in batches]
    record = distribution(lengths, untruncated, widths, [len(g) for g in groups], spec_, max_length)
    return batches, fitted, record


class BenchProcess:
    """The job's handle on one variant's process."""

    def __init__(self, variant: Any, device: str, threads: int, texts_file: Path, log):
        self.variant, self.log = variant, log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.bench.process", variant.artifact_dir, variant.runtime, device, str(threads),
             str(texts_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        self.ready = self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
            self.log(f"[variant {self.variant.id}] {line.rstrip()}")
        raise RuntimeError(f"the benchmark process of variant {self.variant.id} exited with {self.proc.wait()}")

    def run(self, batch_size: int, seq_len: int, rule: dict[str, Any],
            traffic: dict[str, Any] | None = None) -> dict[str, Any]:
        """One cell: a grid cell (`seq_len` tokens), or with `traffic` (a TrafficSpec as a dict) real traffic."""
        assert self.proc.stdin is not None
        command = {"batch_size": batch_size, "seq_len": seq_len, "rule": rule, "traffic": traffic}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
