"""What the app adds to one prediction: gradio_client -> served app -> cached Predictor, against the Predictor
called directly in this process, in alternating calls so both see the same minutes of the same machine.

    .venv/bin/python benchmarks/playground_overhead.py [--home DIR] [--calls 300] [--variant ID]

Target (issue 4/5): the round trip through the app adds at most 10 ms at p50. Without --variant it fine-tunes
the built-in MiniLM briefly on the built-in sentiment data (a real MiniLM classifier; its accuracy is not the
point here) with the product's own job. Also prints the raw HTTP route (`POST /gradio_api/call/predict`, then
the event stream), which is what a curl user pays.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TEXT = "the flight was delayed again but the crew were lovely"
SESSION = "playground-overhead-benchmark"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_variant() -> int:
    from jobs import api

    api.add_model(api.ModelRequest("builtin:minilm-l6"))
    api.add_dataset(api.DatasetRequest("builtin:tweet-sentiment"))
    job = api.submit("finetune", {"epochs": 1, "max_train_examples": 300}, model="minilm-l6", dataset="tweet-sentiment")
    subprocess.run([sys.executable, "-m", "workbench", "worker", "--burst"], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    produced = api.get_job(job.id).produced_variant_id
    if not produced:
        raise SystemExit(f"fine-tuning failed: {api.job_log(job.id)[-2000:]}")
    return produced


def start_app(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--no-worker", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the app did not start")


def direct_post(url: str, variant: int) -> dict:
    """One HTTP round trip: the endpoint skips Gradio's queue, so the answer comes in the POST's response.

    A caller keeps one `session_hash`, as gradio_client does: without one Gradio builds a new session (a copy
    of every component's config) for each request, which costs this app about 24 ms a call.
    """
    body = json.dumps({"data": [str(variant), TEXT], "session_hash": SESSION}).encode()
    request = urllib.request.Request(f"{url}gradio_api/run/predict", body, {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request).read())["data"][0]


def queued_http(url: str, variant: int) -> dict:
    """The queued curl route: POST the inputs, then read the result from the event stream."""
    body = json.dumps({"data": [str(variant), TEXT]}).encode()
    request = urllib.request.Request(f"{url}gradio_api/call/predict", body, {"Content-Type": "application/json"})
    event_id = json.loads(urllib.request.urlopen(request).read())["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/predict/{event_id}") as stream:
        for line in stream.read().decode().splitlines():
            if line.startswith("data:"):
                return json.loads(line[5:])[0]
    raise RuntimeError("no data in the event stream")


def ms(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="data directory (default: a new temporary one)")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per route")
    parser.add_argument("--variant", type=int, help="an existing classifier variant in --home")
    args = parser.parse_args()
    os.environ["WORKBENCH_HOME"] = args.home or tempfile.mkdtemp(prefix="playground-overhead-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from gradio_client import Client

    from jobs import api
    from jobs.runtimes import load_predictor

    variant = args.variant or make_variant()
    port = free_port()
    app = start_app(port)
    try:
        url = f"http://127.0.0.1:{port}/"
        client = Client(url, verbose=False)
        predictor = load_predictor(api.get_variant(variant))
        routes = {
            "direct Predictor (encode + forward)": lambda: predictor.predict([TEXT]),
            "gradio_client (queued) -> app": lambda: client.predict(str(variant), TEXT, api_name="/predict"),
            "HTTP POST /run/predict -> app": lambda: direct_post(url, variant),
            "HTTP /call/predict (queued) -> app": lambda: queued_http(url, variant),
        }
        for fn in routes.values():  # warm up: first loads, the app's cache, connections
            for _ in range(10):
                fn()
        times: dict[str, list[float]] = {name: [] for name in routes}
        for _ in range(args.calls):  # alternate the routes call by call
            for name, fn in routes.items():
                times[name].append(ms(fn))
        served = [client.predict(str(variant), TEXT, api_name="/predict")["latency_ms"] for _ in range(30)]
    finally:
        app.terminate()
        app.wait(30)

    base = statistics.median(times["direct Predictor (encode + forward)"])
    print(f"variant {variant}, {args.calls} alternating calls per route, text of {len(TEXT.split())} words")
    print(f"{'route':38} {'p50 ms':>8} {'p90 ms':>8} {'added p50':>10} {'ratio':>6}")
    for name, values in times.items():
        p50 = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:38} {p50:8.2f} {p90:8.2f} {p50 - base:+10.2f} {p50 / base:6.2f}x")
    print(f"the app's own measurement of the call (tokenize + forward inside the server), p50: {statistics.median(served):.2f} ms")
    added = statistics.median(times["HTTP POST /run/predict -> app"]) - base
    print(f"target: one round trip through the app adds <= 10 ms at p50 -> {'met' if added <= 10 else 'NOT met'} "
          f"({added:+.2f} ms on POST /gradio_api/run/predict)")


if __name__ == "__main__":
    main()
