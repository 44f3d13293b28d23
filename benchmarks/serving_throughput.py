"""The model server (`python -m jobs.serving.server`) against its ceiling, its unbatched self and a peer
server, all in one run on one machine, so only the ratios are compared (loopback only; every phase bounded in
requests and in seconds).

    .venv/bin/python benchmarks/serving_throughput.py [--home DIR --variant ID [--variant ID2]]
        [--concurrency 32] [--max-batch 16] [--max-wait-ms 5] [--requests 1500] [--seconds 20] [--calls 300]

For each variant:
  1. throughput at --concurrency with dynamic batching, and the same server with --max-batch 1 (target: 3x);
  2. the offline batched throughput of the same Predictor at the same batch size in this process, doing what
     the server does per batch (tokenize, pad to the longest, forward, softmax): the ceiling (target: 70 %);
  3. p50 at concurrency 1 over HTTP against the direct Predictor call, alternating call by call (target: the
     HTTP path adds at most 2 ms);
  4. the same load against LitServe with its own batching (same batch size and wait), same Predictor.

Without --variant it builds the issue's variants with the product's own jobs: the built-in MiniLM fine-tuned
briefly on the built-in tweet sentiment data (its accuracy is not the point here), exported to ONNX (fp32) and
quantized (ONNX Runtime dynamic int8). Texts are the dataset's test split.

The load generator runs on the same machine as the server: on a small machine it takes cores the server could
use, for every server alike.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FALLBACK_TEXTS = [
    "the flight was delayed again but the crew were lovely",
    "worst customer service I have ever had, never again",
    "it was fine, nothing special",
    "absolutely loved the new update, great work",
    "the package arrived on time",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the variants and their texts -----------------------------------------------------------------------


def make_variants() -> list[int]:
    """MiniLM fine-tuned briefly, then ONNX fp32, then ONNX dynamic int8; returns [int8, fp32] variant ids."""
    from jobs import api
    from jobs.runner.submit import Step

    api.add_model(api.ModelRequest("builtin:minilm-l6"))
    api.add_dataset(api.DatasetRequest("builtin:tweet-sentiment"))
    jobs = api.submit_pipeline(
        [Step("finetune", {"epochs": 1, "max_train_examples": 300, "max_val_examples": 100}),
         Step("export-onnx", {"parity_examples": 16}), Step("quantize", {"method": "ort-dynamic-int8"})],
        model="minilm-l6", dataset="tweet-sentiment", evaluation={"max_examples": 64})
    subprocess.run([sys.executable, "-m", "workbench", "worker", "--burst"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    produced = [api.get_job(job.id).produced_variant_id for job in jobs]
    if not all(produced):
        failed = next(job for job, variant in zip(jobs, produced, strict=True) if not variant)
        raise SystemExit(f"building the variants failed at job {failed.id}: {api.job_log(failed.id)[-2000:]}")
    return [produced[2], produced[1]]


def split_texts(variant, limit: int) -> tuple[list[str], str]:
    """Texts of the variant's dataset's test split (a fixed sample), or fixed sentences if it has none."""
    from jobs.ml.data import split_examples
    from storage import catalog

    if variant.dataset_id is None:
        return FALLBACK_TEXTS, "fixed sentences (the variant has no dataset)"
    dataset = catalog.get_dataset(variant.dataset_id)
    texts = [t.strip() for t in split_examples(dataset, "test", limit).texts if t.strip()]
    return texts, f"{len(texts)} texts of {dataset.name}'s test split"


# ---- load generators ------------------------------------------------------------------------------------


@dataclass
class Load:
    texts: int
    seconds: float
    latencies_ms: list[float]
    failed: int

    @property
    def throughput(self) -> float:
        return self.texts / self.seconds

    def percentile(self, q: int) -> float:
        if len(self.latencies_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies_ms, n=100)[q - 1]


def closed_loop(url: str, texts: list[str], concurrency: int, requests: int, seconds: float) -> Load:
    """`concurrency` clients, each sending one text and waiting for its answer before the next, until
    `requests` answers or `seconds` have passed (keep-alive connections, as a real client pool)."""
    import aiohttp

    async def run() -> Load:
        latencies: list[float] = []
        failed = 0
        sent = 0
        deadline = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def client() -> None:
                nonlocal sent, failed
                while sent < requests and time.perf_counter() < deadline:
                    text = texts[sent % len(texts)]
                    sent += 1
                    started = time.perf_counter()
                    async with session.post(url, json={"text": text}) as reply:
                        await reply.read()
                        if reply.status != 200:
                            failed += 1
                            continue
                    latencies.append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        return Load(len(latencies), elapsed, latencies, failed)

    return asyncio.run(run())


def warm(url: str, texts: list[str], concurrency: int) -> None:
    closed_loop(url, texts, concurrency, requests=4 * concurrency, seconds=10)


class KeepAlive:
    """One keep-alive HTTP/1.1 connection: the cheapest client, so concurrency 1 measures the server."""

    def __init__(self, port: int, path: str):
        self.connection = http.client.HTTPConnection("127.0.0.1", port)
        self.path = path

    def post(self, text: str) -> dict:
        body = json.dumps({"text": text})
        try:
            self.connection.request("POST", self.path, body, {"Content-Type": "application/json"})
            reply = self.connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # servers close a connection idle for a few seconds (uvicorn: 5 s); open it again, once
            self.connection.close()
            self.connection.request("POST", self.path, body, {"Content-Type": "application/json"})
            reply = self.connection.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{self.path} answered {reply.status}: {body[:200]!r}")
        return json.loads(body)


# ---- servers --------------------------------------------------------------------------------------------


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the server at {url} was not ready after {timeout:g} s: {log.read_text()[-3000:]}")


def start_workbench_server(variant_id: int, port: int, max_batch: int, max_wait_ms: float,
                           threads: int | None, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "jobs.serving.server", "--variant-id", str(variant_id), "--port", str(port),
            "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-queue", "4096"]
    args += ["--threads", str(threads)] if threads else []
    from jobs.serving import API_KEYS_ENV

    env = {k: v for k, v in os.environ.items() if k != API_KEYS_ENV}
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, stdout=out,
                                stderr=subprocess.STDOUT)
    wait_healthy(proc, f"http://127.0.0.1:{port}/ready", log)
    return proc


def start_litserve(variant_id: int, port: int, max_batch: int, max_wait_ms: float, threads: int | None,
                   log: Path) -> subprocess.Popen:
    args = [sys.executable, __file__, "--litserve-child", "--variant", str(variant_id), "--port", str(port),
            "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    args += ["--threads", str(threads)] if threads else []
    # its own process group: LitServe runs its HTTP server and its inference worker in processes of their own
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    wait_healthy(proc, f"http://127.0.0.1:{port}/health", log)
    return proc


def stop(proc: subprocess.Popen, group: bool = False) -> None:
    """Stop a server this script started (with `group`, the process group it was started in)."""
    signal_to = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    signal_to(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        signal_to(signal.SIGKILL)
        proc.wait(30)
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group outlived it
        except ProcessLookupError:
            pass


try:  # the peer server, only for this benchmark (the `dev` extra installs it)
    import litserve as ls
except ImportError:
    ls = None

if ls is not None:

    class PredictorAPI(ls.LitAPI):
        """The peer: LitServe batching requests for the same Predictor, doing the same work per batch.
        At module level: LitServe pickles it into its inference worker process."""

        def __init__(self, variant_id: int, threads: int | None, **options):
            super().__init__(**options)
            self.variant_id = variant_id
            self.threads = threads

        def setup(self, device):
            from jobs.runtimes import load_predictor
            from storage import catalog

            self.predictor = load_predictor(catalog.get_variant(self.variant_id), "cpu", None, self.threads)
            self.predict(["warm up"])

        def decode_request(self, request):
            return request["text"]

        def batch(self, inputs):
            return list(inputs)

        def predict(self, texts):
            from jobs.serving.app import predict_batch

            return predict_batch(self.predictor, texts)

        def unbatch(self, output):
            return list(output)

        def encode_response(self, output):
            return {"predictions": [output]}


def serve_with_litserve(variant_id: int, port: int, max_batch: int, max_wait_ms: float,
                        threads: int | None) -> None:
    if ls is None:
        raise SystemExit("LitServe is not installed: pip install litserve (or the project's dev extra)")
    api = PredictorAPI(variant_id, threads, max_batch_size=max_batch, batch_timeout=max_wait_ms / 1000)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=port, num_api_servers=1, generate_client_file=False,
               log_level="warning")


# ---- the measurements -----------------------------------------------------------------------------------


def offline_throughput(predictor, texts: list[str], batch_size: int, requests: int, seconds: float) -> float:
    """Texts per second through `predict_batch` (what the server runs per batch), `batch_size` at a time."""
    from jobs.serving.app import predict_batch

    done, i = 0, 0
    for _ in range(3):  # warm-up
        predict_batch(predictor, texts[:batch_size])
    started = time.perf_counter()
    while done < requests and time.perf_counter() - started < seconds:
        chunk = [texts[(i + j) % len(texts)] for j in range(batch_size)]
        i += batch_size
        predict_batch(predictor, chunk)
        done += batch_size
    return done / (time.perf_counter() - started)


SETTLE_S = 0.02  # a pause before each timed call: ONNX Runtime's idle threads spin for a moment after a call


def p50_added(predictor, port: int, path: str, texts: list[str],
              calls: int) -> tuple[float, float, float | None]:
    """(p50 of the direct call, p50 over HTTP, p50 of the server's own `latency_ms` when it reports one),
    alternating call by call so both see the same minutes.

    The direct Predictor (in this process) and the server's are two sessions on the same cores: without the
    pause, one's spinning threads would take the cores the other's call needs, and both would look slower."""
    from jobs.serving.app import predict_batch

    client = KeepAlive(port, path)
    for text in texts[:20]:
        client.post(text)
        predict_batch(predictor, [text])
    direct, http, inside = [], [], []
    for n in range(calls):
        text = texts[n % len(texts)]
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        predict_batch(predictor, [text])
        direct.append((time.perf_counter() - started) * 1000)
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        answer = client.post(text)
        http.append((time.perf_counter() - started) * 1000)
        if "latency_ms" in answer:
            inside.append(answer["latency_ms"])
    return statistics.median(direct), statistics.median(http), statistics.median(inside) if inside else None


def report(what: str, load: Load) -> None:
    print(f"  {what:28} {load.throughput:8.1f} texts/s  p50 {load.percentile(50):6.1f} ms  "
          f"p95 {load.percentile(95):6.1f} ms  ({load.texts} answered, {load.failed} failed)", flush=True)


def measure_server(name: str, path: str, args: argparse.Namespace, texts: list[str], predictor,
                   start: Callable[[int], subprocess.Popen], group: bool = False) -> tuple[Load, tuple]:
    """One server on a free port: closed-loop throughput at the set concurrency, and (with `predictor`) the p50 the
    HTTP path adds over a direct call; the server is stopped whatever happens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{path}"
    server = start(port)
    try:
        warm(url, texts, args.concurrency)
        load = closed_loop(url, texts, args.concurrency, args.requests, args.seconds)
        added = p50_added(predictor, port, path, texts, args.calls) if predictor is not None else ()
    finally:
        stop(server, group=group)
    report(name, load)
    return load, added


def bench_variant(variant_id: int, args: argparse.Namespace, logs: Path) -> dict:
    from jobs.runtimes import load_predictor
    from storage import catalog

    variant = catalog.get_variant(variant_id)
    texts, source = split_texts(variant, 512)
    print(f"\nvariant {variant.id}: {variant.name} ({variant.runtime}, {variant.precision}); {source}",
          flush=True)
    predictor = load_predictor(variant, "cpu", None, args.threads)
    ceiling = offline_throughput(predictor, texts, args.max_batch, args.requests, args.seconds)
    one_by_one = offline_throughput(predictor, texts, 1, args.requests, args.seconds)
    print(f"  {f'offline Predictor, batches of {args.max_batch}':28} {ceiling:8.1f} texts/s", flush=True)
    # what batching can give at most on this machine: the same Predictor, one text per call
    print(f"  {'offline Predictor, batches of 1':28} {one_by_one:8.1f} texts/s  (batching gives at most "
          f"{ceiling / one_by_one:.2f}x here)", flush=True)
    figures = {"variant": variant.id, "ceiling": ceiling, "offline_batch_1": one_by_one}

    batched, (direct_p50, http_p50, inside_p50) = measure_server(
        f"model server, max batch {args.max_batch}", "/v1/predict", args, texts, predictor,
        lambda port: start_workbench_server(variant.id, port, args.max_batch, args.max_wait_ms, args.threads,
                                            logs / f"server-{variant.id}.log"))
    figures.update(batched=batched.throughput, direct_p50=direct_p50, http_p50=http_p50,
                   server_side_p50=inside_p50)
    unbatched, _ = measure_server(
        "model server, max batch 1", "/v1/predict", args, texts, None,
        lambda port: start_workbench_server(variant.id, port, 1, args.max_wait_ms, args.threads,
                                            logs / f"server-{variant.id}-unbatched.log"))
    figures["unbatched"] = unbatched.throughput
    try:
        lit, (lit_direct_p50, lit_http_p50, _) = measure_server(
            f"LitServe, max batch {args.max_batch}", "/predict", args, texts, predictor,
            lambda port: start_litserve(variant.id, port, args.max_batch, args.max_wait_ms, args.threads,
                                        logs / f"litserve-{variant.id}.log"), group=True)
    finally:
        predictor.close()
    figures.update(litserve=lit.throughput, litserve_added_p50=lit_http_p50 - lit_direct_p50)

    print(f"  batching: {batched.throughput / unbatched.throughput:5.2f}x max batch 1 (target >= 3x)")
    print(f"  share of the offline ceiling: {batched.throughput / ceiling:6.1%} (target >= 70 %)")
    print(f"  concurrency 1: direct p50 {direct_p50:.2f} ms, HTTP p50 {http_p50:.2f} ms, added "
          f"{http_p50 - direct_p50:+.2f} ms (target <= 2 ms); "
          f"LitServe adds {lit_http_p50 - lit_direct_p50:+.2f} ms")
    # the server's own clock (request parsed -> answer ready): the rest of the round trip is transport
    print(f"  concurrency 1: the server's own latency_ms p50 {inside_p50:.2f} ms, so the HTTP transport and "
          f"framework add {http_p50 - inside_p50:+.2f} ms of the round trip")
    print(f"  against LitServe: {batched.throughput / lit.throughput:5.2f}x its throughput")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="data directory (default: a new temporary one)")
    parser.add_argument("--variant", type=int, action="append",
                        help="a stored classifier variant (repeatable)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for every model (default: all)")
    parser.add_argument("--requests", type=int, default=1500, help="most requests in each throughput phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="longest each throughput phase runs")
    parser.add_argument("--calls", type=int, default=300, help="alternating calls for the concurrency-1 p50")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--litserve-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.home:
        os.environ["WORKBENCH_HOME"] = args.home
    os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="serving-throughput-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WORKBENCH_MLFLOW", "off")
    if args.litserve_child:
        serve_with_litserve(args.variant[0], args.port, args.max_batch, args.max_wait_ms, args.threads)
        return

    from jobs.runtimes.devices import cpu_info
    from storage import db

    info = cpu_info()
    flags = ", ".join(info["cpu_flags"]) or "none"
    print(f"CPU: {info['cpu']}, {info['cpu_count']} logical cores, flags: {flags}")
    try:
        load = os.getloadavg()
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    except OSError:
        pass
    print(f"flags: concurrency {args.concurrency}, max batch {args.max_batch}, max wait "
          f"{args.max_wait_ms:g} ms, threads {args.threads or 'all'}, at most {args.requests} requests or "
          f"{args.seconds:g} s per phase")
    db.upgrade()
    variants = args.variant or make_variants()
    logs = Path(tempfile.mkdtemp(prefix="serving-throughput-logs-"))
    results = [bench_variant(v, args, logs) for v in variants]
    print(f"\nserver logs: {logs}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
