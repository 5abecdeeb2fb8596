"""Progress on long work (sv_soar.progress): a bar on a terminal, whole lines in a log file, nothing with
--no-progress."""

from __future__ import annotations

import io

from tqdm.auto import tqdm

from sv_soar import progress
from sv_soar.progress import count_done_before, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_whole_lines_at_the_start_while_it_moves_and_at_the_end():
    log = io.StringIO()
    with progress_bar(3, "students", unit="step", file=log, every_s=0.0) as bar:
        for _ in range(3):
            bar.set_postfix(loss="0.125")
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 5  # the start, each update, the end
    assert lines[0].startswith("students: 0/3 step (0%)")
    assert lines[-1].startswith("students: 3/3 step (100%)") and lines[-1].endswith("loss=0.125")


def test_a_log_file_gets_a_line_a_minute_not_one_an_update():
    log = io.StringIO()
    with progress_bar(1000, "answers", unit="answer", file=log) as bar:  # every_s: a minute
        for _ in range(1000):
            bar.update(1)
    assert [line.split(" [")[0] for line in log.getvalue().splitlines()] == ["answers: 0/1000 answer (0%)",
                                                                             "answers: 1000/1000 answer (100%)"]


def test_a_terminal_gets_a_tqdm_bar_and_no_progress_gets_nothing():
    terminal, silent = Terminal(), Terminal()
    with progress_bar(2, "students", unit="step", leave=True, file=terminal) as bar:
        assert isinstance(bar, tqdm)
        bar.update(2)
    assert "\r" in terminal.getvalue() and "2/2" in terminal.getvalue()
    with progress_bar(2, "students", enabled=False, unit="step", file=silent) as bar:
        assert bar.disable
        bar.update(2)
    assert silent.getvalue() == ""


def test_units_done_before_a_resume_count_toward_the_total_not_the_pace(monkeypatch):
    """A final student resumed from its checkpoint at 900 of 1000 steps, then one step in 10 s: 99 steps at 10 s is
    16:30 left (counting the 900 restored steps as done in 10 s said 00:01)."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    log, terminal = io.StringIO(), Terminal()
    with progress_bar(1000, "final students", unit="step", file=log, every_s=0.0) as bar, \
            progress_bar(1000, "final students", unit="step", file=terminal) as tty:
        for each in (bar, tty):
            count_done_before(each, 900)
        clock[0] = 10.0
        bar.update(1)
        assert tty.n == 900 and tty.initial == 900 and tty.last_print_n == 900  # tqdm's pace starts from here
    assert log.getvalue().splitlines()[-1].startswith("final students: 901/1000 step (90%) [00:10 elapsed, 16:30 left")
