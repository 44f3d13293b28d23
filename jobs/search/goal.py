"""What a search aims at: the accuracy it may lose, where speed is measured, the device and the time it may take."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from storage.errors import InvalidInput

MAX_BUDGET_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class SearchGoal:
    max_drop_points: float  # accuracy points the chosen variant may lose against the fp32 baseline
    budget_s: float  # wall-clock seconds from the search's first start, restarts included
    batch_size: int = 1
    seq_len: int = 128  # unused on real traffic
    traffic: str = "grid"  # "grid": batch_size x seq_len; "real": the test split's own lengths
    device: str = "cpu"
    speedup: float | None = None  # stop early once a trial within the drop is at least this much faster

    def __post_init__(self) -> None:
        if not 0 <= self.max_drop_points <= 100:
            raise InvalidInput(f"the maximum accuracy drop must be between 0 and 100 points, got {self.max_drop_points}")
        if not 0 < self.budget_s <= MAX_BUDGET_S:
            raise InvalidInput(f"the time budget must be above 0 and at most a week, got {self.budget_s:g} s")
        if not 1 <= self.batch_size <= 1024:
            raise InvalidInput(f"batch size must be between 1 and 1024, got {self.batch_size}")
        if not 2 <= self.seq_len <= 512:
            raise InvalidInput(f"sequence length must be between 2 and 512 tokens, got {self.seq_len}")
        if self.traffic not in ("grid", "real"):
            raise InvalidInput(f"traffic must be grid (batch x length) or real (the test split's lengths), "
                               f"got {self.traffic!r}")
        if self.device not in ("cpu", "cuda"):
            raise InvalidInput(f"device must be cpu or cuda, got {self.device!r}")
        if self.speedup is not None and self.speedup < 1:
            raise InvalidInput(f"the speed-up target must be at least 1x, got {self.speedup}")

    @property
    def cell(self) -> tuple[int, int]:
        """The benchmark cell every trial is judged at: (batch, seq_len), seq_len 0 on real traffic."""
        from jobs.bench.traffic import REAL_TRAFFIC_SEQ

        return self.batch_size, (REAL_TRAFFIC_SEQ if self.traffic == "real" else self.seq_len)

    def as_dict(self) -> dict[str, Any]:
        goal = dataclasses.asdict(self)
        if self.traffic == "real":
            goal.pop("seq_len")
        return goal

    def benchmark_params(self) -> dict[str, Any]:
        """The benchmark job's params for the goal's one cell."""
        cell: dict[str, Any] = {"traffic": "real"} if self.traffic == "real" else {"seq_lens": [self.seq_len]}
        return {"batch_sizes": [self.batch_size], **cell, "device": self.device}
