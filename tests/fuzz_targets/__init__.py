"""Every parser of untrusted text, as a fuzz target: what it reads, inputs to try, and its contract.

A SOAR run feeds model output and files from disk into these parsers at every step. The contract is
the same for all of them: any input ends in an accepted value or a rejection that says why, never in
an exception of another kind, and never in a value that breaks the next stage.

    TARGETS["teacher-e1"].check(text)  -> "accepted" | "rejected:<reason>"   (AssertionError: broken)

`tests/test_fuzz.py` runs each target under hypothesis with a small budget (make test);
`benchmarks/fuzz.py` runs thousands of examples each and writes the counts for RELIABILITY.md.
Adding a parser is one `@fuzz_target` function with its strategy, in the module of its theme below
(_common.py holds the registry, the contract of a reason and the shared strategies).
"""

from __future__ import annotations

import importlib

from tests.fuzz_targets._common import TARGETS, FuzzTarget, fuzz_target, missing_requirement

# Each theme registers its targets in TARGETS when imported; importing them in this order keeps the order the tests
# and RELIABILITY.md list the targets in (a theme that imports another's helpers finds it imported already).
THEMES = ("e1", "configs_and_state", "serving", "e2", "saved_results", "e2_answers", "v1")
for _theme in THEMES:
    importlib.import_module(f"{__name__}.{_theme}")

__all__ = ["TARGETS", "THEMES", "FuzzTarget", "fuzz_target", "missing_requirement"]
