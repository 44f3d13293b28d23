"""ONNX Runtime dynamic int8 with `reduce_range` off and on (7-bit weights), on this machine: same-run p50 latency
ratios and accuracy / agreement against the fp32 ONNX graph on real tweet-sentiment test texts.

    .venv/bin/python benchmarks/ort_reduce_range.py [--train 1500] [--test 600] [--seconds 40]

ONNX Runtime recommends reduce_range on x86 CPUs without VNNI: there its u8s8 int8 kernels use VPMADDUBSW, whose
sums of two u8 x s8 products are 16-bit and saturate (2 x 255 x 127 > 32767); 7-bit weights keep them below.
With VNNI (VPDPBUSD) or AMX the sums are 32-bit, so on such a CPU this script measures only what 7-bit weights
cost in precision and speed, not the saturation they prevent.

The model is the built-in MiniLM-L6 with a classification head fitted in seconds (logistic regression on its
frozen pooled output over training tweets), so accuracy means something without a full fine-tune. The graph is
exported and fused as `export-onnx:fusion=true` does, and quantized by the `quantize` job's own code, with and
without per-channel scales. Timing is interleaved (every round runs every graph once per cell, in a shuffled
order) on tweets padded or cut to 128 tokens, so all graphs see the same minutes of a shared machine; the load
on the machine is printed before and during the timing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SEQ = 128
BATCHES = (1, 16)
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


class _Ctx:
    """What the job functions need from a JobContext here: progress and a log."""

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def log(self, message: str) -> None:
        print(f"    {message}")


def cpu_report() -> None:
    from jobs.kinds.quantize import resolve_reduce_range
    from jobs.runtimes.devices import detect

    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    flags: set[str] = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    info = detect()
    print(f"CPU (lscpu): {model}; {os.cpu_count()} logical CPUs")
    print("flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS))
    on, why = resolve_reduce_range("auto", info.get("cpu_flags", []))
    print(f"quantize reduce_range=auto here -> {'on' if on else 'off'} ({why})")


def load_report(label: str) -> None:
    import psutil

    one, five, fifteen = os.getloadavg()
    print(f"load [{label}]: loadavg {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs, "
          f"cpu {psutil.cpu_percent(interval=1.0):.0f}% over 1 s")


def tweets(train_n: int, test_n: int):
    from jobs.intake.builtin import builtin_dataset
    from jobs.intake.datasets import stratified_split, validate_frame
    from jobs.ml.data import stratified_sample

    frame, _, _ = validate_frame(builtin_dataset("tweet-sentiment").frame(), "text", "label")
    splits = stratified_split(frame, 42)  # the split `datasets add builtin:tweet-sentiment` makes
    return stratified_sample(splits["train"], train_n), stratified_sample(splits["test"], test_n)


def fit_head(train, work: Path) -> tuple[Path, list[str]]:
    """MiniLM-L6 with a logistic-regression head on its frozen pooled output, saved as a PyTorch variant folder."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jobs.intake.builtin import builtin_model

    labels = sorted(set(train["label"]))
    source = builtin_model("minilm-l6").path()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)},
        attn_implementation="eager", local_files_only=True).eval()
    texts = [str(t) for t in train["text"]]
    pooled = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            enc = tokenizer(texts[i : i + 64], padding=True, truncation=True, max_length=64, return_tensors="pt")
            pooled.append(model.bert(**enc).pooler_output.numpy())
    features = np.concatenate(pooled)
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(features, [labels.index(x) for x in train["label"]])
    print(f"head: logistic regression on {len(texts)} training tweets, train accuracy {clf.score(features, [labels.index(x) for x in train['label']]):.3f}")
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(clf.coef_).float())
        model.classifier.bias.copy_(torch.from_numpy(clf.intercept_).float())
    out = work / "pytorch"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out, labels


def export_fused(source: Path, work: Path) -> Path:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from jobs.kinds.export_onnx import ExportOnnxParams, export_graph, fuse
    from jobs.ml.artifacts import copy_support_files
    from jobs.runtimes.base import write_variant_meta
    from jobs.runtimes.ort_runtime import ONNX_FILE

    model = AutoModelForSequenceClassification.from_pretrained(source, attn_implementation="eager",
                                                               local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    encoded = {k: v.astype("int64") for k, v in tokenizer(["a b", "c d e"], padding=True, return_tensors="np").items()}
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoded]
    out = work / "onnx"
    out.mkdir()
    copy_support_files(source, out)
    write_variant_meta(out, {"max_length": SEQ})
    export_graph(model, encoded, names, out / ONNX_FILE, ExportOnnxParams(fusion=True))
    fuse(out / ONNX_FILE, AutoConfig.from_pretrained(source, local_files_only=True), False, _Ctx())
    return out


def quantize(source: Path, work: Path, name: str, **params) -> Path:
    from jobs.kinds.quantize import QuantizeParams, onnx_variant
    from jobs.runtimes.base import write_variant_meta

    out = work / name
    out.mkdir()
    print(f"  {name}:")
    facts = onnx_variant(QuantizeParams(method="ort-dynamic-int8", **params), None, source, out, _Ctx())
    write_variant_meta(out, {"max_length": SEQ, "quantization": "ort-dynamic-int8"})
    assert facts["reduce_range"] == (params["reduce_range"] == "on")
    return out


