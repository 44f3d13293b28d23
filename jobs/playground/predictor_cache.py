"""Loaded predictors kept for the playground: bounded by memory, evicted least-recently-used, safe across threads.

The app serves several users at once from one process. Loading a variant takes seconds, so loaded predictors are
kept, but only while their estimated memory fits under `WORKBENCH_PREDICTOR_CACHE_MB`. The estimate is the
process's resident memory growth while loading (psutil), and at least the variant's size on disk; a runtime's
first load in the process counts its files only, since its growth is mostly the runtime starting up.

Two users of one predictor take turns on its lock: a Hugging Face fast tokenizer is not safe to call from two
threads at once ("Already borrowed"). A predictor evicted while someone is using it is closed by its last user.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import psutil

from jobs.runtimes import load_predictor
from jobs.runtimes.base import Predictor
from storage import catalog, settings
from storage.errors import InvalidInput


@dataclass
class _Entry:
    key: tuple[int, str, str]  # variant id, device, database (ids are per database)
    predictor: Predictor
    bytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    evicted: bool = False


@dataclass(frozen=True)
class CachedPredictor:
    """What the cache holds, for display: which variant, on which device, and its memory estimate."""

    variant_id: int
    device: str
    bytes: int


class PredictorCache:
    """`with cache.use(variant_id) as predictor:` loads on first use and keeps it while it fits the budget."""

    def __init__(self, budget_bytes: int | None = None, loader: Callable[[Any, str], Predictor] | None = None):
        self._budget = budget_bytes
        self._loader = loader or (lambda variant, device: load_predictor(variant, device))
        self._entries: OrderedDict[tuple[int, str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()  # guards _entries
        self._loading = threading.Lock()  # one load at a time, so the memory growth measured is this load's
        self._runtimes_loaded: set[str] = set()

    @property
    def budget_bytes(self) -> int:
        return self._budget if self._budget is not None else settings.get("WORKBENCH_PREDICTOR_CACHE_MB") * 2**20

    def contents(self) -> list[CachedPredictor]:
        """Most recently used last."""
        with self._lock:
            return [CachedPredictor(k[0], k[1], e.bytes) for k, e in self._entries.items()]

    @contextmanager
    def use(self, variant_id: int, device: str = "cpu") -> Iterator[Predictor]:
        entry = self._acquire((int(variant_id), device, settings.db_url()))
        try:
            with entry.lock:
                yield entry.predictor
        finally:
            self._release(entry)

    def clear(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), OrderedDict()
            for entry in entries:
                self._retire(entry)

    # ---- internals -----------------------------------------------------------------------------------------

    def _acquire(self, key: tuple[int, str, str]) -> _Entry:
        entry = self._checkout(key)
        if entry is not None:
            return entry
        with self._loading:
            entry = self._checkout(key)  # another thread may have loaded it while this one waited
            if entry is not None:
                return entry
            variant = catalog.get_variant(key[0])
            before = psutil.Process().memory_info().rss
            try:
                predictor = self._loader(variant, key[1])
            except (ValueError, RuntimeError, ImportError, OSError) as exc:
                raise InvalidInput(f"variant {variant.id} ({variant.name}) cannot be loaded on {key[1]}: {exc}") from exc
            grown = psutil.Process().memory_info().rss - before
            # A runtime's first load in a process also pays its one-time start-up (imports, thread pools,
            # allocator arenas), which evicting this predictor would not give back: count only its files then.
            first_of_runtime = variant.runtime not in self._runtimes_loaded
            self._runtimes_loaded.add(variant.runtime)
            estimate = max(0 if first_of_runtime else grown, int(variant.size_bytes or 0))
            entry = _Entry(key, predictor, estimate, users=1)
            with self._lock:
                self._entries[key] = entry
                self._evict_over_budget(keep=key)
            return entry

    def _checkout(self, key: tuple[int, str, str]) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry.users += 1
            return entry

    def _evict_over_budget(self, keep: tuple[int, str, str]) -> None:
        """Drop least-recently-used entries until the rest fit; the one just loaded stays even if alone too big."""
        while sum(e.bytes for e in self._entries.values()) > self.budget_bytes and len(self._entries) > 1:
            oldest = next(k for k in self._entries if k != keep)
            self._retire(self._entries.pop(oldest))

    def _retire(self, entry: _Entry) -> None:
        entry.evicted = True
        if entry.users == 0:
            entry.predictor.close()

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                entry.predictor.close()


CACHE = PredictorCache()  # the app process's one cache
