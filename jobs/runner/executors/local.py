"""The local executor: each job in its own child process on this machine.

A crash, an out-of-memory kill or a segfault ends that process only; its exit status says why. A reader thread
per child only moves output lines into a buffer that the worker's loop drains into the job's log.

The child is forked from the executor's fork server (jobs/runner/fork_server.py), which has imported torch and
transformers once, so a job does not spend seconds importing them. Until the server is ready (its first seconds),
when it has stopped, for a job whose environment could change what those imports did, or with the setting
WORKBENCH_FORK_SERVER=off, the child is started the plain way instead: `python -m jobs.runner.child`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field

from jobs.runner.executors import Executor, JobEnd, strip_ansi
from jobs.runner.fork_server import ForkedProcess, ForkServer, import_time_env
from storage import settings

LOG_TAIL_LINES = 20
# Logs are read by people: no tqdm bars redrawn in place, no tokenizer fork warnings.
CHILD_ENV = {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
# how long a finished child's output may take to reach the buffer (a grandchild can hold the pipe open)
READER_JOIN_S = 5.0


@dataclass
class RunningJob:
    """A job's child process and what it printed: the local executor's handle."""

    job_id: int
    process: subprocess.Popen | ForkedProcess
    lines: deque = field(default_factory=deque)
    tail: deque = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    reader: threading.Thread | None = None
    oom_kills_at_start: int | None = None  # the kernel's OOM-kill count when it started (see oom_kills)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def where(self) -> str:
        forked = " (forked from the fork server)" if isinstance(self.process, ForkedProcess) else ""
        return f"process {self.process.pid}{forked}"

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


def child_env() -> dict[str, str]:
    """A job process's environment: the worker's as it is now, with CHILD_ENV (forked or started plainly)."""
    return {**os.environ, **CHILD_ENV}


def spawn_child(job_id: int) -> subprocess.Popen:
    """The job's own process, its output piped to us. It is given this process's pid to die with (the worker's,
    or a Ray worker's), so an orphan never runs beside its re-queued copy."""
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "jobs.runner.child", str(job_id), str(os.getpid())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env(),
    )


class LocalExecutor(Executor[RunningJob]):
    """Each job in a child process of the worker (or of its fork server), which it dies with."""

    def __init__(self) -> None:
        self.forks = settings.flag("WORKBENCH_FORK_SERVER")  # a wrong value stops the worker as it starts
        # started by `warm_up` (a long-running worker) or with the first job (a burst worker, which may run none)
        self.fork_server: ForkServer | None = None

    def start(self, job_id: int) -> RunningJob:
        oom_at_start = oom_kills()
        process = self._fork(job_id) or spawn_child(job_id)
        handle = RunningJob(job_id, process, oom_kills_at_start=oom_at_start)
        handle.start_reader()
        return handle

    def poll(self, handle: RunningJob) -> JobEnd | None:
        returncode = handle.process.poll()
        if returncode is None:
            return None
        # its last lines are still in the pipe: let the reader move them, so they reach the log and the tail
        if handle.reader is not None:
            handle.reader.join(timeout=READER_JOIN_S)
        return self._ended(handle, returncode)

    def wait(self, handle: RunningJob, timeout: float | None) -> JobEnd | None:
        try:
            returncode = handle.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._ended(handle, returncode)

    def drain(self, handle: RunningJob) -> str:
        return handle.drain()

    def cancel(self, handle: RunningJob) -> None:
        handle.process.terminate()

    def kill(self, handle: RunningJob) -> None:
        handle.process.kill()

    def warm_up(self) -> None:
        """Start the fork server now, unless one is running, so that the first job of a long-running worker (`serve`'s)
        is forked too; `_fork` calls it for a burst worker's first job and after a server died.
        It imports on CPU time nobody else wants (see jobs/runner/fork_server.py), so an app that is starting or
        a job that is running loses nothing to it; a job claimed before it is ready starts the plain way."""
        if self.forks and (self.fork_server is None or self.fork_server.gone):
            self.close()  # one that died: its children with it
            self.fork_server = ForkServer(child_env())

    def close(self) -> None:
        if self.fork_server is not None:
            self.fork_server.close()
            self.fork_server = None

    def _fork(self, job_id: int) -> ForkedProcess | None:
        """The job's process forked from the fork server, or None where it must be started the plain way."""
        if not self.forks:
            return None
        if self.fork_server is None or self.fork_server.gone:
            self.warm_up()
            return None  # it imports for some seconds; this job does not wait for it
        env = child_env()
        if not self.fork_server.ready or import_time_env(env) != import_time_env(self.fork_server.env):
            return None
        try:
            return self.fork_server.spawn(job_id, env, os.getcwd())
        except OSError:  # no answer, or a wrong one: let this server go (its children with it), start another later
            self.close()
            return None

    @staticmethod
    def _ended(handle: RunningJob, returncode: int) -> JobEnd:
        reason = describe_exit(returncode, handle.oom_kills_at_start, oom_kills())
        return JobEnd(returncode, reason, "".join(handle.tail).strip())
