"""A model's patch applied to a config: a unified diff (GNU patch, in a temporary folder; a strict
Python applier where GNU patch is not installed, as in slim container images) or an RFC 6902 JSON
patch (on the parsed YAML). Untrusted input, so:
- a diff whose headers name a path outside the folder (absolute, `..`, /dev/null) is refused before
  anything runs, and `patch` is given the one file to change, so header names never pick a target;
- `patch` runs as an argument list with a time limit, rejects discarded, no backups, in a temporary
  folder that is removed;
- a patch may fix a config, not remove it: the patched config must parse and keep every object
  (K8s apiVersion/kind/namespace/name, Terraform resource/data/module blocks), else it is refused.
  Without that rule, deleting the file would "remove" every violation (SV-Bench scores patch
  delta by re-scanning, so an empty file earns it all).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from sv_soar.tasks.e2.oracle.process import run_scanner, scratch_dir, write_files
from sv_soar.tasks.e2.oracle.rego import k8s_objects
from sv_soar.tasks.e2.oracle.safe_yaml import (DEFAULT_LIMITS, ConfigRejected, YamlLimits, check_size,
                                               load_yaml_documents, not_utf8)

MAX_PATCH_CHARS = 64 * 1024
PATCH_TIMEOUT_S = 10.0
MAX_JSON_PATCH_OPS = 256


class PatchRejected(ValueError):
    """A patch that is not applied; the message says why."""


@dataclass(frozen=True)
class PatchResult:
    text: str  # the patched config
    format: str  # "unified-diff" or "json-patch"


def patch_format(patch: str) -> str:
    return "json-patch" if patch.lstrip().startswith("[") else "unified-diff"


# --- unified diff ---------------------------------------------------------------------------------

_HEADER = re.compile(r"^(?:---|\+\+\+) (.*)$")
_GIT_PATHS = re.compile(r"^(?:rename from|rename to|copy from|copy to) (.*)$")
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def diff_paths(diff: str) -> list[str]:
    """Every file path a unified diff's headers name (---, +++, diff --git, rename/copy)."""
    paths: list[str] = []
    old_left = new_left = 0
    for line in diff.splitlines():
        if old_left > 0 or new_left > 0:  # inside a hunk: "--- x" there is a removed line
            tag = line[:1]
            if tag in (" ", ""):
                old_left, new_left = old_left - 1, new_left - 1
            elif tag == "-":
                old_left -= 1
            elif tag == "+":
                new_left -= 1
            continue
        hunk = _HUNK.match(line)
        if hunk:
            old_left = int(hunk.group(1)) if hunk.group(1) is not None else 1
            new_left = int(hunk.group(2)) if hunk.group(2) is not None else 1
            continue
        header = _HEADER.match(line) or _GIT_PATHS.match(line)
        if header:
            paths.append(header.group(1).split("\t")[0].strip().strip('"'))
        elif line.startswith("diff --git "):
            paths.extend(part for part in line[len("diff --git "):].split() if part)
    return paths


def check_diff_paths(diff: str) -> None:
    """PatchRejected when a header names a path outside the patch folder."""
    for path in diff_paths(diff):
        pure = PurePosixPath(path.replace("\\", "/"))
        if not path or pure.is_absolute() or re.match(r"^[A-Za-z]:", path) or ".." in pure.parts:
            raise PatchRejected(f"patch touches a path outside its folder: {path[:80]!r}")


def _hunks(diff: str) -> list[tuple[int, list[str], list[str]]]:
    """(old start line, old lines, new lines) of every hunk, lines without their newline."""
    hunks, current, old_left, new_left = [], None, 0, 0
    for line in diff.splitlines():
        if current is not None and (old_left > 0 or new_left > 0):
            tag, body = line[:1], line[1:]
            if line.startswith("\\"):  # "\ No newline at end of file"
                continue
            if tag in (" ", ""):
                current[1].append(body)
                current[2].append(body)
                old_left, new_left = old_left - 1, new_left - 1
            elif tag == "-":
                current[1].append(body)
                old_left -= 1
            elif tag == "+":
                current[2].append(body)
                new_left -= 1
            else:
                raise PatchRejected(f"malformed hunk line {line[:40]!r}")
            continue
        hunk = _HUNK.match(line)
        if hunk:
            start = int(re.match(r"^@@ -(\d+)", line).group(1))
            old_left = int(hunk.group(1)) if hunk.group(1) is not None else 1
            new_left = int(hunk.group(2)) if hunk.group(2) is not None else 1
            current = (start, [], [])
            hunks.append(current)
    if not hunks or old_left > 0 or new_left > 0:
        raise PatchRejected("patch does not apply: no complete hunk")
    return hunks


def apply_unified_diff_in_python(original: str, diff: str) -> str:
    """The strict fallback where GNU patch is not installed (slim images): each hunk's old lines must
    appear exactly, at the stated line or the nearest place after the previous hunk (no fuzz)."""
    check_diff_paths(diff)
    lines = original.splitlines()
    out: list[str] = []
    pos = 0
    for start, old, new in _hunks(diff):
        candidates = [i for i in range(pos, len(lines) - len(old) + 1) if lines[i:i + len(old)] == old]
        if not candidates:
            raise PatchRejected(f"patch does not apply: hunk at line {start} does not match")
        at = min(candidates, key=lambda i: abs(i - (start - 1)))
        out += lines[pos:at] + new
        pos = at + len(old)
    out += lines[pos:]
    return "\n".join(out) + ("\n" if out else "")


