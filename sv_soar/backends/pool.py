"""A fixed number of scoring slots, each with its own scorer (its own model copy): the teacher env
scores at most that many groups at a time."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

from sv_soar.scores import Scorer


class ScorerPool:
    """`size` scoring slots; each slot's scorer (a GroundedScorer or a backend of make_scorer: its own model copy) is built on first use."""

    def __init__(self, build: Callable[[], Scorer], size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"max_concurrent_scorings must be at least 1, got {size}")
        self._build, self.size = build, size
        self._build_lock = threading.Lock()
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(size):
            self._free.put(slot)
        self._scorers: dict[int, Scorer] = {}

    @contextlib.contextmanager
    def slot(self) -> Iterator[Callable[[], Scorer]]:
        """Hold one slot (blocks the calling thread while all are busy); yields its scorer's getter."""
        slot = self._free.get()
        try:
            def scorer() -> Scorer:
                # Every slot's scorer is built at the first use of any, one after another, before any scoring:
                # transformers' from_pretrained patches torch process-wide while it loads (new parameters go to
                # the meta device), so two loads at once failed ("Cannot copy out of meta tensor"), and a load
                # beside a scoring thread could catch the LoRA weights that thread was creating.
                with self._build_lock:
                    for s in range(self.size):
                        if s not in self._scorers:
                            self._scorers[s] = self._build()
                return self._scorers[slot]

            yield scorer
        finally:
            self._free.put(slot)
