"""A fork server for job processes: one process that imports the heavy libraries once and forks a child per job.

Why: every job process used to import torch, transformers' BERT and scikit-learn before doing any work, 8-11 s on
the 2-core EPYC here (2.4-3.6 s of it BERT's modeling module alone), while many jobs (an evaluation, an export, a
quantization of a small model) then work for seconds. A child forked from this server has them imported already
and starts in about 0.1 s. Each job still runs in its own process: a crash or an out-of-memory kill ends that job
only, and its exit status comes back like a subprocess's. The server imports on CPU time no one else wants
(see _import_on_idle_cpu), so it never slows a job, or a benchmark's timed calls, beside it.

Why not multiprocessing's forkserver: there is one per Python process, started with that process's environment
(tests run workers for different data directories in one process), each child re-imports the
parent's `__main__` script, and children are multiprocessing Processes that the worker's exit waits for. This
server belongs to one executor, takes each job's environment and working directory with the request, and does
nothing else.

Protocol, over a SOCK_SEQPACKET socket pair (one JSON message per packet):
  server -> worker  {"ready": true}                  once the libraries are imported
  worker -> server  {"job": id, "env": {...}, "cwd": "..."}, with the write end of the job's output pipe attached
  server -> worker  {"started": pid} or {"error": "..."}; later {"exited": pid, "code": exit code}
The server and its children die with the worker (PR_SET_PDEATHSIG), as a job process started directly does.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback

from jobs.runner.lifeline import die_with_parent

# What the server imports up front: the libraries most jobs import, slowest first. Only libraries whose import reads
# no setting of ours (WORKBENCH_* is read when used), and none that starts threads that a fork could leave
# half-way (ONNX Runtime starts one at import; it takes 0.06 s anyway).
PRELOAD = ("torch", "transformers", "transformers.models.bert.modeling_bert", "sklearn.metrics")
# Environment variables that differ between jobs and are read only when used, so a forked child may take them
# from its request. Any other difference from the server's environment could change what an import did: such a
# job is started the slow way, as a process of its own.
RUN_TIME_ENV_PREFIXES = ("WORKBENCH_", "PYTEST_")
MAX_MESSAGE = 1 << 20  # a request carries the worker's environment
REPLY_TIMEOUT_S = 30.0


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    """The part of an environment that imports may read: all of it but the run-time settings."""
    return {name: value for name, value in env.items() if not name.startswith(RUN_TIME_ENV_PREFIXES)}


# ---- the server process ----------------------------------------------------------------------------------------


def serve(sock: socket.socket, worker_pid: int) -> None:
    die_with_parent(worker_pid, signal.SIGKILL)
    loader = threading.Thread(target=_import_on_idle_cpu, name="preload")
    loader.start()
    loader.join()  # before any fork: a child gets only the forking thread, and nothing half-imported
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)  # a child's exit wakes the select below
    _send(sock, {"ready": True})
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in ready:
            while _read_some(wake_r):
                pass
        _report_exits(sock)
        if sock not in ready:
            continue
        message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
        if not message:
            return  # the worker let go of us: nothing more to start
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            _send(sock, {"error": "a request must carry exactly one output pipe"})
            continue
        request = json.loads(message)
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            _run_child(request, fds[0], server_pid, closing=(sock, wake_r, wake_w))
        os.close(fds[0])
        _send(sock, {"started": pid})


def _import_on_idle_cpu() -> None:
    """Import PRELOAD in a thread of the SCHED_IDLE class, which runs only on CPU time no other thread wants: the
    server starts beside jobs, and a benchmark timing a variant on every core must not share them with it. On the
    EPYC here a 2-thread matmul loop kept 94 % of its rate beside this import, 33 % beside the same import at normal
    priority (which halved the search's measured speed-ups). The class is the thread's own: the main thread, which
    forks the jobs, stays a normal one. Where the class is unknown (not Linux), the import runs at normal priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library: its jobs import it themselves
            print(f"fork server: {name} not imported up front: {exc}", file=sys.stderr)


def _read_some(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _report_exits(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _send(sock: socket.socket, message: dict) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        pass  # the worker is gone; the next recv says so


def _run_child(request: dict, out_fd: int, server_pid: int, closing: tuple) -> None:
    """In the forked child: become the job's process (its output, environment and directory), run it, and exit
    without ever returning into the server's loop."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for held in closing:  # the server's socket and wake-up pipe
            if isinstance(held, socket.socket):
                held.close()
            else:
                os.close(held)
        die_with_parent(server_pid, signal.SIGKILL)  # the server dies with the worker, so the job does too
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        if "numpy" in sys.modules:  # a fresh process draws its own seed; a fork would share the server's
            sys.modules["numpy"].random.seed()
        from jobs.runner import child

        code = child.main([str(request["job"])])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()  # what a normal interpreter exit runs (os._exit below skips it)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ---- the worker's side -----------------------------------------------------------------------------------------


class ForkedProcess:
    """A job process forked by the server, with the part of `subprocess.Popen` the local executor uses."""

    def __init__(self, server: "ForkServer", pid: int, stdout) -> None:
        self.server = server
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout=timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"job process {self.pid}", timeout)
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.poll() is None:  # never signal a pid whose exit is known: it may be another process's by now
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


class ForkServer:
    """The worker's handle on its fork server: making one starts the server (with the worker's environment then),
    `spawn` forks a job once it is `ready`, `close` ends it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "jobs.runner.fork_server", str(theirs.fileno()), str(os.getpid())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        theirs.close()
        self._changed = threading.Condition()
        self._ready = False
        self._gone = False
        self._replies: list[dict] = []
        self._exits: dict[int, int] = {}
        self._request_lock = threading.Lock()
        threading.Thread(target=self._read, name="fork-server-reader", daemon=True).start()

    @property
    def ready(self) -> bool:
        return self._ready and not self._gone

    @property
    def gone(self) -> bool:
        return self._gone

    def spawn(self, job_id: int, env: dict[str, str], cwd: str) -> ForkedProcess:
        """Fork the job's process. Raises OSError when the server cannot: the caller starts it the slow way."""
        read_fd, write_fd = os.pipe()
        try:
            with self._request_lock:
                request = json.dumps({"job": job_id, "env": env, "cwd": cwd}).encode()
                socket.send_fds(self.sock, [request], [write_fd])
                os.close(write_fd)
                write_fd = -1
                reply = self._next_reply()
            if "started" not in reply:
                raise OSError(f"the fork server did not start job {job_id}: {reply.get('error', reply)}")
        except BaseException:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
            raise
        return ForkedProcess(self, int(reply["started"]), os.fdopen(read_fd, "rb"))

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The child's exit code once it has ended (negative: the signal that ended it); None while it runs."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or self._gone, timeout=timeout)
            if pid in self._exits:
                return self._exits.pop(pid)  # asked once: the ForkedProcess keeps it
            if self._gone:  # its children got SIGKILL with it (PR_SET_PDEATHSIG)
                return -signal.SIGKILL
            return None

    def close(self) -> None:
        """End the server now. It holds nothing worth waiting for (the worker has ended its jobs by now), and one
        still importing would notice a closed socket only when done, seconds later."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread, which a close alone may not
        except OSError:
            pass
        self.sock.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def _next_reply(self) -> dict:
        with self._changed:
            if not self._changed.wait_for(lambda: self._replies or self._gone, timeout=REPLY_TIMEOUT_S):
                raise OSError(f"the fork server did not answer within {REPLY_TIMEOUT_S:.0f} s")
            if not self._replies:
                raise OSError("the fork server has stopped")
            return self._replies.pop(0)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            with self._changed:
                if not data:
                    self._gone = True
                    self._changed.notify_all()
                    return
                message = json.loads(data)
                if "ready" in message:
                    self._ready = True
                elif "exited" in message:
                    self._exits[int(message["exited"])] = int(message["code"])
                else:
                    self._replies.append(message)
                self._changed.notify_all()


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])), int(sys.argv[2]))
