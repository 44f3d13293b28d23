"""Run the wizard as a new user would: the built-in MiniLM on the built-in tweet sentiment, this machine's target,
quick trial or full, in a fresh data directory; print the verdict with times, accuracies and their intervals,
validity, the benchmark cells' stability and the machine's load while they ran.

    .venv/bin/python benchmarks/wizard_trial.py [--full] [--home DIR] [--train-examples N --epochs E --eval-examples N]

The overrides change the quick trial's fine-tune size (to size it: the smallest that is never degenerate here).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def cpu_line() -> str:
    from jobs.runtimes.devices import detect

    info = detect()
    flags = " ".join(f for f in info.get("cpu_flags", []) if f.startswith(("avx", "amx")))
    return f"{info.get('cpu', platform.processor())}, {info.get('cpu_count')} cores, {flags}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the full wizard, not the quick trial")
    parser.add_argument("--home", help="data directory (default: a new temporary one)")
    parser.add_argument("--train-examples", type=int, help="quick trial: fine-tune examples")
    parser.add_argument("--epochs", type=int, help="quick trial: fine-tune epochs")
    parser.add_argument("--eval-examples", type=int, help="quick trial: evaluation examples")
    parser.add_argument("--mixed-precision", choices=["auto", "bf16", "off"],
                        help="fine-tune autocast (off: fp32 training, as on a CPU without fast bf16)")
    parser.add_argument("--speedup", type=float, default=2.0, help="the goal's speed-up (default 2)")
    args = parser.parse_args()
    os.environ["WORKBENCH_HOME"] = args.home or tempfile.mkdtemp(prefix="wizard-trial-")
    os.environ.setdefault("WORKBENCH_MLFLOW", "off")
    os.environ["PYTHONPATH"] = str(REPO)
    from jobs import api

    print(f"CPU: {cpu_line()}")
    print(f"data directory: {os.environ['WORKBENCH_HOME']}")
    started = time.monotonic()
    api.add_model(api.ModelRequest("builtin:minilm-l6"))
    api.add_dataset(api.DatasetRequest("builtin:tweet-sentiment"))
    model, dataset = api.list_models()[-1], api.list_datasets()[-1]
    recipe = api.recommend_recipe(model.id, dataset.id, speedup=args.speedup, quick=not args.full)
    overrides = {k: v for k, v in (("max_train_examples", args.train_examples), ("epochs", args.epochs)) if v}
    if overrides or args.mixed_precision:
        def changed(step):
            params = {**step.params, **overrides} if step.kind in ("finetune", "distill") else dict(step.params)
            if step.kind == "finetune" and args.mixed_precision:
                params["mixed_precision"] = args.mixed_precision
            return params

        steps = [{"kind": s.kind, "params": changed(s)} for s in recipe.steps]
        recipe = api.edit_recipe(recipe, steps, {"max_examples": args.eval_examples} if args.eval_examples else None)
    elif args.eval_examples:
        recipe = api.edit_recipe(recipe, [{"kind": s.kind, "params": s.params} for s in recipe.steps],
                                 {"max_examples": args.eval_examples})
    print(f"recipe ({'full' if args.full else 'quick trial'}): "
          + " -> ".join(f"{s.kind} {s.params}" for s in recipe.steps) + f"; evaluation {recipe.evaluation}")
    launched = api.launch_recipe(recipe)
    subprocess.run([sys.executable, "-m", "workbench", "worker", "--burst"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = api.wizard_progress(launched.pipeline, launched.goal)
    print(f"wall time: {time.monotonic() - started:.0f} s; run {launched.pipeline}: {progress.message}")
    for line in progress.lines:
        job = api.get_job(line.job_id)
        took = f"{job.duration_s:.0f} s" if job.duration_s is not None else "-"
        print(f"  job {job.id} {job.kind:12s} {job.status.value:9s} {took:>6s}  {job.message[:150]}")
    for s in api.variant_tree():
        if s.accuracy is None:
            continue
        interval = f"{s.accuracy_low:.1%}-{s.accuracy_high:.1%}" if s.accuracy_low is not None else "?"
        print(f"  variant #{s.id} {s.label:28s} accuracy {s.accuracy:.1%} ({interval}) on {s.num_examples}, "
              f"majority {s.majority_accuracy:.1%}, macro-F1 {s.macro_f1:.3f}"
              + (f"  DEGENERATE: {s.degenerate_reason}" if s.degenerate else ""))
    outcome = progress.outcome
    if outcome is None:
        return
    if outcome.decision is not None:
        for p in outcome.decision.points:
            print(f"  cell #{p.variant_id}: p50 {p.p50_ms:.2f} ms, {p.samples} calls, stable {p.stable} "
                  f"(spread {p.spread or 0:.1%}), others took {p.other_cpu_fraction or 0:.0%} CPU, steal "
                  f"{p.steal_fraction or 0:.0%}; " + ("comparable" if p.variant_id in outcome.decision.ratios else
                                                     f"not comparable: {outcome.decision.not_comparable.get(p.variant_id)}"))
    from workbench.formatting import wizard_summary

    print(f"VERDICT: {wizard_summary(outcome)}")


if __name__ == "__main__":
    main()
