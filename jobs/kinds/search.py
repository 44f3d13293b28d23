"""`search`: an accuracy-aware search across distillation, pruning, runtimes and precisions (jobs/search/).

Given a maximum accuracy drop, the goal's benchmark cell (batch x length, or real traffic), a device and a time
budget, it runs trials of real jobs chosen by a multi-objective Optuna study and keeps the best-so-far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jobs.runner.context import JobContext, JobResult
from jobs.runner.registry import register
from jobs.search.goal import SearchGoal


@dataclass(frozen=True)
class SearchParams:
    max_drop_points: float = field(default=1.0, metadata={
        "help": "the most accuracy points a variant may lose against the fp32 baseline"})
    budget_s: float = field(default=3600.0, metadata={"help": "wall-clock seconds from the first start, restarts included"})
    batch_size: int = field(default=1, metadata={"help": "batch size the latency is measured at"})
    seq_len: int = field(default=128, metadata={"help": "sequence length the latency is measured at (grid traffic)"})
    traffic: Literal["grid", "real"] = field(default="grid", metadata={
        "help": "grid: batch_size x seq_len; real: batches drawn from the test split with dynamic padding"})
    device: Literal["cpu", "cuda"] = field(default="cpu", metadata={"help": "where the variants run"})
    n_trials: int = field(default=0, metadata={"help": "at most this many trials; 0 = as many as the budget allows"})
    space: str = field(default="", metadata={
        "help": 'restrict the space: a JSON object of dimension -> values, e.g. {"backend": ["onnx-int8"]}'})
    quick: bool = field(default=False, metadata={"help": "a small space and short jobs (a first look, tests)"})
    speedup: float = field(default=0.0, metadata={"help": "stop once a trial within the drop is this much faster; 0 = none"})
    seed: int = field(default=0, metadata={"help": "the sampler's seed"})

    def __post_init__(self) -> None:
        from storage.errors import InvalidInput

        if self.n_trials < 0:
            raise ValueError(f"n_trials must be 0 (no limit) or more, got {self.n_trials}")
        try:
            SearchGoal(self.max_drop_points, self.budget_s, self.batch_size, self.seq_len, self.traffic, self.device,
                       self.speedup or None)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None


@register("search", SearchParams, summary="Search distillation, pruning, runtime and precision for the fastest "
                                          "variant within an accuracy drop, in a time budget",
          needs_dataset=True, device="any", automatic=True, progress_weight=10.0)
def run(params: SearchParams, ctx: JobContext) -> JobResult:
    from jobs.search.runner import run as run_search

    return run_search(params, ctx)
