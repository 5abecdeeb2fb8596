"""Progress on long work (students' steps, answers sampled, warm-start steps): a tqdm bar on a terminal; in a log
file, where a background run's stderr goes (nohup, `> log 2>&1`), one plain line when the work starts, one every
minute and one when it ends. A bar's carriage returns would fill a log with one endless line, and no bar at all
leaves it silent through a step of minutes or a final student of hours."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm.auto import tqdm

LOG_EVERY_S = 60.0  # a log file's line interval
LOG_LINE = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) [{elapsed} elapsed, {remaining} left, {rate_fmt}]"


class LogLines:
    """A progress "bar" for a file that is not a terminal: the count as a line of its own, at the start, at most
    every `every_s` seconds while it moves, and at the end. The calls of a tqdm bar it takes: update, set_postfix,
    close, `with`."""

    def __init__(self, total: int, desc: str, unit: str, every_s: float, file: IO[str]) -> None:
        self.total, self.desc, self.unit, self.every_s, self.file = total, desc, unit, every_s, file
        self.n = self.initial = 0  # initial: units done before this process (count_done_before)
        self.postfix = ""
        self.started = self._written = time.monotonic()
        self._closed = False
        self._write()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._written >= self.every_s:
            self._write()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Values shown after the count (a loss), as tqdm's `set_postfix` shows them; written with the next line."""
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write()

    def _write(self) -> None:
        now = time.monotonic()
        line = tqdm.format_meter(self.n, self.total, now - self.started, prefix=self.desc, unit=self.unit,
                                 bar_format=LOG_LINE, initial=self.initial)
        self.file.write(line + (f" {self.postfix}" if self.postfix else "") + "\n")
        self.file.flush()
        self._written = now

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_done_before(bar: Any, n: int) -> None:
    """Count `n` units that an earlier process did (a student's steps restored from its checkpoint) toward the
    bar's total but not toward its rate: the time left is then this process's pace over the units still to do, not a
    pace that counts hours of restored steps as done in the first second (a resumed 3280-step student said
    "03:50 left" for an hour's work)."""
    if getattr(bar, "disable", False):  # --no-progress: a disabled tqdm keeps no count to show
        return
    bar.n += n
    bar.initial += n
    if isinstance(bar, tqdm):
        bar.last_print_n += n  # tqdm's smoothed rate reads the units since its last print
        bar.refresh()


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "it", *, leave: bool = False,
                 file: IO[str] | None = None, every_s: float = LOG_EVERY_S) -> Any:
    """A progress bar over `total` units: tqdm on a terminal (`leave`: it stays when done), LogLines in a log file,
    a silent one when not `enabled` (--no-progress)."""
    file = file if file is not None else sys.stderr
    if not enabled:
        return tqdm(total=total, disable=True)
    if not file.isatty():
        return LogLines(total, desc, unit, every_s, file)
    return tqdm(total=total, desc=desc, unit=unit, file=file, dynamic_ncols=True, leave=leave)
