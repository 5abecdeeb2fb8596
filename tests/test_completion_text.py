"""One completion-text reader, two documented readings of a multi-turn rollout (sv_soar/scoring/completion_text.py):
the rubric scores the last assistant message, hard-set mining's --rescore every assistant message."""

from __future__ import annotations

import pytest

from sv_soar.scoring.completion_text import completion_text

# An E2 rollout with a tool call: the first assistant turn thinks aloud, the last one answers.
FINAL = '{"violations": [{"id": "kube-linter/privileged-container"}], "patch": "", "confidence": 0.8}'
MULTI_TURN = [
    {"role": "assistant", "content": "Let me run the linter first."},
    {"role": "tool", "content": "privileged-container: pod.yaml"},
    {"role": "assistant", "content": FINAL},
]


def test_the_rubric_reads_the_last_assistant_message_and_mining_reads_all_of_them():
    assert completion_text(MULTI_TURN) == FINAL
    assert completion_text(MULTI_TURN, turns="all") == "Let me run the linter first." + FINAL


def test_a_string_is_the_answer_under_either_reading():
    assert completion_text(FINAL) == completion_text(FINAL, turns="all") == FINAL
    assert completion_text(None) == completion_text(None, turns="all") == ""


def test_saved_results_keep_a_reasoning_models_answer_and_refuse_what_is_not_a_completion():
    reasoning = [{"role": "assistant", "content": None, "reasoning_content": FINAL}]
    assert completion_text(reasoning, turns="all") == FINAL
    assert completion_text(reasoning) == ""  # the rubric scores the content a client would see
    with pytest.raises(ValueError, match="neither text nor chat messages"):
        completion_text({"content": FINAL}, turns="all")
    with pytest.raises(ValueError, match="turns must be 'last' or 'all'"):
        completion_text(MULTI_TURN, turns="first")
