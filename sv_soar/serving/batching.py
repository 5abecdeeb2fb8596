"""Dynamic batching: concurrent callers, one engine, as few `generate` calls as possible.

vf-eval sends its rollouts' requests in parallel (`--max-concurrent`, 32 by default), and on CPU a
batched `generate` over 16 prompts costs little more than one over a single prompt. So one worker
thread owns the engine (engines are not thread-safe, and one batch at a time keeps memory bounded).
It takes the first waiting request, gathers whatever else arrives within the batch window (up to
`max_batch_size` sequences, i.e. prompts x n), groups the requests by identical sampling parameters
(greedy requests with the same max_tokens share one group, whatever their adapter) and runs one
`engine.generate` call per group. Callers block on a future until their group has run.

Backpressure: at most `max_queue` requests wait for the engine; `enqueue` refuses the next one with
QueueFull (the server answers 503 with Retry-After) instead of letting the queue, and every client's wait,
grow without bound. A request cancelled while it waits (its client hung up) never reaches the engine; one
already in a running batch finishes with it (a batched generate call cannot drop one prompt).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sv_soar.generation import ChatPrompt, Completion, GenerationEngine, SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    prompt: ChatPrompt
    params: SamplingParams
    adapter: str | None
    future: Future = field(default_factory=Future)

    @property
    def batch_key(self) -> tuple:
        # A seeded sampling request runs alone so that its samples do not depend on which other
        # requests happened to arrive in the same window.
        alone = id(self) if self.params.seed is not None and self.params.temperature > 0 else None
        return (self.params, alone)


class QueueFull(Exception):
    """max_queue requests are already waiting for the engine."""


@dataclass
class BatchingStats:
    requests: int = 0
    failed_requests: int = 0
    refused_busy: int = 0  # refused with QueueFull
    cancelled: int = 0  # cancelled while waiting (never generated)
    engine_calls: int = 0
    engine_calls_by_size: Counter = field(default_factory=Counter)  # prompts per generate call -> calls
    generated_tokens: int = 0
    engine_seconds: float = 0.0


_STOP = object()


class DynamicBatcher:
    """One worker thread owns the engine and runs concurrent requests as batched generate calls."""

    def __init__(self, engine: GenerationEngine, *, max_batch_size: int = 16, batch_window_s: float = 0.01,
                 max_queue: int | None = None):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        self.max_queue = max_queue  # None: unbounded
        self._waiting = 0  # enqueued, not yet in a batch, not cancelled
        self._running = 0  # sequences in the engine call under way
        self._queue: queue.Queue = queue.Queue()
        self._carry: Any = None  # a job (or _STOP) that did not fit into the previous collection
        self._stats = BatchingStats()
        self._stats_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="engine-worker", daemon=True)
        self._worker.start()

    def submit(self, prompt: ChatPrompt, params: SamplingParams, adapter: str | None = None) -> list[Completion]:
        """Queue one prompt and block until its batch has run; an engine error is re-raised here."""
        return self.enqueue(prompt, params, adapter).result()

    def enqueue(self, prompt: ChatPrompt, params: SamplingParams, adapter: str | None = None) -> Future:
        """Queue one prompt; its future gets the completions (or the engine's error). QueueFull when
        max_queue requests are waiting already."""
        with self._stats_lock:
            if self.max_queue is not None and self._waiting >= self.max_queue:
                self._stats.refused_busy += 1
                raise QueueFull(f"{self._waiting} requests are waiting for the engine (--max-queue {self.max_queue})")
            self._waiting += 1
        job = _Job(prompt, params, adapter)
        self._queue.put(job)
        return job.future

    def cancel(self, future: Future) -> bool:
        """Withdraw a request still waiting (True); one already in a batch runs to the end (False)."""
        if not future.cancel():
            return False
        with self._stats_lock:
            self._waiting -= 1
            self._stats.cancelled += 1
        return True

    def retry_after_s(self) -> float:
        """About how long the requests waiting now take: mean engine call time x batches ahead."""
        with self._stats_lock:
            per_call = self._stats.engine_seconds / self._stats.engine_calls if self._stats.engine_calls else 1.0
            return per_call * (self._waiting / self.max_batch_size + 1)

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            stats = dict(vars(self._stats))
            by_size = dict(sorted(self._stats.engine_calls_by_size.items()))
            stats["queued"] = self._waiting  # requests waiting for the engine (at most max_queue)
            stats["running"] = self._running  # sequences in the engine call under way
        stats["engine_calls_by_size"] = by_size
        stats["largest_engine_call"] = max(by_size, default=0)
        stats["max_queue"] = self.max_queue
        return stats

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the batch in progress (waiting at most timeout_s), fail whatever is still queued."""
        self._queue.put(_STOP)
        self._worker.join(timeout_s)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job) and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    def _work(self) -> None:
        while (jobs := self._collect()) is not None:
            # from here a job runs to the end: cancel() no longer withdraws it (one cancelled since
            # _collect took it is dropped here)
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            with self._stats_lock:
                self._waiting -= len(jobs)
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.batch_key, []).append(job)
            for group in groups.values():
                with self._stats_lock:
                    self._running = sum(job.params.n for job in group)
                self._generate(group)
            with self._stats_lock:
                self._running = 0

    def _collect(self) -> list[_Job] | None:
        """The first waiting job, plus what arrives within the batch window, up to max_batch_size sequences."""
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        while first is not _STOP and first.future.cancelled():  # its client hung up while it waited
            first = self._queue.get()
        if first is _STOP:
            return None
        jobs, sequences = [first], first.params.n
        deadline = time.monotonic() + self.batch_window_s
        while sequences < self.max_batch_size:
            try:  # past the deadline this still takes jobs that are already waiting
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is not _STOP and job.future.cancelled():
                continue
            if job is _STOP or sequences + job.params.n > self.max_batch_size:
                self._carry = job
                break
            jobs.append(job)
            sequences += job.params.n
        return jobs

    def _generate(self, jobs: list[_Job]) -> None:
        adapters = [job.adapter for job in jobs]
        start = time.perf_counter()
        try:
            results = self.engine.generate(
                [job.prompt for job in jobs], jobs[0].params, adapters if any(adapters) else None
            )
            if len(results) != len(jobs):
                raise RuntimeError(f"engine returned {len(results)} results for {len(jobs)} prompts")
        except Exception as exc:
            error = exc
        else:
            self._finished(jobs, results, time.perf_counter() - start)
            return
        # outside the except block, so that a retry's own failure is not logged as chained to this one
        self._failed(jobs, error)

    def _finished(self, jobs: list[_Job], results: list[list[Completion]], seconds: float) -> None:
        tokens = sum(len(c.token_ids) for completions in results for c in completions)
        with self._stats_lock:
            self._stats.requests += len(jobs)
            self._stats.engine_calls += 1
            self._stats.engine_calls_by_size[len(jobs)] += 1
            self._stats.generated_tokens += tokens
            self._stats.engine_seconds += seconds
        logger.info(
            "generated %d prompt(s) x n=%d: %d tokens in %.2f s (%.0f tokens/s)",
            len(jobs), jobs[0].params.n, tokens, seconds, tokens / seconds if seconds else 0.0,
        )
        for job, completions in zip(jobs, results):
            job.future.set_result(completions)

    def _failed(self, jobs: list[_Job], error: Exception) -> None:
        if len(jobs) > 1:
            # One bad prompt must not fail the requests that happened to share its batch.
            logger.warning("batch of %d failed (%s); retrying its prompts one by one", len(jobs), error)
            for job in jobs:
                self._generate([job])
            return
        logger.error("engine failed on a request", exc_info=error)
        with self._stats_lock:
            self._stats.requests += 1
            self._stats.failed_requests += 1
        jobs[0].future.set_exception(error)
