"""Atomic writes: a reader (or a resumed run after a kill) sees the old file or the whole new one."""

from __future__ import annotations

import os
import stat

import pytest

from sv_soar.jsonl import atomic_path, read_jsonl, write_jsonl, write_text_atomic


def test_written_file_has_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "report.md", "hello\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert path.read_text() == "hello\n"


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"a": 2}\n{"half')
            raise RuntimeError("killed mid-write")
    assert read_jsonl(path) == [{"a": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_replace_creates_missing_parent_folders(tmp_path):
    path = write_jsonl(tmp_path / "a" / "b" / "rows.jsonl", [{"x": "é"}])
    assert read_jsonl(path) == [{"x": "é"}]
