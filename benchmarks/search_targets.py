"""Issue 16's speed targets on this machine: the search, unaided, against PyTorch fp32 and the Optimum quickstart.

    .venv/bin/python benchmarks/search_targets.py [--budget-min 60] [--quick] [--max-drop 0.5] [--home DIR]
    .venv/bin/python benchmarks/search_targets.py --only-peaks      # the machine's matmul peaks and the FLOPs only

On the built-in MiniLM-L6 fine-tuned on tweet-sentiment first (outside the budget; the search starts from that
variant), at seq 128: the `search` job runs with the goal "at most --max-drop points lost, as fast as possible at
batch 1" and `--budget-min` minutes; then, in the same run, the winner, PyTorch fp32 (the fine-tuned baseline) and
ONNX Runtime dynamic int8 of the full model (what the Optimum quickstart gives: a plain export, then dynamic int8 with per-tensor
scales) are timed interleaved, each in its own process (the benchmark job's own machinery), at batch 1 and 16.
Printed: the CPU (model and flags) and its load, the winning recipe and why (its params), the speedups with the
targets (5x at batch 1 and 3.5x at batch 16 over PyTorch fp32; 1.5x over ORT dynamic int8) and pass / fail each, and
how far the winner's batch-16 throughput is from this machine's matmul peak for its precision, measured here too
(torch fp32 and bf16 GEMMs, int8 through torch._int_mm and ONNX Runtime MatMulInteger; the best of a measurement
at the start and one just before the timing), from the winner's FLOPs per text at seq 128 (counted from its config).
On a shared machine every figure is a same-run figure: the load is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.ort_reduce_range import _Ctx, cpu_report, load_report  # noqa: E402

SEQ = 128
BATCHES = (1, 16)
TARGETS = {"b1 vs PyTorch fp32": 5.0, "b16 vs PyTorch fp32": 3.5, "b1 vs ORT dynamic int8": 1.5}
# GEMM shapes for the peak: the model's own biggest one at batch 16 x 128 (tokens x hidden -> FFN) and a square one
PEAK_SHAPES = ((BATCHES[-1] * SEQ, 384, 1536), (2048, 2048, 2048))
# one interleaved slot per variant and cell each round (as benchmarks/openvino_vs_ort.py)
ROUND_RULE = {"warmup": 3, "window": 5, "windows": 2, "rel_spread": 0.5, "min_samples": 15, "max_samples": 200,
              "max_seconds": 3.0}


# ---- the machine's matmul peak ------------------------------------------------------------------------------------


def _timed(call, seconds: float) -> float:
    """Best-of-windows seconds per call: the peak is what the machine can do, so the fastest window counts."""
    for _ in range(3):
        call()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(5):
            call()
        best = min(best, (time.perf_counter() - started) / 5)
    return best


def torch_gemm_gflops(dtype: str, m: int, k: int, n: int, seconds: float) -> float:
    import torch

    if dtype == "int8":  # int8 x int8 -> int32 through oneDNN (VNNI / AMX where the CPU has them)
        a = torch.randint(-128, 127, (m, k), dtype=torch.int8)
        b = torch.randint(-128, 127, (k, n), dtype=torch.int8)
        call = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        a, b = torch.randn(m, k).to(kind), torch.randn(k, n).to(kind)
        call = lambda: torch.mm(a, b)  # noqa: E731
    with torch.inference_mode():
        return 2 * m * k * n / _timed(call, seconds) / 1e9


def ort_int8_gemm_gflops(m: int, k: int, n: int, seconds: float) -> float:
    """uint8 activations x int8 weights -> int32 with ONNX Runtime's MatMulInteger: the op dynamic int8 runs."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-128, 127, (k, n), dtype=np.int8), "w")
    zero = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w", "a_zero"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])], [weight, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"a": rng.integers(0, 255, (m, k), dtype=np.uint8)}
    onnx.checker.check_model(model)
    return 2 * m * k * n / _timed(lambda: session.run(None, feed), seconds) / 1e9


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def best_peaks(*measured: dict[str, tuple[float, str]]) -> dict[str, tuple[float, str]]:
    """The best of several measurements per precision: a peak is what the machine can do, and on a shared machine
    any one measurement may have run while others took the cores."""
    return {precision: max(m[precision] for m in measured if precision in m) for precision in measured[0]}


