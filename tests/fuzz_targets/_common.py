"""The fuzz targets' registry and the helpers every theme shares: a target, its registration, the
contract of a rejection's reason, and the strategies the themes build on."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

# A rejection names the problem and never echoes a whole input back: each line of it is short (a config
# with many bad keys lists one line a key).
MAX_REASON_LINE_CHARS = 1000


@dataclass(frozen=True)
class FuzzTarget:
    name: str
    parses: str  # what untrusted input it reads, for RELIABILITY.md
    strategy: Callable[[], st.SearchStrategy]
    check: Callable[[Any], str]
    examples: tuple = ()  # inputs always tried first: the crashes fuzzing found, kept as regressions
    needs: str | None = None  # a distribution only another venv has, "verifiers>=0.4" (the v1 envs' venv), else None


TARGETS: dict[str, FuzzTarget] = {}


def fuzz_target(name: str, parses: str, strategy: Callable[[], st.SearchStrategy], examples: tuple = (),
                needs: str | None = None):
    def register(check: Callable[[Any], str]) -> Callable[[Any], str]:
        assert name not in TARGETS, f"two fuzz targets named {name}"
        TARGETS[name] = FuzzTarget(name, parses, strategy, check, examples, needs)
        return check

    return register


def missing_requirement(target: FuzzTarget) -> str | None:
    """Why `target` cannot run in this venv (its `needs` is not installed here), or None when it can."""
    if target.needs is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    requirement = Requirement(target.needs)
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        return f"{target.name} needs {target.needs}, not installed here"
    if installed not in requirement.specifier:
        return f"{target.name} needs {target.needs}, this venv has {installed}"
    return None


def _reason(message: Any, where: str = "") -> str:
    text = str(message)
    assert text.strip(), f"a rejection without a reason: {message!r}"
    longest = max(len(line) for line in text.splitlines())
    assert longest <= MAX_REASON_LINE_CHARS, f"a {longest}-character line of a reason echoes its input"
    if where:
        assert text.startswith(where), f"reason does not name {where!r}: {text[:120]!r}"
    return text


def _check_file_reader(text: str, name: str, read: Callable[[Path], Any], error: type[Exception], result: type,
                       rejected: str) -> str:
    """A reader of one file: `text` written to `name` is read back into `result`, or refused by `error`
    naming the file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            value = read(path)
        except error as exc:
            _reason(exc, where=str(path))
            return f"rejected:{rejected}"
        assert isinstance(value, result)
        return "accepted"


# --------------------------------------------------------------------------------- building blocks

JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
# Text that tends to break parsers: braces, quotes, fences, escapes, chat tokens, odd unicode.
NASTY = st.sampled_from(["{", "}", '"', "\\", "```", "```json\n", "\n", "\r\n", "\x00", "\u2028", "\ufeff",
                         "\u200b", "<|im_start|>", "→", "->", "NaN", "Infinity", "-0", "1e999", "[" * 50,
                         "{" * 200, "]" * 50, "Ｍalicious", "İ", "ß"])


def _mangled(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`core` with noise around and inside it: prose, fences, and nasty fragments spliced in."""

    @st.composite
    def build(draw):
        text = draw(core)
        for _ in range(draw(st.integers(0, 3))):
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(NASTY | st.text(max_size=8)) + text[at:]
        wrap = draw(st.sampled_from(["{}", "```json\n{}\n```", "Here is the problem: {} Done.", "{}{}", "```\n{}"]))
        return wrap.replace("{}", text, 1).replace("{}", text)

    return st.one_of(core, build(), st.text(max_size=300), st.lists(NASTY, max_size=30).map("".join))
