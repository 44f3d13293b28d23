"""Processes that die with the process that started them (Linux PR_SET_PDEATHSIG), so nothing runs on orphaned.

Used by the job process and the tracker (they die with their worker) and by `serve` for its worker. One module
so the runner and tracking depend on it rather than on each other.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Get `sig` when the parent dies; exit at once if it already died before this took effect."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def death_signal_hook(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get `sig` when this process dies (even by SIGKILL); None where prctl is
    not available. libc is resolved here, before the fork, so the child only makes one call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, sig)

    return hook