def matmul_peaks(seconds: float = 1.5) -> dict[str, tuple[float, str]]:
    """GFLOP/s (int8: GOP/s) per precision, the best over PEAK_SHAPES and the paths measured, and which path."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    paths: dict[str, list[tuple[float, str]]] = {"fp32": [], "int8": []}
    has_bf16 = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if has_bf16:
        paths["bf16"] = []
    for m, k, n in PEAK_SHAPES:
        shape = f"{m}x{k}x{n}"
        paths["fp32"].append((torch_gemm_gflops("fp32", m, k, n, seconds), f"torch.mm fp32 {shape}"))
        if has_bf16:
            paths["bf16"].append((torch_gemm_gflops("bf16", m, k, n, seconds), f"torch.mm bf16 {shape}"))
        paths["int8"].append((torch_gemm_gflops("int8", m, k, n, seconds), f"torch._int_mm {shape}"))
        paths["int8"].append((ort_int8_gemm_gflops(m, k, n, seconds), f"ORT MatMulInteger u8s8 {shape}"))
    for precision, measured in paths.items():
        print(f"  {precision}: " + ", ".join(f"{value:.0f} G/s ({path})" for value, path in measured))
    if not has_bf16:
        print("  bf16: no native bf16 (no avx512_bf16 / amx_bf16): not measured")
    return {precision: max(measured) for precision, measured in paths.items()}


# ---- FLOPs of a model ----------------------------------------------------------------------------------------------


def flops_per_text(config: dict[str, Any], seq: int = SEQ, kept_heads: dict[str, list[int]] | None = None) -> float:
    """Multiply-adds x 2 of one text at `seq` tokens through a BERT-type encoder and its head, from its config.

    Per layer: Q, K and V projections and the attention output (2·s·h·a each, a = kept heads x head size), the
    scores and the weighted sum (2·s²·a each), the two feed-forward matmuls (2·s·h·i each); then the pooler
    (2·h², one token) and the classifier (2·h·labels). Embedding lookups, LayerNorm, softmax and GELU are left out:
    they are a few percent and no GEMM peak applies to them.
    """
    layers, hidden = int(config["num_hidden_layers"]), int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_size = hidden // heads
    inner = int(config["intermediate_size"])
    labels = len(config.get("id2label") or {}) or 2
    total = 0.0
    for layer in range(layers):
        kept = len((kept_heads or {}).get(str(layer), range(heads)))
        attn = kept * head_size
        total += 4 * 2 * seq * hidden * attn + 2 * 2 * seq * seq * attn + 2 * 2 * seq * hidden * inner
    return total + 2 * hidden * hidden + 2 * hidden * labels


def variant_flops(artifact_dir: str, seq: int = SEQ) -> float:
    from jobs.runtimes.base import read_variant_meta

    config = json.loads((Path(artifact_dir) / "config.json").read_text())
    return flops_per_text(config, seq, read_variant_meta(Path(artifact_dir)).get("kept_heads"))


def precision_of(variant: Any) -> str:
    """Which GEMM peak applies to a variant: int8 for every int8 method, bf16 / fp16, else fp32."""
    precision = (variant.precision or "fp32").lower()
    return "int8" if "int8" in precision else "bf16" if "bf16" in precision else precision


# ---- the Optimum quickstart's variant ------------------------------------------------------------------------------


def optimum_quickstart_int8(source: Path, work: Path) -> Path:
    """ONNX Runtime dynamic int8 of the full model as Optimum's quickstart makes it: `ORTModelFor...(export=True)`
    (a plain export, no fusion), then `ORTQuantizer` with `AutoQuantizationConfig.avx512_vnni(is_static=False,
    per_channel=False)`: dynamic int8, per-tensor. Made with the workbench's own export and quantize code."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jobs.kinds.export_onnx import ExportOnnxParams, export_graph
    from jobs.kinds.quantize import QuantizeParams, onnx_variant
    from jobs.ml.artifacts import copy_support_files
    from jobs.runtimes.base import write_variant_meta
    from jobs.runtimes.ort_runtime import ONNX_FILE

    model = AutoModelForSequenceClassification.from_pretrained(source, attn_implementation="eager",
                                                               local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    encoded = {k: v.astype("int64") for k, v in tokenizer(["a b", "c d e"], padding=True, return_tensors="np").items()}
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoded]
    plain = work / "onnx-plain"
    plain.mkdir()
    copy_support_files(source, plain)
    write_variant_meta(plain, {"max_length": SEQ})
    export_graph(model, encoded, names, plain / ONNX_FILE, ExportOnnxParams())
    out = work / "ort-dynamic-int8"
    out.mkdir()
    facts = onnx_variant(QuantizeParams(method="ort-dynamic-int8"), None, plain, out, _Ctx())
    write_variant_meta(out, {"max_length": SEQ, "quantization": "ort-dynamic-int8"})
    print(f"  ORT dynamic int8 (Optimum quickstart): per-tensor, reduce_range {'on' if facts['reduce_range'] else 'off'}")
    return out


