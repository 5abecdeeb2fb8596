"""Running a scanner binary on untrusted input: an argument list (never a shell), a time limit, a
private temporary folder that is always removed, and an environment stripped to what the tool needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

DEFAULT_TIMEOUT_S = 60.0
# kept from the parent environment: enough to find binaries and decode text, nothing that carries
# credentials or proxies
_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")


class ScannerError(RuntimeError):
    """A scanner that could not give an answer (missing, timed out, crashed, unreadable output)."""


@contextmanager
def scratch_dir(prefix: str = "sv-soar-e2-") -> Iterator[Path]:
    """A private temporary folder, removed on exit whatever happens inside."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_files(folder: Path, files: Mapping[str, str]) -> list[Path]:
    """Write `files` (plain names, no folders) into `folder`; a name with a path in it is refused."""
    written = []
    for name, text in files.items():
        if not name or Path(name).name != name or name in {".", ".."}:
            raise ValueError(f"scanner input name must be a plain file name, got {name!r}")
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def run_scanner(
    argv: Sequence[str],
    *,
    cwd: Path,
    home: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (a list: no shell ever parses it) in `cwd` with HOME=`home`, killed after
    `timeout_s`. Exit codes are the caller's to read (linters exit 1 when they find something)."""
    if isinstance(argv, str):
        raise TypeError("argv must be a list of arguments, not a string (no shell)")
    env = {key: os.environ[key] for key in _KEEP if key in os.environ}
    env["HOME"] = str(home)
    env.update(extra_env or {})
    try:
        return subprocess.run(
            list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s,
            shell=False, stdin=subprocess.DEVNULL, check=False,
        )
    except subprocess.TimeoutExpired:
        raise ScannerError(f"{Path(argv[0]).name} timed out after {timeout_s:g} s") from None
    except OSError as exc:
        raise ScannerError(f"{Path(argv[0]).name} could not start: {exc}") from None