def accuracy(graphs: dict[str, Path], test, labels: list[str]) -> None:
    import numpy as np

    from jobs.runtimes.ort_runtime import OrtPredictor

    texts, gold = [str(t) for t in test["text"]], np.array([labels.index(x) for x in test["label"]])
    logits = {}
    for name, path in graphs.items():
        predictor = OrtPredictor(path, max_length=SEQ)
        logits[name] = np.concatenate([predictor.predict_encoded(predictor.encode(texts[i : i + 32]))
                                       for i in range(0, len(texts), 32)])
    ref = logits["fp32"]
    print(f"\naccuracy on {len(texts)} tweet-sentiment test texts (3 labels; chance ~0.33) and agreement with fp32 ONNX:")
    print(f"  {'graph':<24}{'accuracy':>9}{'argmax agree':>14}{'mean |dlogit|':>15}{'max |dlogit|':>14}")
    for name, got in logits.items():
        diff = np.abs(got - ref)
        print(f"  {name:<24}{(got.argmax(1) == gold).mean():>9.4f}{(got.argmax(1) == ref.argmax(1)).mean():>14.4f}"
              f"{diff.mean():>15.5f}{diff.max():>14.5f}")


def timing(graphs: dict[str, Path], texts: list[str], seconds: float) -> None:
    import numpy as np
    import onnxruntime as ort
    import psutil
    from transformers import AutoTokenizer

    from jobs.runtimes.ort_runtime import ONNX_FILE

    tokenizer = AutoTokenizer.from_pretrained(graphs["fp32"], local_files_only=True)
    sessions = {n: ort.InferenceSession(str(p / ONNX_FILE), providers=["CPUExecutionProvider"]) for n, p in graphs.items()}
    wanted = {i.name for i in next(iter(sessions.values())).get_inputs()}
    inputs = {}
    for batch in BATCHES:
        enc = tokenizer(texts[:batch], padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
        inputs[batch] = {k: v.astype("int64") for k, v in enc.items() if k in wanted}
    for session in sessions.values():  # warm-up
        for batch in BATCHES:
            for _ in range(3):
                session.run(None, inputs[batch])
    times = {(n, b): [] for n in sessions for b in BATCHES}
    rng = random.Random(0)
    me = psutil.Process()
    psutil.cpu_percent(None)
    own_before, wall_before = sum(me.cpu_times()[:2]), time.perf_counter()
    rounds, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline or rounds < 10:
        for batch in BATCHES:
            order = list(sessions)
            rng.shuffle(order)
            for name in order:
                started = time.perf_counter()
                sessions[name].run(None, inputs[batch])
                times[(name, batch)].append((time.perf_counter() - started) * 1e3)
        rounds += 1
    wall = time.perf_counter() - wall_before
    system = psutil.cpu_percent(None)
    own = (sum(me.cpu_times()[:2]) - own_before) / wall / (os.cpu_count() or 1) * 100
    one, five, _ = os.getloadavg()
    print(f"\nlatency, interleaved: {rounds} rounds in {wall:.0f} s, seq {SEQ}, ORT default threads; during it the "
          f"machine was {system:.0f}% busy, this process {own:.0f}% (others ~{max(0.0, system - own):.0f}%), "
          f"loadavg {one:.2f} / {five:.2f}")
    if system - own > 20:
        print("  WARNING: other processes used much of the CPU during the timing: the latency ratios below are not "
              "reliable; rerun on a quiet machine (accuracy and agreement above do not depend on load)")
    for batch in BATCHES:
        p50 = {n: statistics.median(times[(n, batch)]) for n in sessions}
        print(f"  batch {batch}: " + ", ".join(f"{n} p50 {v:.2f} ms" for n, v in p50.items()))
        for pc in ("", "per-channel "):
            off, on = f"int8 {pc}rr=off".strip(), f"int8 {pc}rr=on".strip()
            paired = np.median(np.array(times[(on, batch)]) / np.array(times[(off, batch)]))
            print(f"    {pc or 'per-tensor '}reduce_range on/off p50 ratio {p50[on] / p50[off]:.3f} "
                  f"(median of per-round ratios {paired:.3f}); speedup vs fp32: off {p50['fp32'] / p50[off]:.2f}x, "
                  f"on {p50['fp32'] / p50[on]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=1500, help="training tweets for the head")
    parser.add_argument("--test", type=int, default=600, help="test tweets for accuracy and agreement")
    parser.add_argument("--seconds", type=float, default=40.0, help="interleaved timing budget")
    args = parser.parse_args()
    started = time.perf_counter()
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}")
    cpu_report()
    load_report("start")
    train, test = tweets(args.train, args.test)
    with tempfile.TemporaryDirectory(prefix="ort-reduce-range-") as tmp:
        work = Path(tmp)
        source, labels = fit_head(train, work)
        fp32 = export_fused(source, work)
        print("quantizing (the quantize job's onnx_variant):")
        graphs = {"fp32": fp32}
        for per_channel in (False, True):
            for setting in ("off", "on"):
                name = f"int8 {'per-channel ' if per_channel else ''}rr={setting}"
                graphs[name] = quantize(fp32, work, name.replace(" ", "_"), reduce_range=setting, per_channel=per_channel)
        accuracy(graphs, test, labels)
        load_report("before timing")
        timing(graphs, [str(t) for t in test["text"]], args.seconds)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
