"""SV-Bench's E1 parser and rubric, against values computed by hand.

Weights (SV-Bench sv_env_network_logs.py): accuracy 1.0, format 0.1, calibration 0.2, asymmetric 0.5.
Each case lists (accuracy, format, calibration, asymmetric) and the total worked out on paper.
"""

from __future__ import annotations

import time

import pytest
import verifiers as vf

from rubrics.e1 import (
    E1_WEIGHTS,
    MAX_PARSE_CHARS,
    E1Output,
    E1Parser,
    e1_components,
    format_reward,
    parse_e1_output,
    reward_accuracy,
    reward_asymmetric_cost,
    reward_calibration,
)
from sv_soar.scoring.json_object import first_balanced_object
from sv_soar.tasks import get_task

COMPONENTS = ("reward_accuracy", "format_reward", "reward_calibration", "reward_asymmetric_cost")

CASES = [
    # id, completion text, answer, (accuracy, format, calibration, asymmetric), total
    (
        "raw-json",
        '{"label": "Malicious", "confidence": 0.9, "rationale": "SYN to 23 never retried"}',
        "Malicious",
        (1.0, 1.0, 0.9, 1.0),
        1.0 + 0.1 + 0.2 * 0.9 + 0.5,  # 1.78
    ),
    (
        "fenced-json-missed-attack",
        'Here is my verdict:\n```json\n{"label": "Benign", "confidence": 0.8}\n```',
        "Malicious",
        (0.0, 1.0, 0.2, -1.0),  # calibration 1 - |0.8 - 0|
        0.1 + 0.2 * 0.2 - 0.5,  # -0.36
    ),
    (
        "fenced-without-language-tag",
        '```\n{"label": "Benign", "confidence": 1}\n```',
        "Benign",
        (1.0, 1.0, 1.0, 1.0),
        1.8,
    ),
    (
        "trailing-prose",
        '{"label": "Benign", "confidence": 0.7} I hope this helps.',
        "Benign",
        (1.0, 1.0, 0.7, 1.0),
        1.0 + 0.1 + 0.14 + 0.5,  # 1.74
    ),
    (
        "prose-before-false-positive",
        'Analysis: looks like a scan.\n{"label": "Malicious", "confidence": 0.6}',
        "Benign",
        (0.0, 1.0, 0.4, 0.0),  # a false positive costs nothing in asymmetric cost
        0.1 + 0.2 * 0.4,  # 0.18
    ),
    (
        "confidence-above-one",
        '{"label": "Malicious", "confidence": 1.5}',
        "Malicious",
        (1.0, 0.0, 0.0, 1.0),  # out of range -> SV-Bench counts confidence 0.0: 1 - |0 - 1|
        1.5,
    ),
    (
        "confidence-negative-wrong-label",
        '{"label": "Benign", "confidence": -0.2}',
        "Malicious",
        (0.0, 0.0, 1.0, -1.0),  # confidence 0.0 on a wrong label: 1 - |0 - 0| = 1 (SV-Bench's quirk)
        0.2 - 0.5,  # -0.3
    ),
    (
        "confidence-missing",
        '{"label": "Malicious"}',
        "Malicious",
        (1.0, 0.0, 0.0, 1.0),
        1.5,
    ),
    (
        "confidence-string",
        '{"label": "Malicious", "confidence": "0.9"}',
        "Malicious",
        (1.0, 0.0, 0.9, 1.0),  # SV-Bench: float("0.9") counts for calibration, not for format
        1.5 + 0.2 * 0.9,
    ),
    (
        "confidence-true",
        '{"label": "Malicious", "confidence": true}',
        "Malicious",
        (1.0, 1.0, 1.0, 1.0),  # SV-Bench: isinstance(True, int) and float(True) == 1.0
        1.8,
    ),
    (
        "abstain",
        '{"label": "Abstain", "confidence": 0.3, "rationale": "not enough context"}',
        "Malicious",
        (0.0, 1.0, 0.7, 0.0),  # Abstain is never correct: calibration 1 - |0.3 - 0|
        0.1 + 0.2 * 0.7,  # 0.24
    ),
    (
        "wrong-case-label",
        '{"label": "malicious", "confidence": 0.9}',
        "Malicious",
        (0.0, 0.0, 0.0, 0.0),
        0.0,
    ),
    ("empty", "", "Malicious", (0.0, 0.0, 0.0, 0.0), 0.0),
    ("no-json", "Malicious, fairly sure.", "Malicious", (0.0, 0.0, 0.0, 0.0), 0.0),
    (
        "braces-inside-strings",
        'Verdict: {"label": "Malicious", "confidence": 0.5, '
        '"rationale": "history {\\"S\\": 1} and a stray } brace"} -- end',
        "Malicious",
        (1.0, 1.0, 0.5, 1.0),
        1.0 + 0.1 + 0.1 + 0.5,  # 1.7
    ),
    (
        "first-object-is-not-the-answer",
        'Flags {S} mean a SYN. {"label": "Malicious", "confidence": 0.9}',
        "Malicious",
        (0.0, 0.0, 0.0, 0.0),  # like SV-Bench, only the object at the first "{" is tried
        0.0,
    ),
]


