"""Job kinds used only by tests (loaded through WORKBENCH_PLUGINS): they sleep, fail or crash on demand."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register


@dataclass(frozen=True)
class SleepParams:
    seconds: float = field(default=0.2, metadata={"help": "how long to run"})
    outcome: Literal["succeed", "raise", "segfault", "exit"] = field(default="succeed", metadata={"help": "how to end"})
    marker: str = field(default="", metadata={"help": "a directory where each run leaves a file"})

    def __post_init__(self):
        if self.seconds < 0:
            raise ValueError("seconds must be >= 0")


@register("test-sleep", SleepParams, summary="(tests) sleep, then succeed or fail", needs_variant=False)
def run(params: SleepParams, ctx: JobContext) -> JobResult:
    if params.marker:
        with open(os.path.join(params.marker, f"job{ctx.job.id}-pid{os.getpid()}"), "w") as f:
            f.write(str(ctx.job.attempts))
    steps = max(int(params.seconds / 0.05), 1)
    for i in range(steps):
        time.sleep(params.seconds / steps)
        ctx.progress((i + 1) / steps, f"step {i + 1}/{steps}")
    if params.outcome == "raise":
        raise RuntimeError("this job was asked to fail")
    if params.outcome == "segfault":
        ctypes.string_at(0)
    if params.outcome == "exit":
        os._exit(3)
    import numpy as np

    # what its process was given: whether torch came imported (a fork server's child), by whom, and a random draw
    return JobResult(result={"slept": params.seconds, "pid": os.getpid(), "parent": os.getppid(),
                             "torch_imported": "torch" in sys.modules, "cwd": os.getcwd(),
                             "mark": os.environ.get("WORKBENCH_TEST_MARK"), "draw": float(np.random.random())})
