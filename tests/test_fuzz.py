"""Fuzzing every parser of untrusted text (tests/fuzz_targets/) with a small hypothesis budget.

`make test` runs FUZZ_EXAMPLES inputs a target (seconds each); `benchmarks/fuzz.py` runs thousands and
writes RELIABILITY.md's counts. A failure prints the smallest input hypothesis found.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings

from tests.fuzz_targets import TARGETS, missing_requirement

FUZZ_EXAMPLES = int(os.environ.get("SV_SOAR_FUZZ_EXAMPLES", "150"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parser_never_crashes_and_every_rejection_says_why(name):
    target = TARGETS[name]
    if missing := missing_requirement(target):
        pytest.skip(f"{missing}: run it in that venv (benchmarks/fuzz.py --target {name} --merge)")

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(target.strategy())
    def run(value):
        outcome = target.check(value)
        assert isinstance(outcome, str) and (outcome == "accepted" or outcome.split(":")[0] in ("accepted", "rejected"))

    for value in target.examples:
        run = example(value)(run)
    run()


def test_every_parser_of_untrusted_text_has_a_target():
    assert {"teacher-e1", "student-e1", "teacher-e2", "student-e2", "config", "config-overrides", "jsonl",
            "promotion-state", "reward-cache-entry", "chat-request", "tool-calls", "student-service-request",
            # the readers SV-Bench's formats brought (issue 25)
            "saved-results", "saved-results-folder", "e2-row", "e2-svbench", "taskset-v1-args"} <= set(TARGETS)