# ---- same-run timing ---------------------------------------------------------------------------------------------


def timing(variants: dict[str, tuple[str, str]], texts: list[str], rounds: int, work: Path) -> dict[str, Any]:
    """p50 per variant and batch size, and per-round paired ratios against every other variant, interleaved."""
    import psutil

    from jobs.bench.process import BenchProcess

    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    processes = {}
    samples = {(n, b): [] for n in variants for b in BATCHES}
    round_p50: dict[tuple[str, int], list[float]] = {(n, b): [] for n in variants for b in BATCHES}
    loads = []
    try:
        for name, (path, runtime) in variants.items():
            processes[name] = BenchProcess(SimpleNamespace(id=name, artifact_dir=path, runtime=runtime), "cpu", 0,
                                           texts_file, lambda line: None)
        rng = random.Random(0)
        psutil.cpu_percent(None)
        started = time.perf_counter()
        for _ in range(rounds):
            for batch in BATCHES:
                order = list(variants)
                rng.shuffle(order)
                for name in order:
                    reply = processes[name].run(batch, SEQ, ROUND_RULE)
                    if "error" in reply:
                        raise RuntimeError(f"{name} batch {batch}: {reply['error']}")
                    samples[(name, batch)] += reply["samples_ms"]
                    round_p50[(name, batch)].append(statistics.median(reply["samples_ms"]))
                    loads.append(reply["load"])
        wall = time.perf_counter() - started
    finally:
        for proc in processes.values():
            proc.close()
    others = statistics.median(load["other_cpu_fraction"] for load in loads)
    one, five, _ = os.getloadavg()
    print(f"\ntiming at seq {SEQ}: {rounds} interleaved rounds in {wall:.0f} s, each variant in its own process; "
          f"machine {psutil.cpu_percent(None):.0f}% busy, other processes took a median {others:.0%} of the CPU "
          f"while cells ran; loadavg {one:.2f} / {five:.2f}")
    if others > 0.2:
        print("  WARNING: other processes used much of the CPU during the timing: same-run ratios on a busy machine")
    p50 = {key: statistics.median(values) for key, values in samples.items()}

    def paired(a: str, b: str, batch: int) -> float:  # median of per-round ratios: cells of the same minute
        return statistics.median(x / y for x, y in zip(round_p50[(a, batch)], round_p50[(b, batch)], strict=True))

    return {"p50": p50, "paired": paired, "others": others}


# ---- the search --------------------------------------------------------------------------------------------------


