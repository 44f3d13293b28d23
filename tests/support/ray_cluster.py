"""A throwaway Ray cluster on this machine for the tests and benchmarks: a head and more nodes, each a
`ray start --block` process with its own custom resources (a "hardware class" such as node_a), small memory, no
dashboard, no usage stats, its own temporary folder and free ports.

Ray gives each node the machine's own address rather than 127.0.0.1 (a multi-node Ray cluster refuses loopback),
so its traffic never leaves the machine either way. `stop()` ends what it started by process id: it sends SIGTERM
to each `ray start --block` process (which stops its node's processes) and kills any of their descendants that
outlive it, never `ray stop`, which would stop every Ray process on the machine, other people's included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 120
OBJECT_STORE_BYTES = 100 * 1024 * 1024
STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_available() -> str | None:
    """Why Ray cannot be used here, or None."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return f"ray is not installed ({exc}); `make install` installs it (the `ray` extra)"
    if not Path(RAY).is_file():
        return f"no `ray` command beside {sys.executable}"
    return None


class RayCluster:
    """`start(node_a=1)` starts the head advertising {"node_a": 1}; `add_node(node_b=1)` another node; `stop()`."""

    def __init__(self, cpus_per_node: int = 1):
        self.cpus = cpus_per_node
        # short: Ray's unix sockets live under it, and a socket path may not exceed 107 bytes
        self.temp_dir = Path(tempfile.mkdtemp(prefix="wbray", dir="/tmp"))
        self.address = ""
        self.nodes: list[subprocess.Popen] = []
        self._descendants: dict[int, psutil.Process] = {}

    def _start(self, args: list[str], resources: dict[str, float], log_name: str) -> subprocess.Popen:
        log = self.temp_dir / log_name
        command = [
            RAY, "start", "--block", f"--num-cpus={self.cpus}", "--num-gpus=0",
            f"--resources={json.dumps(resources)}", f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}", *args,
        ]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        self.nodes.append(process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while STARTED not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray start failed: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        return process

    def start(self, **resources: float) -> RayCluster:
        port = free_port()
        self._start(["--head", f"--port={port}", "--include-dashboard=false", f"--dashboard-port={free_port()}",
                     f"--temp-dir={self.temp_dir}"], resources, "head.log")
        # the address other nodes join, as the head prints it: the machine's own address (see above), this port
        printed = re.search(r"--address='([^']+)'", (self.temp_dir / "head.log").read_text(errors="replace"))
        self.address = printed.group(1) if printed else f"127.0.0.1:{port}"
        return self

    def add_node(self, **resources: float) -> None:
        self._start([f"--address={self.address}"], resources, f"node{len(self.nodes)}.log")

    def wait_for_nodes(self, count: int) -> None:
        """Until `count` nodes are registered with the head (a node's `ray start` may return a moment before)."""
        script = ("import ray, sys, time; ray.init(address=sys.argv[1], log_to_driver=False);"
                  "deadline = time.monotonic() + 60\n"
                  "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]) and time.monotonic() < deadline:"
                  " time.sleep(0.2)\n"
                  "sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) >= int(sys.argv[2]) else 1)")
        done = subprocess.run([sys.executable, "-c", script, self.address, str(count)], capture_output=True,
                              timeout=START_TIMEOUT_S, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
        if done.returncode != 0:
            raise RuntimeError(f"the cluster at {self.address} did not reach {count} nodes: {done.stderr[-2000:]!r}")

    def processes(self) -> list[psutil.Process]:
        """Every process of the cluster now (the `ray start` processes and all they started)."""
        found: dict[int, psutil.Process] = {}
        for node in self.nodes:
            try:
                top = psutil.Process(node.pid)
                found[top.pid] = top
                found.update({p.pid: p for p in top.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def stop(self) -> None:
        for process in self.processes():
            self._descendants[process.pid] = process
        for node in reversed(self.nodes):  # worker nodes first, then the head
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(timeout=30)
        _, alive = psutil.wait_procs(list(self._descendants.values()), timeout=10)
        for process in alive:  # only processes this cluster started, by id
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.nodes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
