"""JSONL reading with errors that name file:line, and atomic writing.

Every JSONL file the project reads (SV-Bench data, hard sets, teacher datasets, saved eval results)
goes through `read_jsonl`, so a bad row is always reported the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_LINE_BYTES = 4 * 1024 * 1024  # one row; SV-Bench's largest E2 config is ~40 KB


class JsonlError(ValueError):
    """A row that cannot be used; the message starts with file:line."""


@dataclass
class JsonlReport:
    """What `read_jsonl(..., skip_bad=True)` skipped, with the reason for each line."""

    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.skipped)


def read_jsonl(
    path: str | os.PathLike,
    validate: Callable[[Any], Any] | None = None,
    *,
    skip_bad: bool = False,
    report: JsonlReport | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[Any]:
    """Read one JSON value per non-blank line.

    `validate(row)` may return a converted row or raise ValueError/TypeError/KeyError with a reason.
    A bad line raises JsonlError("path:line: reason"); with skip_bad=True it is recorded in `report`
    and skipped instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows: list[Any] = []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                if len(raw) > max_line_bytes:
                    raise ValueError(f"line is {len(raw)} bytes, over the {max_line_bytes}-byte limit")
                try:
                    value = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise ValueError(f"not UTF-8 ({exc.reason})") from None
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
                except RecursionError:  # "[[[[...": json recurses once a level, far below the size limit
                    raise ValueError("JSON nested too deeply") from None
                if validate is not None:
                    value = validate(value)
            except (ValueError, TypeError, KeyError) as exc:
                reason = exc.args[0] if exc.args else type(exc).__name__
                if not skip_bad:
                    raise JsonlError(f"{where}: {reason}") from None
                if report is not None:
                    report.skipped.append(f"{where}: {reason}")
                continue
            rows.append(value)
    return rows


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Write rows to `path` atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return write_text_atomic(path, text)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file through a temporary file in the same folder and an atomic rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on a clean exit it replaces `path` in one rename.

    A reader (or a resumed run after a kill) sees the old file or the whole new one, never half.
    The file gets the permissions an ordinary `open` would give (mkstemp makes 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The names atomic_path (".<name>.<random>.tmp") and save_baseline (".<folder>.tmp-<random>",
# ".<folder>.old-<pid>-<ns>") give what they write before the rename that publishes it.
TEMPORARY_NAME = re.compile(r"^\..+(\.tmp|\.tmp-[^/]+|\.old-\d+-\d+)$")


def remove_temporary_files(folder: str | os.PathLike, *, skip: Iterable[str] = ()) -> list[Path]:
    """Delete the temporary files and folders that writers killed mid-write left under `folder`, except
    under its subfolders named in `skip`.

    Only safe while no other process writes there (`sv_soar.run_dir.exclusive_run`): a live writer's
    temporary file looks the same.
    """
    folder, skip = Path(folder), set(skip)
    removed = []
    for path in sorted(folder.rglob(".*"), key=lambda p: len(p.parts)):
        if path.relative_to(folder).parts[0] in skip:
            continue
        if TEMPORARY_NAME.match(path.name) and (path.is_dir() or path.is_file()):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(path)
    return removed
