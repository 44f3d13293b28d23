"""Does the fork server's start-up disturb a benchmark? A fresh burst worker whose first job is a benchmark at
batch 1 x 128 (the fork server starts importing as it starts, as it did for a search's re-measured cells), with
WORKBENCH_FORK_SERVER on and off in alternating rounds. Per round it prints the benchmark cells' p50 and the
share of the CPU other processes took while each cell was timed (the benchmark's own load probe): with the server
importing at normal priority that share rose to 23-31 % on the EPYC and the p50s nearly doubled; it imports on
idle CPU time only (SCHED_IDLE) now.

    .venv/bin/python benchmarks/fork_server_quiet.py --home DIR --variants ID[,ID...] [--rounds 3]

DIR: a data directory with the variants evaluated on a dataset (a search's, for instance). One small variant (an
ONNX Runtime int8 student) reaches its timed calls within the server's import; a PyTorch fp32 one loads too slowly.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run_round(setting: str, variants: list[int], dataset_id: int) -> list[tuple[int, float, float]]:
    from jobs import api
    from jobs.runner.worker import Worker
    from storage import catalog

    os.environ["WORKBENCH_FORK_SERVER"] = setting
    bench = api.submit("benchmark", {"compare_with": list(variants[1:]), "batch_sizes": [1], "seq_lens": [128]},
                       variant=variants[0], dataset=dataset_id)
    Worker(burst=True, poll_interval=0.02).run()
    rows = [m for m in catalog.list_measurements(variant_ids=variants) if m.job_id == bench.id]
    if len(rows) != len(variants):
        raise SystemExit(f"benchmark job {bench.id} measured {len(rows)} cells, not {len(variants)}")
    return [(m.variant_id, m.p50_ms, m.load.get("other_cpu_fraction", 0.0)) for m in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True)
    parser.add_argument("--variants", required=True, help="variant ids, comma-separated (the first is benchmarked, "
                        "the others are measured beside it)")
    parser.add_argument("--dataset", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update({"WORKBENCH_HOME": args.home, "WORKBENCH_MLFLOW": "off", "HF_HUB_OFFLINE": "1"})
    from jobs.runtimes.devices import cpu_info

    variants = [int(v) for v in args.variants.split(",")]
    results: dict[str, list[tuple[int, float, float]]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for setting in ("on", "off"):
            cells = run_round(setting, variants, args.dataset)
            results[setting] += cells
            print(f"fork server {setting:3}: " + "; ".join(
                f"variant {v} p50 {p50:.2f} ms, others took {other:.0%} of the CPU" for v, p50, other in cells))
    info = cpu_info()
    print(f"CPU: {info['cpu']} ({info['cpu_count']} cores, flags: {' '.join(info['cpu_flags']) or 'none of interest'})")
    for setting, cells in results.items():
        print(f"fork server {setting:3}: others' CPU share while a cell was timed: median "
              f"{statistics.median(c[2] for c in cells):.1%}, max {max(c[2] for c in cells):.1%}")
    for v in variants:
        on = statistics.median(p for w, p, _ in results["on"] if w == v)
        off = statistics.median(p for w, p, _ in results["off"] if w == v)
        print(f"variant {v}: p50 median {on:.2f} ms with the server starting, {off:.2f} ms without ({on / off:.2f}x)")


if __name__ == "__main__":
    main()
