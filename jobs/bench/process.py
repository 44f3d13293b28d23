"""One variant per process: `python -m jobs.bench.process`, driven over stdin/stdout by the benchmark job.

Each variant gets its own process so its peak RSS is its own, and a crash costs one variant. All processes stay
alive while the job sends each cell to each variant in turn (interleaved), so ratios between variants come from
the same minutes of the same machine. Protocol: JSON lines prefixed with PREFIX on stdout; anything else a
library prints is passed through to the job log.
"""

from __future__ import annotations

import json
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
        batch, seq = command["batch_size"], command["seq_len"]
        rows = [texts[i % len(texts)] for i in range(batch)]
        try:
            encoded = predictor.encode(rows, max_length=seq, pad_to_max=True)  # real texts padded or cut to `seq`
        except ValueError as exc:  # `seq` is longer than this model's positions
            _send({"error": str(exc)})
            continue
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        probe = LoadProbe()
        try:
            timing = measure(lambda batch=encoded: predictor.predict_encoded(batch), StopRule(**command["rule"]))
        except Exception as exc:  # e.g. a TensorRT profile too small for this cell
            _send({"error": f"{type(exc).__name__}: {exc}"})
            continue
        reply = {"samples_ms": timing.samples_ms, "stable": timing.stable, "spread": timing.spread,
                 "stopped_by": timing.stopped_by, "peak_rss_bytes": _peak_rss_bytes(), "load": probe.finish()}
        if cuda:
            import torch

            reply["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        _send(reply)


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

    def run(self, batch_size: int, seq_len: int, rule: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"batch_size": batch_size, "seq_len": seq_len, "rule": rule}) + "\n")
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
