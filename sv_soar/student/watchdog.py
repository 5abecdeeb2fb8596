"""A student run that hangs or runs out of memory: the time limit's watchdog, and what a retry may cure."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from collections.abc import Iterator

import torch


class StudentTimeout(Exception):
    """A student run went past the scorer's time_limit_s (checked after each step)."""


class _StudentHung(StudentTimeout):
    """Raised inside a step still running hang_grace_s past the time limit (by `_hard_deadline`)."""


# Out of memory may pass on a retry once memory is freed (another student's tensors, a co-tenant's job).
RETRYABLE = (MemoryError, torch.cuda.OutOfMemoryError)


_RETRYABLE_NAMES = tuple(f"{cls.__name__}:" for cls in RETRYABLE)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def _hard_deadline(seconds: float | None) -> Iterator[None]:
    """Raise _StudentHung in this thread if the block still runs after `seconds`.

    A watchdog thread delivers it with PyThreadState_SetAsyncExc, which any thread may use (a signal
    alarm works in the main thread only, and the teacher environment scores in worker threads). Python
    raises it at the next bytecode the thread runs: a training step returns to Python between torch ops,
    so a step stuck in a loop, a sleep-retry or a slow verifier is stopped; a single C call that never
    returns (a deadlocked collective) is not, and needs a process-level watchdog (a Ray actor's timeout).
    """
    if seconds is None:
        yield
        return
    target = ctypes.c_ulong(threading.get_ident())
    lock, done, fired = threading.Lock(), threading.Event(), threading.Event()

    def watch() -> None:
        if done.wait(seconds):
            return
        with lock:
            if not done.is_set():
                fired.set()
                ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(_StudentHung))

    watchdog = threading.Thread(target=watch, name="student-hard-deadline", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        with lock:
            done.set()
            if fired.is_set():  # fired but maybe not yet raised: clear it so it cannot land after the block
                ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)
        watchdog.join()
