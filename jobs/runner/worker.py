"""The worker: claims queued jobs and runs each in its own child process.

One loop, no threads touching the DB: reap finished children, stop cancelled ones, heartbeat, sweep stale jobs
of dead workers, claim new work up to `concurrency`. A reader thread per child only moves output lines into a
buffer that the loop writes to the job's log.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError

from jobs.runtimes.devices import detect
from jobs.tracking.runs import Tracker
from storage import queue, settings
from storage.errors import InvalidInput
from storage.orm import JobStatus

TERMINATE_GRACE_S = 5.0
# `workbench serve` names itself here when it starts its worker: the worker stops when that process is gone
PARENT_PID_ENV = "WORKBENCH_WORKER_PARENT_PID"
ERROR_BACKOFF_S = 2.0
LOG_TAIL_LINES = 20
# Logs are read by people: no tqdm bars redrawn in place, no tokenizer fork warnings.
CHILD_ENV = {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
# Terminal escape sequences that libraries print anyway (colours, hyperlinks, cursor moves): CSI (ESC [ ... final
# byte), OSC (ESC ] ... ended by BEL or ESC \), the 8-bit CSI, and two-byte escapes such as ESC ( B or ESC =.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                         r"|\x1b[ -/]*[0-~]")


def strip_ansi(text: str) -> str:
    """`text` without terminal escape sequences: a job's log is read in a browser and a database, not a terminal."""
    return ANSI_ESCAPE.sub("", text) if "\x1b" in text or "\x9b" in text else text


@dataclass
class RunningJob:
    job_id: int
    process: subprocess.Popen
    lines: deque = field(default_factory=deque)
    tail: deque = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    reader: threading.Thread | None = None
    cancel_sent_at: float | None = None
    oom_kills_at_start: int | None = None  # the kernel's OOM-kill count when it started (see oom_kills)

    def start_reader(self) -> None:
        def pump() -> None:
            assert self.process.stdout is not None
            for raw in iter(self.process.stdout.readline, b""):
                line = strip_ansi(raw.decode("utf-8", errors="replace"))
                self.lines.append(line)
                self.tail.append(line)

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()

    def drain(self) -> str:
        out = []
        while self.lines:
            out.append(self.lines.popleft())
        return "".join(out)


def _oom_counter_files() -> list[str]:
    """Files whose `oom_kill` line counts the kernel's out-of-memory kills: this process's cgroup (v2
    memory.events, v1 memory.oom_control, where the hierarchy is visible) and the whole machine (/proc/vmstat)."""
    files = ["/proc/vmstat", "/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"]
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                path = path.strip("/")
                if not path:
                    continue
                if controllers == "":
                    files.append(f"/sys/fs/cgroup/{path}/memory.events")
                elif "memory" in controllers.split(","):
                    files.append(f"/sys/fs/cgroup/memory/{path}/memory.oom_control")
    except (OSError, ValueError):
        pass
    return files


def oom_kills() -> int | None:
    """The kernel's out-of-memory kills so far, summed over what this machine lets us read; None if nothing."""
    total, seen = 0, False
    for path in _oom_counter_files():
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == "oom_kill" and value.strip().isdigit():
                        total += int(value)
                        seen = True
        except OSError:
            continue
    return total if seen else None


def describe_exit(returncode: int, oom_before: int | None = None, oom_after: int | None = None) -> str:
    """Why a job process ended without a result. A SIGKILL is blamed on memory only when the kernel's OOM-kill
    counters rose while the job ran; a person or another process (kill -9, a supervisor) is not."""
    if returncode < 0:
        sig = signal.Signals(-returncode)
        hint = ""
        if sig is signal.SIGKILL:
            if oom_before is None or oom_after is None:
                hint = " (by another process or the out-of-memory killer)"
            elif oom_after > oom_before:
                hint = " (the out-of-memory killer acted while it ran: it most likely ran out of memory)"
            else:
                hint = " (by another process; the out-of-memory killer did not act while it ran)"
        return f"job process was killed by {sig.name} (signal {-returncode}){hint}"
    return f"job process exited with code {returncode} without recording a result"


