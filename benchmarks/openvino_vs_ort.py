"""OpenVINO against PyTorch and ONNX Runtime on this machine, in one run: PyTorch fp32, ONNX Runtime fp32 (fused) and
dynamic int8, OpenVINO fp32 and NNCF int8 (and OpenVINO bf16 where the CPU runs it natively), at batch 1 and 16,
seq 128, with same-run latency ratios and accuracy / agreement on real tweet-sentiment test texts.

    .venv/bin/python benchmarks/openvino_vs_ort.py [--train 1500] [--test 600] [--rounds 6] [--threads 0]

The model is the built-in MiniLM-L6 with a logistic-regression head fitted in seconds on its frozen pooled output
(as benchmarks/ort_reduce_range.py does), so accuracy means something without a fine-tune. Every variant is made
by the workbench's own code (export-onnx's fused export, the quantize job's ONNX Runtime and NNCF paths,
export-openvino's conversion) and timed by the benchmark job's own machinery: each variant in its own process
(jobs.bench.process), cells interleaved in a shuffled order every round, so all variants share the same minutes of
a shared machine and no runtime's spinning threads steal from another's. The machine's load is printed before and
during the timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.ort_reduce_range import _Ctx, cpu_report, export_fused, fit_head, load_report, tweets  # noqa: E402

SEQ = 128
BATCHES = (1, 16)
CALIBRATION = 300  # NNCF's default subset size
# one interleaved slot per variant and cell each round: enough calls for a median, short enough to rotate often
ROUND_RULE = {"warmup": 3, "window": 5, "windows": 2, "rel_spread": 0.5, "min_samples": 15, "max_samples": 200,
              "max_seconds": 3.0}


def versions() -> None:
    from importlib.metadata import version

    from jobs.runtimes.openvino_runtime import bf16_here, import_openvino

    import_openvino()
    print("versions: " + ", ".join(f"{d} {version(d)}" for d in ("torch", "onnxruntime", "openvino", "nncf", "transformers")))
    native, why = bf16_here()
    print(f"OpenVINO bf16 here: {'yes' if native else 'no'} ({why})")


def ort_int8(fp32: Path, work: Path) -> Path:
    from jobs.kinds.quantize import QuantizeParams, onnx_variant
    from jobs.runtimes.base import write_variant_meta

    out = work / "ort-int8"
    out.mkdir()
    facts = onnx_variant(QuantizeParams(method="ort-dynamic-int8"), None, fp32, out, _Ctx())
    write_variant_meta(out, {"max_length": SEQ, "quantization": "ort-dynamic-int8"})
    print(f"  ONNX Runtime dynamic int8: reduce_range {'on' if facts['reduce_range'] else 'off'} ({facts['reduce_range_why']})")
    return out


def openvino_fp32(source: Path, work: Path) -> Path:
    """The IR as export-openvino makes it from a PyTorch variant."""
    from transformers import AutoTokenizer

    from jobs.ml import openvino_ir
    from jobs.ml.artifacts import copy_support_files
    from jobs.runtimes.base import write_variant_meta
    from jobs.runtimes.torch_runtime import load_torch_model

    out = work / "openvino-fp32"
    out.mkdir()
    copy_support_files(source, out)
    write_variant_meta(out, {"max_length": SEQ, "inference_precision": "f32"})
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    sample = {k: v.astype("int64") for k, v in tokenizer(["a b", "c d e"], padding=True, return_tensors="np").items()}
    openvino_ir.save_ir(openvino_ir.from_torch(load_torch_model(source), sample), out)
    return out


def openvino_int8(fp32: Path, work: Path, texts: list[str]) -> Path:
    """NNCF int8 as quantize:method=nncf-int8 makes it (no accuracy control)."""
    from jobs.ml import openvino_ir
    from jobs.ml.artifacts import copy_support_files
    from jobs.runtimes.base import write_variant_meta
    from jobs.runtimes.openvino_runtime import OpenVinoPredictor

    out = work / "openvino-int8"
    out.mkdir()
    copy_support_files(fp32, out)
    started = time.perf_counter()
    model, facts = openvino_ir.nncf_int8(OpenVinoPredictor(fp32), texts, None)
    openvino_ir.save_ir(model, out)
    write_variant_meta(out, {"max_length": SEQ, "inference_precision": "f32", "quantization": "nncf-int8"})
    print(f"  NNCF int8: {facts['fake_quantize_ops']} quantization points, calibrated on {len(texts)} training "
          f"tweets in {time.perf_counter() - started:.0f} s")
    return out


def openvino_bf16(fp32: Path, work: Path) -> Path:
    """The same IR with the bf16 inference hint, as export-openvino:precision=bf16 makes it."""
    import shutil

    from jobs.runtimes.base import read_variant_meta, write_variant_meta

    out = Path(shutil.copytree(fp32, work / "openvino-bf16"))
    write_variant_meta(out, {**read_variant_meta(fp32), "inference_precision": "bf16"})
    return out


def accuracy(variants: dict[str, tuple[Path, str]], test, labels: list[str]) -> None:
    import numpy as np

    from jobs.runtimes import load_predictor

    texts, gold = [str(t) for t in test["text"]], np.array([labels.index(x) for x in test["label"]])
    logits = {}
    for name, (path, runtime) in variants.items():
        predictor = load_predictor(SimpleNamespace(artifact_dir=str(path), runtime=runtime), max_length=SEQ)
        logits[name] = predictor.predict_logits(texts, 32)
        predictor.close()
    ref = logits["pytorch fp32"]
    print(f"\naccuracy on {len(texts)} tweet-sentiment test texts (3 labels; chance ~0.33), agreement with PyTorch fp32:")
    print(f"  {'variant':<18}{'accuracy':>9}{'argmax agree':>14}{'max |dlogit|':>14}")
    for name, got in logits.items():
        print(f"  {name:<18}{(got.argmax(1) == gold).mean():>9.4f}{(got.argmax(1) == ref.argmax(1)).mean():>14.4f}"
              f"{np.abs(got - ref).max():>14.5f}")


def timing(variants: dict[str, tuple[Path, str]], texts: list[str], rounds: int, threads: int, work: Path) -> None:
    import psutil

    from jobs.bench.process import BenchProcess

    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    processes = {}
    try:
        for name, (path, runtime) in variants.items():
            processes[name] = BenchProcess(SimpleNamespace(id=name, artifact_dir=str(path), runtime=runtime), "cpu",
                                           threads, texts_file, lambda line: None)
        samples = {(n, b): [] for n in variants for b in BATCHES}
        round_p50 = {(n, b): [] for n in variants for b in BATCHES}
        loads = []
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
    busy = psutil.cpu_percent(None)
    one, five, _ = os.getloadavg()
    others = statistics.median(load["other_cpu_fraction"] for load in loads)
    print(f"\nlatency at seq {SEQ}, {threads or os.cpu_count()} threads per variant, each in its own process, "
          f"interleaved: {rounds} rounds in {wall:.0f} s; machine {busy:.0f}% busy, other processes took a median "
          f"{others:.0%} of the CPU while cells ran; loadavg {one:.2f} / {five:.2f}")
    if others > 0.2:
        print("  WARNING: other processes used much of the CPU during the timing: the ratios below are same-run "
              "ratios on a busy machine, not clean speeds; rerun on a quiet machine to confirm them")
    for batch in BATCHES:
        p50 = {n: statistics.median(samples[(n, batch)]) for n in variants}
        base, ort8 = p50["pytorch fp32"], p50["ort int8"]
        print(f"  batch {batch}:")
        for name in variants:
            # the median of per-round ratios pairs cells measured in the same minute
            paired = statistics.median(a / b for a, b in zip(round_p50[("pytorch fp32", batch)],
                                                               round_p50[(name, batch)], strict=True))
            print(f"    {name:<16} p50 {p50[name]:8.2f} ms  {batch / p50[name] * 1e3:8.1f} samples/s  "
                  f"vs PyTorch fp32 {base / p50[name]:5.2f}x (paired {paired:5.2f}x)  vs ORT int8 {ort8 / p50[name]:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=1500, help="training tweets for the head (and NNCF calibration)")
    parser.add_argument("--test", type=int, default=600, help="test tweets for accuracy and agreement")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds over every variant and batch size")
    parser.add_argument("--threads", type=int, default=0, help="threads per variant; 0 = all cores")
    args = parser.parse_args()
    started = time.perf_counter()
    cpu_report()
    versions()
    load_report("start")
    train, test = tweets(args.train, args.test)
    with tempfile.TemporaryDirectory(prefix="openvino-vs-ort-") as tmp:
        work = Path(tmp)
        source, labels = fit_head(train, work)
        from jobs.runtimes.base import write_variant_meta
        from jobs.runtimes.openvino_runtime import bf16_here

        write_variant_meta(source, {"max_length": SEQ})
        print("making the variants (the workbench's own export and quantize code):")
        ort_fp32 = export_fused(source, work)
        ov_fp32 = openvino_fp32(source, work)
        calibration = [str(t) for t in train["text"]][:CALIBRATION]
        variants = {"pytorch fp32": (source, "pytorch"), "ort fp32": (ort_fp32, "onnxruntime"),
                    "ort int8": (ort_int8(ort_fp32, work), "onnxruntime"), "openvino fp32": (ov_fp32, "openvino"),
                    "openvino int8": (openvino_int8(ov_fp32, work, calibration), "openvino")}
        if bf16_here()[0]:
            variants["openvino bf16"] = (openvino_bf16(ov_fp32, work), "openvino")
        accuracy(variants, test, labels)
        load_report("before timing")
        timing(variants, [str(t) for t in test["text"]], args.rounds, args.threads, work)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
