"""When a decoded row stops: a stop string, or the end of the first complete JSON object (`stop_at_json_end`),
checked on the newly decoded text only (incremental detokenisation). Used by TransformersEngine; the vLLM
engine reuses `json_object_end`."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any


class JsonEndScanner:
    """Where the first balanced top-level {...} closes, in text fed chunk by chunk.

    Text before the first "{" (prose, a ```json fence) is skipped; braces inside JSON strings
    (escapes included) do not count. After the object has closed, feed() returns None.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.closed = False

    def feed(self, chunk: str) -> int | None:
        """Index in `chunk` just past the closing "}", or None if the object is still open."""
        if self.closed:
            return None
        for index, char in enumerate(chunk):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == "{":
                self.depth += 1
            elif self.depth and char == '"':
                self.in_string = True
            elif self.depth and char == "}":
                self.depth -= 1
                if self.depth == 0:
                    self.closed = True
                    return index + 1
        return None


def json_object_end(text: str) -> int | None:
    """Index just past the first balanced top-level {...} of `text`, or None if none closes."""
    return JsonEndScanner().feed(text)


class StopWatcher:
    """Decodes one row's tokens incrementally and reports where its text must be cut.

    Incremental detokenisation as vLLM does it: each step decodes a short window of recent tokens
    and keeps the new suffix, holding text back while it ends in an incomplete UTF-8 sequence.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str], json_end: bool) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.json = JsonEndScanner() if json_end else None
        self.ids: list[int] = []
        self.text = ""
        self.text_ends: list[int] = []  # len(self.text) after each token
        self.cut: int | None = None
        self._prefix_offset = 0
        self._read_offset = 0
        self._prefix_text = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> bool:
        """Add one generated token; True once a stop string or the JSON end has appeared."""
        self.ids.append(token_id)
        window = self._decode(self.ids[self._prefix_offset :])
        if len(window) > len(self._prefix_text) and not window.endswith("\ufffd"):
            new = window[len(self._prefix_text) :]
            start = len(self.text)
            self.text += new
            self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
            self._prefix_text = self._decode(self.ids[self._prefix_offset : self._read_offset])
            self.cut = self._find_cut(start, new)
        self.text_ends.append(len(self.text))
        return self.cut is not None

    def _find_cut(self, start: int, new: str) -> int | None:
        cuts = []
        if self.json is not None:
            end = self.json.feed(new)
            if end is not None:
                cuts.append(start + end)
        if self.stop:
            search_from = max(0, start - self.longest_stop + 1)  # a stop string may straddle chunks
            for stop in self.stop:
                found = self.text.find(stop, search_from)
                if found != -1:
                    cuts.append(found)
        return min(cuts) if cuts else None

    def tokens_covering_cut(self) -> int:
        """How many tokens the shortest prefix whose text covers text[:cut] has."""
        assert self.cut is not None
        return bisect.bisect_left(self.text_ends, self.cut) + 1 if self.cut > 0 else 0
