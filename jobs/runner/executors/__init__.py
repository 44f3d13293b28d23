"""Executors: how a claimed job runs. The worker owns the queue (claim, heartbeat, cancel requests, re-queue,
the outcome when a job could not record its own); an executor owns the running of one job and reports back.

How to add an executor: write a module here with a subclass of `Executor` and implement its methods: `start`
begins a job and returns a `JobHandle` (its `pid` is recorded on the job row, `where` names it in the worker's
log); `poll` answers None while the job runs and a `JobEnd` once it has ended; `wait` is `poll` that may block
for up to a timeout; `drain` hands over new log output, already passed through `strip_ansi`; `cancel` asks the
job to stop and `kill` forces it (the worker calls it when a cancelled job is still running after its grace
period, and when it shuts down); `warm_up` may prepare for the first job when a long-running worker
starts. Where jobs run on other machines, `claimable_devices` says which devices the
worker may claim jobs for, `places_hardware_classes` whether it claims jobs that name a hardware class, and
`close` lets go of the cluster when the worker stops. Then name it in `EXECUTORS` below ("module:Class", imported only when chosen,
so an executor's dependencies are needed only where it is used). Which one a worker uses is the
WORKBENCH_EXECUTOR setting (storage/settings.py); the worker loop and the queue do not change.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from storage.errors import InvalidInput

# name -> "module:Class"; a string so that choosing "local" never imports what another executor needs
EXECUTORS: dict[str, str] = {
    "local": "jobs.runner.executors.local:LocalExecutor",
    "ray": "jobs.runner.executors.ray:RayExecutor",
}

# Terminal escape sequences that libraries print anyway (colours, hyperlinks, cursor moves): CSI (ESC [ ... final
# byte), OSC (ESC ] ... ended by BEL or ESC \), the 8-bit CSI, and two-byte escapes such as ESC ( B or ESC =.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                         r"|\x1b[ -/]*[0-~]")


def strip_ansi(text: str) -> str:
    """`text` without terminal escape sequences: a job's log is read in a browser and a database, not a terminal."""
    return ANSI_ESCAPE.sub("", text) if "\x1b" in text or "\x9b" in text else text


class JobHandle(Protocol):
    """One job an executor started; the worker keeps it and passes it back to the executor's methods."""

    job_id: int

    @property
    def pid(self) -> int | None:
        """The operating-system process id recorded on the job row (queue.set_pid); None where there is none."""

    @property
    def where(self) -> str:
        """Where the job runs, for the worker's log: "process 1234", "Ray task 3f2a…"."""


@dataclass(frozen=True)
class JobEnd:
    """How a job ended. The worker uses `reason` and `log_tail` only when the job did not record its outcome
    itself (it crashed, was killed, or exited early)."""

    exit_status: int  # 0 for a clean exit; like subprocess, minus the signal number for a job killed by a signal
    reason: str  # in words, for the job's error: "job process was killed by SIGKILL (signal 9) (...)"
    log_tail: str = ""  # the last lines it printed, for the job's error


Handle = TypeVar("Handle", bound=JobHandle)


class Executor(ABC, Generic[Handle]):
    """Runs jobs for a worker. Called from the worker's loop thread only."""

    # whether it can run a job on a node of the hardware class the job names (params `hardware_class`); a worker
    # whose executor cannot leaves such jobs in the queue for one that can
    places_hardware_classes: bool = False

    def claimable_devices(self, local_devices: list[str]) -> list[str]:
        """The devices of the machines it runs jobs on, which the worker claims jobs for: this machine's here."""
        return list(local_devices)

    def warm_up(self) -> None:
        """Called once when a long-running worker starts (not a burst worker), before it claims a job: prepare
        what would otherwise delay the first job, without waiting for it."""

    def close(self) -> None:
        """Called once when the worker stops, after its jobs ended."""

    @abstractmethod
    def start(self, job_id: int) -> Handle:
        """Begin running the claimed job `job_id`; return at once."""

    @abstractmethod
    def wait(self, handle: Handle, timeout: float | None) -> JobEnd | None:
        """How the job ended, waiting up to `timeout` seconds (None: until it ends); None if it still runs."""

    def poll(self, handle: Handle) -> JobEnd | None:
        """How the job ended, or None while it runs; never blocks for long."""
        return self.wait(handle, 0)

    @abstractmethod
    def drain(self, handle: Handle) -> str:
        """Log output since the last call, without terminal escapes ("" if none)."""

    @abstractmethod
    def cancel(self, handle: Handle) -> None:
        """Ask the job to stop (it may clean up); returns at once."""

    @abstractmethod
    def kill(self, handle: Handle) -> None:
        """Stop the job now, without waiting for it to clean up; returns at once."""


def get_executor(name: str) -> Executor:
    """A new executor of the kind named `name` (a key of EXECUTORS)."""
    target = EXECUTORS.get(name.strip())
    if target is None:
        raise InvalidInput(
            f"unknown executor {name!r}; known executors: {', '.join(sorted(EXECUTORS))} (set WORKBENCH_EXECUTOR)"
        )
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()
