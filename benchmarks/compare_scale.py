"""How long the Compare tab takes to render with many variants and measurement rows (target: under 2 s).

Fills a throw-away data directory with N variants x M measurement rows on one fingerprint, then times what the
tab runs on open: the comparison query, the decision and the five charts. Prints the median of a few runs.

    .venv/bin/python benchmarks/compare_scale.py [--variants 200] [--rows 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fill(variants: int, rows_per_variant: int) -> None:
    from jobs.bench.fingerprint import fingerprint, fingerprint_hash
    from storage import catalog
    from tests.support.rows import placeholder_dataset, placeholder_model

    model, root = placeholder_model("scale", size_bytes=90_000_000)
    ds = placeholder_dataset()
    fp = fingerprint("cpu")
    cells = [(b, s) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) for s in (32, 64, 128, 256, 512)][:rows_per_variant]
    for i in range(variants):
        v = catalog.create_variant(model_id=model.id, parent_id=root.id, name=f"scale > v{i}", artifact_dir="/nonexistent",
                                   runtime="onnxruntime", precision="int8", recipe={}, files=[], sha256=str(i), size_bytes=1)
        catalog.add_evaluation(variant_id=v.id, dataset_id=ds.id, split="test", num_examples=3816, accuracy=0.7 + i / 2000,
                               macro_f1=0.7, confusion={}, predictions=list(range(3816)))
        catalog.add_measurements([{
            "variant_id": v.id, "dataset_id": ds.id, "device": "cpu", "batch_size": b, "seq_len": s, "samples": 50,
            "p50_ms": 1 + i + b, "p90_ms": 2 + i + b, "p95_ms": 3 + i + b, "p99_ms": 4 + i + b, "mean_ms": 1 + i + b,
            "std_ms": 0.1, "throughput_sps": 100.0, "tokens_per_s": 100.0 * s, "peak_rss_bytes": 1, "load_time_s": 1.0,
            "threads": 2, "stable": True, "spread": 0.01, "fingerprint": fp, "fingerprint_hash": fingerprint_hash(fp),
        } for b, s in cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=200)
    parser.add_argument("--rows", type=int, default=50, help="measurement rows per variant")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ["WORKBENCH_HOME"] = tempfile.mkdtemp(prefix="compare-scale-")
    started = time.perf_counter()
    fill(args.variants, args.rows)
    print(f"filled {args.variants} variants x {args.rows} rows in {time.perf_counter() - started:.1f} s "
          f"(data directory {os.environ['WORKBENCH_HOME']})")

    from workbench.tabs.compare import render

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        out = render(dataset=None, fingerprint=None, run=None, cell=None, baseline=None, slo=0, max_drop=1.0, price=0.5)
        times.append(time.perf_counter() - t0)
    rows = len(out[-1])
    print(f"Compare tab render ({rows} rows shown): median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f} s, max {max(times):.3f} s over {args.repeat} runs (target < 2 s)")


if __name__ == "__main__":
    main()