def finetuned(args: argparse.Namespace) -> tuple[Any, Any]:
    """The built-ins, and MiniLM fine-tuned on tweet-sentiment (full; the kind's quick params with --quick) before
    the search, so its budget is the search's alone; a data directory given again reuses its fine-tune."""
    from jobs import api
    from jobs.runner.registry import get_kind

    if not api.list_models():
        api.add_model(api.ModelRequest("builtin:minilm-l6"))
        api.add_dataset(api.DatasetRequest("builtin:tweet-sentiment"))
    model, dataset = api.list_models()[-1], api.list_datasets()[-1]
    done = [j for j in api.list_jobs(status="succeeded", limit=100_000)
            if j.kind == "finetune" and j.model_id == model.id]
    if done:  # the first: later fine-tunes of this model are a search's recovery steps
        first = min(done, key=lambda j: j.id)
        print(f"fine-tuned already: job {first.id} ({first.duration_s or 0:.0f} s)")
        return model, dataset
    params = dict(get_kind("finetune").quick_params) if args.quick else {}
    if args.train_examples:
        params["max_train_examples"] = args.train_examples
    started = time.perf_counter()
    tune = api.submit("finetune", params, model=model.id, dataset=dataset.id)
    subprocess.run([sys.executable, "-m", "workbench", "worker", "--burst"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tune = api.get_job(tune.id)
    if tune.status.value != "succeeded":
        raise SystemExit(f"the fine-tune (job {tune.id}) {tune.status.value}: {tune.message}")
    print(f"fine-tuned MiniLM on tweet-sentiment ({params or 'full'}) in {time.perf_counter() - started:.0f} s")
    return model, dataset


def run_search(args: argparse.Namespace) -> Any:
    """Submit the search on the fine-tuned model, run a worker until the queue is empty, printing its progress."""
    from jobs import api

    model, dataset = finetuned(args)
    job = api.submit_search(model.id, dataset.id, max_drop_points=args.max_drop, batch_size=1, seq_len=SEQ,
                            traffic="grid", device="cpu", budget_s=args.budget_min * 60, quick=args.quick)
    print(f"search job {job.id}: at most {args.max_drop:g} points lost, as fast as possible at batch 1 x {SEQ}, "
          f"budget {args.budget_min:g} min{' (quick)' if args.quick else ''}")
    worker = subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--burst"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = 0
    try:
        while worker.poll() is None:
            time.sleep(10)
            status = api.search_status(job.id)
            for trial in sorted(status.trials, key=lambda t: t.number)[seen:]:
                if trial.state == "running":
                    break
                print(f"  [{status.elapsed_s / 60:5.1f} min] {trial_line(trial)}")
                seen += 1
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(60)
    status = api.search_status(job.id)
    for trial in sorted(status.trials, key=lambda t: t.number)[seen:]:
        print(f"  {trial_line(trial)}")
    print(f"search {status.state} after {status.elapsed_s / 60:.1f} of {status.budget_s / 60:g} min: "
          f"{status.stop_reason or 'no stop reason'}; {len(status.trials)} trials, front {status.front}")
    return status


def trial_line(trial: Any) -> str:
    from workbench.search_words import trial_recipe

    figures = []
    if trial.accuracy is not None:
        figures.append(f"accuracy {trial.accuracy:.2%}")
    if trial.drop_points is not None:
        figures.append(f"drop {trial.drop_points:+.2f}")
    if trial.p50_ms is not None:
        figures.append(f"p50 {trial.p50_ms:.2f} ms")
    if trial.speedup is not None:
        figures.append(f"{trial.speedup:.2f}x")
    why = f" ({trial.reason})" if trial.reason else ""
    problems = f" problems: {'; '.join(trial.problems)}" if trial.problems else ""
    return f"trial {trial.number} {trial.state}{why}: {trial_recipe(trial)}; {', '.join(figures)}{problems}"


# ---- the report --------------------------------------------------------------------------------------------------


def why_no_best(status: Any) -> str:
    if status.baseline is not None and status.baseline.problems:
        return "the search's baseline cell is unsound (" + "; ".join(status.baseline.problems) + ")"
    return "no sound trial within the goal"


def provisional(status: Any, max_drop: float) -> Any:
    """The fastest complete, non-degenerate trial within the drop, cell problems ignored (--provisional only)."""
    within = [t for t in status.trials if t.state == "complete" and t.variant_id and t.p50_ms is not None
              and t.drop_points is not None and t.drop_points <= max_drop
              and not any(p.startswith("degenerate") for p in t.problems)]
    return min(within, key=lambda t: t.p50_ms, default=None)


def report(status: Any, peaks: dict[str, tuple[float, str]], args: argparse.Namespace) -> None:
    """Time the baselines (and the winner, when there is one) in the same run; print the targets and the peaks."""
    from jobs import api
    from workbench.search_words import trial_recipe

    best, baseline = status.best, status.baseline
    if baseline is None or not baseline.variant_id:
        print("\nRESULT: the search measured no baseline: nothing to compare, every target FAILS")
        return
    base = api.get_variant(baseline.variant_id)
    chosen_by_search = best is not None
    if best is None and args.provisional:
        best = provisional(status, args.max_drop)
        if best is not None:
            print(f"\nthe search picked no winner ({why_no_best(status)}); --provisional: timing its fastest "
                  f"non-degenerate trial within {args.max_drop:g} points instead, trial {best.number} "
                  "(NOT a result of the search)")
    winner = api.get_variant(best.variant_id) if best is not None and best.variant_id else None
    if winner is None:
        print(f"\nno winner: {why_no_best(status)}; the baselines are measured anyway")
    else:
        print(f"\nwinner: trial {best.number}, variant #{winner.id} ({winner.runtime} {winner.precision}): "
              f"{trial_recipe(best)}")
        print(f"  its params: {json.dumps(best.params)}")
        chain = " -> ".join(f"{step['kind']} {step.get('params') or {}}" for step in best.steps)
        print(f"  its steps: {chain}")
        drop = best.drop_points if best.drop_points is not None else float("nan")
        print(f"  why: in the search it was {best.speedup or 0:.2f}x the baseline at batch 1 x {SEQ} with {drop:+.2f} "
              f"points (limit {args.max_drop:g}), the fastest "
              + ("sound trial within the goal" if chosen_by_search else "complete trial within the drop"))
        again = status.confirmation
        if again is not None and again.state == "complete":
            print(f"  the run-off (one job, interleaved; run-off job {again.runs}): " + ", ".join(
                f"trial {e.trial} {e.speedup:.2f}x" if e.speedup else f"trial {e.trial} not measured"
                for e in again.entrants) + (f"; {again.why}" if again.why else "; the search's pick stood"))
            if again.noise:  # the search does not stand behind these ratios; neither does this report
                print(f"  NOT SOUND, figures shown only: {'; '.join(again.noise)}")
    print("matmul peaks again, just before the timing (the best of both runs counts):")
    peaks = best_peaks(peaks, matmul_peaks())
    with tempfile.TemporaryDirectory(prefix="search-targets-") as tmp:
        work = Path(tmp)
        print("making ONNX Runtime dynamic int8 of the full model (Optimum quickstart):")
        ort8 = optimum_quickstart_int8(Path(base.artifact_dir), work)
        variants = {"pytorch fp32": (base.artifact_dir, "pytorch"), "ort dynamic int8": (str(ort8), "onnxruntime")}
        if winner is not None:
            variants["winner"] = (winner.artifact_dir, winner.runtime)
        from benchmarks.ort_reduce_range import tweets

        _, test = tweets(10, 200)
        load_report("before timing")
        timed = timing(variants, [str(t) for t in test["text"]], args.rounds, work)
    p50, paired = timed["p50"], timed["paired"]
    for batch in BATCHES:
        print(f"  batch {batch}: " + "; ".join(f"{name} p50 {p50[(name, batch)]:.2f} ms "
                                               f"({batch / p50[(name, batch)] * 1e3:.1f} texts/s)" for name in variants))
    ort_b1, ort_b16 = (paired("pytorch fp32", "ort dynamic int8", batch) for batch in BATCHES)
    print(f"  ORT dynamic int8 (Optimum quickstart) vs PyTorch fp32: {ort_b1:.2f}x at b1, {ort_b16:.2f}x at b16")
    print("\ntargets (same-run paired p50 ratios):")
    if winner is None:
        for name, target in TARGETS.items():
            print(f"  {name:<24}   -   (target {target:g}x): FAIL (no winner)")
    else:
        got = {"b1 vs PyTorch fp32": paired("pytorch fp32", "winner", 1),
               "b16 vs PyTorch fp32": paired("pytorch fp32", "winner", 16),
               "b1 vs ORT dynamic int8": paired("ort dynamic int8", "winner", 1)}
        for name, target in TARGETS.items():
            print(f"  {name:<24} {got[name]:5.2f}x (target {target:g}x): {'PASS' if got[name] >= target else 'FAIL'}")
        print(f"  (b16 vs ORT dynamic int8: {paired('ort dynamic int8', 'winner', 16):.2f}x)")
    print(f"\nbatch-16 throughput vs this machine's matmul peak for the precision, at seq {SEQ}:")
    for name, variant in (("pytorch fp32", base), ("winner", winner)):
        if variant is None:
            continue
        flops, precision = variant_flops(variant.artifact_dir), precision_of(variant)
        achieved = 16 / p50[(name, 16)] * 1e3 * flops / 1e9
        peak, path = peaks.get(precision, peaks["fp32"])
        print(f"  {name}: {flops / 1e9:.2f} GFLOP per text, {achieved:.0f} G/s achieved against a {precision} peak of "
              f"{peak:.0f} G/s ({path}): {achieved / peak:.0%} of peak, {peak / achieved:.1f}x headroom")
    if timed["others"] > 0.2:
        print("NOTE: the machine was busy with other processes: rerun on a quiet machine before trusting the ratios")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=60, help="the search's time budget in minutes")
    parser.add_argument("--quick", action="store_true", help="the search's quick mode (a smoke run: rough figures)")
    parser.add_argument("--train-examples", type=int, default=0,
                        help="fine-tune the baseline on this many training texts (0: the whole train split); outside "
                             "the budget, to keep the whole run shorter")
    parser.add_argument("--max-drop", type=float, default=0.5, help="accuracy points the winner may lose")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds over every variant and batch")
    parser.add_argument("--home", help="data directory (default: a new temporary one)")
    parser.add_argument("--only-peaks", action="store_true", help="measure the matmul peaks and count FLOPs only")
    parser.add_argument("--report-only", type=int, metavar="JOB",
                        help="no fine-tune or search: time search job JOB's winner and the baselines (needs --home)")
    parser.add_argument("--provisional", action="store_true",
                        help="when the search picked no winner, time its fastest non-degenerate trial within the drop "
                             "(said so: not a result of the search)")
    args = parser.parse_args()
    started = time.perf_counter()
    cpu_report()
    load_report("start")
    print("matmul peaks (best window, all cores):")
    peaks = matmul_peaks()
    from jobs.intake.builtin import builtin_model

    minilm = json.loads((builtin_model("minilm-l6").path() / "config.json").read_text())
    print(f"MiniLM-L6 at seq {SEQ}: {flops_per_text(minilm) / 1e9:.2f} GFLOP per text; half depth "
          f"{flops_per_text({**minilm, 'num_hidden_layers': minilm['num_hidden_layers'] // 2}) / 1e9:.2f}")
    if args.only_peaks:
        return
    os.environ["WORKBENCH_HOME"] = args.home or tempfile.mkdtemp(prefix="search-targets-")
    os.environ.setdefault("WORKBENCH_MLFLOW", "off")
    os.environ["PYTHONPATH"] = str(REPO)
    print(f"data directory: {os.environ['WORKBENCH_HOME']}")
    if args.report_only:
        from jobs import api

        status = api.search_status(args.report_only)
    else:
        status = run_search(args)
        load_report("after the search")
    report(status, peaks, args)
    print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