class Worker:
    def __init__(self, concurrency: int = 1, burst: bool = False, poll_interval: float = 0.5,
                 parent_pid: int | None = None):
        if concurrency < 1:
            raise InvalidInput(f"concurrency must be at least 1, not {concurrency}", inputs=("concurrency",))
        self.concurrency = concurrency
        self.burst = burst
        self.poll_interval = poll_interval
        self.parent_pid = parent_pid  # the server that started this worker; None for a standalone worker
        self.server_lost = False
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.running: dict[int, RunningJob] = {}
        self.heartbeat_s = settings.get("WORKBENCH_HEARTBEAT_S")
        self.stale_after_s = settings.get("WORKBENCH_STALE_AFTER_S")
        self._stop = threading.Event()
        self.info = detect()
        self.tracker = Tracker()  # logs each ended job as an MLflow run, in its own process

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def stop(self, *_args) -> None:
        self._stop.set()

    def _parent_died(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def parent_gone(self) -> bool:
        """The server that started this worker has died (we were re-parented): stop with it.

        PR_SET_PDEATHSIG (set by `serve` when it starts us) normally sends SIGTERM first; this covers a server that
        died before that took effect, and systems without prctl.
        """
        if not self._parent_died():
            return False
        if not self._stop.is_set():
            self._log(f"its server (process {self.parent_pid}) is gone; stopping")
            self._stop.set()
        self.server_lost = True
        return True

    def run(self) -> int:
        """Run until stopped (or, in burst mode, until nothing is left to claim). Returns jobs processed."""
        if self.parent_gone():
            return 0
        queue.register_worker(
            self.id, socket.gethostname(), os.getpid(), self.info["devices"], self.info, self.concurrency
        )
        self._log(f"worker {self.id} started; devices: {', '.join(self.info['devices'])}; concurrency {self.concurrency}")
        self._sweep()
        processed = 0
        last_beat = last_sweep = time.monotonic()
        try:
            while not self._stop.is_set() and not self.parent_gone():
                try:
                    processed += self._reap()
                    self._stop_cancelled()
                    now = time.monotonic()
                    if now - last_beat >= self.heartbeat_s:
                        queue.heartbeat(self.id, self.running)
                        last_beat = now
                    if now - last_sweep >= max(self.stale_after_s / 2, 1.0):
                        self._sweep()
                        last_sweep = now
                    claimed = self._claim()
                    if self.burst and not self.running and not claimed:
                        break
                    self._flush_logs()
                except OperationalError as exc:  # e.g. "database is locked" past the busy timeout: try again
                    self._log(f"database error, retrying: {str(exc).splitlines()[0]}")
                    self._stop.wait(ERROR_BACKOFF_S)
                self._stop.wait(self.poll_interval)
        finally:
            self._shutdown()
        return processed

    # ---- steps --------------------------------------------------------------------------------------------

    def _claim(self) -> bool:
        claimed = False
        while len(self.running) < self.concurrency and not self._stop.is_set():
            job = queue.claim_next(self.id, self.info["devices"])
            if job is None:
                break
            self._start(job.id)
            claimed = True
        return claimed

    def _start(self, job_id: int) -> None:
        oom_at_start = oom_kills()
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "jobs.runner.child", str(job_id), str(os.getpid())],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **CHILD_ENV},
        )
        entry = RunningJob(job_id, process, oom_kills_at_start=oom_at_start)
        entry.start_reader()
        self.running[job_id] = entry
        queue.set_pid(job_id, process.pid)
        self._log(f"job {job_id}: started in process {process.pid}")
        self.tracker.start()  # imports MLflow while the job runs

    def _reap(self) -> int:
        done = 0
        for job_id, entry in list(self.running.items()):
            returncode = entry.process.poll()
            if returncode is None:
                continue
            if entry.reader is not None:
                entry.reader.join(timeout=5)
            queue.append_log(job_id, entry.drain())
            job = queue.get_job(job_id)
            if job.status is JobStatus.RUNNING:  # the child did not record an outcome itself
                if job.cancel_requested:
                    queue.finish(job_id, JobStatus.CANCELLED, message="cancelled by user", worker_id=self.id)
                else:
                    reason = describe_exit(returncode, entry.oom_kills_at_start, oom_kills())
                    tail = "".join(entry.tail).strip()
                    queue.append_log(job_id, f"\n{reason}\n")
                    queue.finish(
                        job_id,
                        JobStatus.FAILED,
                        message=f"failed: {reason}",
                        error=f"{reason}\n{tail}".strip(),
                        worker_id=self.id,
                    )
            final = queue.get_job(job_id)
            self._log(f"job {job_id}: {final.status.value}")
            if final.status.finished:
                self.tracker.submit(job_id)
            del self.running[job_id]
            done += 1
        return done

    def _stop_cancelled(self) -> None:
        for job_id in queue.cancel_requested(self.running):
            entry = self.running[job_id]
            now = time.monotonic()
            if entry.cancel_sent_at is None:
                entry.process.terminate()
                entry.cancel_sent_at = now
            elif now - entry.cancel_sent_at > TERMINATE_GRACE_S:
                entry.process.kill()

    def _sweep(self) -> None:
        for job_id, action in queue.sweep_stale(self.stale_after_s):
            self._log(f"job {job_id}: its worker stopped heartbeating; {action}")

    def _flush_logs(self) -> None:
        for job_id, entry in self.running.items():
            queue.append_log(job_id, entry.drain())

    def _shutdown(self) -> None:
        """Stop children and put their jobs back in the queue, so a restart picks them up again."""
        for entry in self.running.values():
            entry.process.terminate()
        deadline = time.monotonic() + TERMINATE_GRACE_S
        for job_id, entry in list(self.running.items()):
            try:
                entry.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                entry.process.kill()
                entry.process.wait()
            queue.append_log(job_id, entry.drain())
            why = "its server stopped" if self.server_lost or self._parent_died() else "it shut down"
            queue.requeue(job_id, self.id, f"worker {self.id} stopped while the job ran ({why}); re-queued")
        self.running.clear()
        self.tracker.close()  # let it log the jobs it was given
        queue.worker_stopped(self.id)
        self._log(f"worker {self.id} stopped")

    def _log(self, message: str) -> None:
        print(f"[worker] {message}", file=sys.stderr, flush=True)


def run_worker(concurrency: int = 1, burst: bool = False, poll_interval: float = 0.5) -> int:
    parent = os.environ.pop(PARENT_PID_ENV, "")  # not passed on to job processes
    worker = Worker(concurrency=concurrency, burst=burst, poll_interval=poll_interval,
                    parent_pid=int(parent) if parent.isdigit() else None)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    return worker.run()
