"""Finding the JSON object in a model's answer, in one place: one search, two named settings.

A model writes its JSON answer raw, in a ``` fence, or inside prose. `json_values` tries, in order, the whole
text, its fenced blocks, then balanced {...} (SV-Bench's brace walk, `matching_brace`), and yields each
candidate that decodes. How far it looks, and what a repeated key means, is the reader's setting:

- `SVBENCH`, the rubrics (`extract_json_object`, used by sv_soar.tasks.e1.scoring and e2): exactly SV-Bench's
  JsonClassificationParser (security-verifiers-utils 0.3.1): the raw text, the first ```json fence, the
  {...} that opens at the first "{"; the first candidate that decodes to an object wins, and a repeated key
  keeps its last value, as json.loads does (tests/test_e1_svbench_parity.py).
- `TEACHER_PROBLEM`, the teacher's problem checks (sv_soar.teacher.checks, which takes the first value found
  and rejects it unless it is one object): the stripped text, up to 8 fences (```json, ```JSON,
  ```javascript), {...} from up to 16 "{" positions (bounding the scan at 16 x the text's length); a
  repeated key raises DuplicateKey, so that a repeated "answer" cannot silently win.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JsonSearch:
    """Where `json_values` looks for JSON in a text, and what it accepts."""

    fence: re.Pattern[str]  # a fenced block; group 1 is its body
    fences: int  # fenced blocks tried
    brace_starts: int  # "{" positions a balanced {...} is tried from
    strip: bool  # the whole text is tried stripped (else as it is)
    unique_keys: bool  # a repeated key raises DuplicateKey (else the last value wins)
    not_json: tuple[type[Exception], ...]  # decoding errors that only mean "not this candidate"


SVBENCH = JsonSearch(
    fence=re.compile(r"```(?:json)?\s*\n?(.*?)\n?```", re.DOTALL | re.IGNORECASE),  # SV-Bench's, lazily to the next ```
    fences=1, brace_starts=1, strip=False, unique_keys=False, not_json=(json.JSONDecodeError, RecursionError),
)
TEACHER_PROBLEM = JsonSearch(
    fence=re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\r?\n?(.*?)```", re.DOTALL),
    fences=8, brace_starts=16, strip=True, unique_keys=True, not_json=(ValueError, RecursionError),
)


class DuplicateKey(ValueError):
    """A JSON object names one key twice (TEACHER_PROBLEM); the message is the key."""


def extract_json_object(text: str, max_chars: int | None = None) -> dict[str, Any] | None:
    """SV-Bench's answer object: raw JSON, else the first fenced block, else the first balanced {...}; None when
    none decodes to an object. `max_chars` cuts the text first (the rubric's opt-in cap; SV-Bench has none)."""
    if max_chars is not None:
        text = text[:max_chars]
    return next((value for value in json_values(text, SVBENCH) if isinstance(value, dict)), None)


def json_values(text: str, search: JsonSearch) -> Iterator[Any]:
    """The decoded value of each candidate in `text`, in search order; a candidate that is not JSON is skipped."""
    loads = _loads_unique_keys if search.unique_keys else json.loads
    for candidate in _candidates(text, search):
        if not candidate:
            continue
        try:
            value = loads(candidate)
        except DuplicateKey:
            raise
        except search.not_json:
            continue
        yield value


def matching_brace(text: str, start: int) -> int | None:
    """Index of the '}' closing text[start] == '{', skipping braces inside JSON strings, or None.

    Same walk as SV-Bench's `extract_json_object`: a backslash skips the next character wherever it
    stands, a double quote toggles "inside a string", braces count only outside strings.
    """
    depth, in_string, escaped_at = 0, False, -1
    for m in _BRACE_SPECIAL.finditer(text, start):
        i, c = m.start(), m.group()
        if i == escaped_at:
            continue
        if c == "\\":
            escaped_at = i + 1
        elif c == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def first_balanced_object(text: str) -> str | None:
    """The `{...}` that opens at the first "{" of `text` and closes at its matching "}", or None."""
    start = text.find("{")
    if start == -1:
        return None
    end = matching_brace(text, start)
    return text[start : end + 1] if end is not None else None


_BRACE_SPECIAL = re.compile(r'[{}"\\]')


def _candidates(text: str, search: JsonSearch) -> Iterator[str]:
    yield text.strip() if search.strip else text
    for k, m in enumerate(search.fence.finditer(text)):
        if k >= search.fences:
            break
        yield m.group(1).strip()
    start = text.find("{")
    for _ in range(search.brace_starts):
        if start == -1:
            return
        end = matching_brace(text, start)
        if end is not None:
            yield text[start : end + 1]
        start = text.find("{", start + 1)


def _loads_unique_keys(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_no_duplicate_keys)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out