def apply_unified_diff(original: str, diff: str, *, timeout_s: float = PATCH_TIMEOUT_S) -> str:
    """`original` with `diff` applied by GNU patch in a temporary folder (the strict Python fallback
    where it is not installed); PatchRejected if it does not apply."""
    check_diff_paths(diff)
    binary = shutil.which("patch")
    if binary is None:
        return apply_unified_diff_in_python(original, diff)
    if not diff.endswith("\n"):
        diff += "\n"
    with scratch_dir("sv-soar-patch-") as tmp:
        work, home = tmp / "work", tmp / "home"
        work.mkdir()
        home.mkdir()
        write_files(work, {"config": original, "fix.diff": diff})
        argv = [binary, "--batch", "--silent", "--forward", "--no-backup-if-mismatch", "--reject-file=-",
                "--input=fix.diff", "config"]
        proc = run_scanner(argv, cwd=work, home=home, timeout_s=timeout_s)
        if proc.returncode != 0:
            why = (proc.stdout + proc.stderr).strip().splitlines()
            raise PatchRejected(f"patch does not apply: {why[0][:160] if why else 'exit ' + str(proc.returncode)}")
        return (work / "config").read_text(encoding="utf-8")


# --- RFC 6902 -------------------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchRejected(f"JSON pointer must be a string starting with '/', got {str(path)[:60]!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]] if path else []


def _index(container: list, token: str, *, append: bool = False) -> int:
    if append and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchRejected(f"bad array index {token[:20]!r}")
    return int(token)


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and _index(node, token) < len(node):
            node = node[int(token)]
        else:
            raise PatchRejected(f"path segment {token[:40]!r} not found")
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and _index(parent, last) < len(parent):
        return parent[int(last)]
    raise PatchRejected(f"path {'/'.join(tokens)[:60]!r} not found")


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchRejected("cannot remove the whole document")
    parent, last = _parent(doc, tokens), tokens[-1]
    value = _get(doc, tokens)
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]
    return value


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        i = _index(parent, last, append=True)
        if i > len(parent):
            raise PatchRejected(f"array index {i} out of range")
        parent.insert(i, value)
    else:
        raise PatchRejected("cannot add under a scalar")
    return doc


def apply_json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test) on a deep copy of `doc`."""
    if not isinstance(ops, list) or len(ops) > MAX_JSON_PATCH_OPS:
        raise PatchRejected(f"a JSON patch is a list of at most {MAX_JSON_PATCH_OPS} operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise PatchRejected("a JSON patch operation must be an object")
        kind, tokens = op.get("op"), _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchRejected(f"{kind} needs a value")
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            if tokens:
                _remove(doc, tokens)
            doc = _add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _get(doc, tokens) != op["value"]:
                raise PatchRejected(f"test failed at {op.get('path')!s:.60}")
        else:
            raise PatchRejected(f"unknown JSON patch op {str(kind)[:20]!r}")
    return doc


def apply_json_patch_to_yaml(original: str, patch: str, limits: YamlLimits = DEFAULT_LIMITS) -> str:
    """A JSON patch on a YAML config: one document is the root; several are a list of documents."""
    try:
        ops = json.loads(patch)
    except (json.JSONDecodeError, RecursionError):
        raise PatchRejected("JSON patch is not valid JSON") from None
    documents = load_yaml_documents(original, limits)
    root = documents[0] if len(documents) == 1 else documents
    patched = apply_json_patch(root, ops)
    out = [patched] if len(documents) == 1 else patched
    if not isinstance(out, list):
        raise PatchRejected("a patch of a multi-document config must keep a list of documents")
    return yaml.safe_dump_all(out, sort_keys=False)


# --- the whole step -------------------------------------------------------------------------------

_TF_BLOCK = re.compile(r'^\s*(resource|data|module)\s+"([^"]+)"(?:\s+"([^"]+)")?', re.M)


def config_objects(text: str, lang: str, limits: YamlLimits = DEFAULT_LIMITS) -> set[tuple]:
    """What a config declares: K8s (apiVersion, kind, namespace, name), Terraform blocks."""
    if lang == "tf":
        return {m.groups() for m in _TF_BLOCK.finditer(text)}
    return {
        (str(o.get("apiVersion", "")), o["kind"], str((o.get("metadata") or {}).get("namespace", "")
                                                     if isinstance(o.get("metadata"), dict) else ""),
         str(o["metadata"].get("name", "")) if isinstance(o.get("metadata"), dict) else "")
        for o in k8s_objects(load_yaml_documents(text, limits))
    }


def apply_patch(original: str, patch: str, lang: str, limits: YamlLimits = DEFAULT_LIMITS) -> PatchResult:
    """The patched config, or PatchRejected (the reason) / ScannerError (no `patch` binary)."""
    if not isinstance(patch, str) or not patch.strip():
        raise PatchRejected("empty patch")
    if len(patch) > MAX_PATCH_CHARS:
        raise PatchRejected(f"patch is {len(patch)} characters, over {MAX_PATCH_CHARS}")
    if why := not_utf8(patch):
        raise PatchRejected(f"patch is not UTF-8 text: {why}")
    fmt = patch_format(patch)
    try:
        if fmt == "json-patch":
            if lang != "k8s":
                raise PatchRejected("JSON patches apply to YAML configs only")
            text = apply_json_patch_to_yaml(original, patch, limits)
        else:
            text = apply_unified_diff(original, patch)
        check_size(text, limits)
        before, after = config_objects(original, lang, limits), config_objects(text, lang, limits)
    except ConfigRejected as exc:
        raise PatchRejected(f"patched config is not usable: {exc}") from None
    if not before <= after:
        missing = sorted(before - after)[0]
        raise PatchRejected(f"patch removes or renames {'/'.join(x for x in missing if x)[:80]}")
    return PatchResult(text, fmt)
