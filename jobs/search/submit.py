"""Queueing a search: the goal and the space checked, the start variant chosen, one `search` job queued."""

from __future__ import annotations

import json
from typing import Any

from jobs.runner.params import parse_params, to_jsonable
from jobs.search.goal import SearchGoal
from storage import catalog, queue, settings
from storage.entities import Job
from storage.errors import InvalidInput

MIN_ATTEMPTS = 5  # a long search should outlive a few worker restarts; each resumes where the last one stopped


def submit_search(model: int | str, dataset: int | str, *, max_drop_points: float, batch_size: int = 1,
                  seq_len: int = 128, traffic: str = "grid", device: str = "cpu", budget_s: float,
                  n_trials: int | None = None, space: dict[str, Any] | None = None, quick: bool = False,
                  speedup: float | None = None, seed: int = 0) -> Job:
    """Queue a search from the model's fp32 start variant (a variant already fine-tuned on the dataset when there
    is one, else the model itself, fine-tuned by the search first). Everything is checked before anything is
    queued: the goal, the space (against what runs here), the model and the dataset."""
    from jobs.decisions.wizard import _start
    from jobs.kinds.search import SearchParams
    from jobs.runtimes.torch_runtime import is_plain_fp32
    from jobs.search.space import build_space

    goal = SearchGoal(max_drop_points=float(max_drop_points), budget_s=float(budget_s), batch_size=int(batch_size),
                      seq_len=int(seq_len), traffic=traffic, device=device, speedup=speedup or None)
    if n_trials is not None and n_trials < 1:
        raise InvalidInput(f"the number of trials must be at least 1, got {n_trials}")
    model_entity, dataset_entity = catalog.get_model(model), catalog.get_dataset(dataset)
    build_space(goal.device, quick, space, goal.traffic)
    start, _, _ = _start(model_entity, dataset_entity)
    if not is_plain_fp32(start):
        raise InvalidInput(f"variant #{start.id} is {start.runtime} {start.precision}: a search starts from an fp32 "
                           "PyTorch model")
    params = to_jsonable(parse_params(SearchParams, {
        "max_drop_points": goal.max_drop_points, "budget_s": goal.budget_s, "batch_size": goal.batch_size,
        "seq_len": goal.seq_len, "traffic": goal.traffic, "device": goal.device, "n_trials": n_trials or 0,
        "space": json.dumps(space, sort_keys=True) if space else "", "quick": bool(quick),
        "speedup": float(speedup or 0.0), "seed": int(seed)}))
    return queue.enqueue("search", params, device=goal.device, model_id=start.model_id, variant_id=start.id,
                         dataset_id=dataset_entity.id,
                         max_attempts=max(MIN_ATTEMPTS, settings.get("WORKBENCH_MAX_ATTEMPTS")))