@pytest.mark.parametrize("case_id, text, answer, expected, total", CASES, ids=[c[0] for c in CASES])
def test_components_and_total_match_hand_computed_values(case_id, text, answer, expected, total):
    scores = e1_components(parse_e1_output(text), answer)
    assert tuple(scores[name] for name in COMPONENTS) == pytest.approx(expected)
    assert scores["reward"] == pytest.approx(total)
    assert sum(v * w for v, w in zip(expected, E1_WEIGHTS)) == pytest.approx(total)  # the paper sum
    # the Task interface returns the same numbers
    assert get_task("e1").score(text, {"question": "q", "answer": answer}) == scores


@pytest.mark.parametrize("case_id, text, answer, expected, total", CASES, ids=[c[0] for c in CASES])
def test_named_reward_functions_agree_on_chat_completions(case_id, text, answer, expected, total):
    parser = E1Parser()
    completion = [{"role": "assistant", "content": text}]
    funcs = (reward_accuracy, format_reward, reward_calibration, reward_asymmetric_cost)
    got = tuple(f(completion=completion, answer=answer, parser=parser) for f in funcs)
    assert got == pytest.approx(expected)
    assert all(f.__doc__ and "\n" not in f.__doc__.strip() for f in funcs)


def test_parsed_fields():
    out = parse_e1_output('```json\n{"label": "Benign", "confidence": 0, "rationale": "DNS"}\n```')
    assert out == E1Output(label="Benign", confidence=0.0, rationale="DNS", numeric_confidence=True)
    assert parse_e1_output('{"label": "Benign", "confidence": 0.4, "rationale": 7}').rationale is None
    assert parse_e1_output('{"label": "Benign", "confidence": NaN}').confidence is None
    assert parse_e1_output('["Benign", 0.9]') is None  # JSON, but not an object
    assert parse_e1_output(None) is None


def test_parser_is_a_verifiers_parser_returning_the_label():
    parser = E1Parser()
    assert isinstance(parser, vf.Parser)
    text = '{"label": "Abstain", "confidence": 0.5}'
    assert parser.parse_answer(text) == "Abstain"
    chat = [{"role": "user", "content": "x"}, {"role": "assistant", "content": text}]
    assert parser.parse_answer(chat) == "Abstain"
    # completions inside verifiers' State are pydantic messages, not dicts
    assert parser.parse_answer([vf.AssistantMessage(content=text)]) == "Abstain"
    assert parser.parse_answer([{"role": "assistant", "content": "no json"}]) is None
    # SV-Bench reads the LAST message, whatever its role (get_response_text)
    assert parser.parse_answer([{"role": "assistant", "content": text}, {"role": "user", "content": "x"}]) is None
    assert parser.get_format_reward_func() is format_reward


def test_string_aware_brace_matching():
    assert first_balanced_object('a {"x": "}"} b') == '{"x": "}"}'
    assert first_balanced_object('{"x": "\\"}"}') == '{"x": "\\"}"}'
    assert first_balanced_object('{"x": {"y": 1}} tail }') == '{"x": {"y": 1}}'
    assert first_balanced_object('{"never": "closed"') is None
    assert first_balanced_object("no braces") is None


def test_huge_inputs_are_cut_at_the_cap_and_stay_fast():
    answer = '{"label": "Malicious", "confidence": 0.9}'
    start = time.perf_counter()
    # an answer up front followed by megabytes of rambling still parses ...
    assert parse_e1_output(answer + " and so on" * 200_000).label == "Malicious"
    # ... with the opt-in cap, one that starts after the first 64 KiB is not read ...
    assert parse_e1_output("x" * MAX_PARSE_CHARS + answer, MAX_PARSE_CHARS) is None
    assert parse_e1_output("x" * MAX_PARSE_CHARS + answer).label == "Malicious"  # off by default, as SV-Bench
    # ... nor one that opens inside the window but closes after it
    long = '{"label": "Malicious", "rationale": "' + "a" * MAX_PARSE_CHARS + '"}'
    assert parse_e1_output(long, MAX_PARSE_CHARS) is None
    # pathological shapes: endless nesting, an unclosed fence, a flood of quotes
    assert parse_e1_output("{" * 2_000_000) is None
    assert parse_e1_output("```json\n" + "{" * 500_000) is None
    assert parse_e1_output('"' * 2_000_000) is None
    assert parse_e1_output("[" * 100_000) is None  # deep JSON nesting must not raise RecursionError
    assert time.perf_counter() - start < 5.0
