"""E1 = SV-Bench, differentially: our rubric against SV-Bench's own code, component by component.

The reference is SV-Bench's E1 parser and reward functions as published on PyPI
(`security-verifiers-utils==0.3.1`: sv_shared.parsers.JsonClassificationParser, sv_shared.rewards),
installed by `make setup` as a test-only dependency. Hypothesis generates 5,000 completions in the
shapes models write (raw JSON, fenced, prose around, several objects, braces and backslashes in and
out of strings, labels in any case, confidences as numbers, strings, bools, NaN, out of range, missing),
each scored against every answer SV-Bench's rows can carry (labels in any case, ClassLabel ints and
bools, the empty string): every component and the weighted total must be equal.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rubrics.e1 import (
    E1_LABELS,
    E1_WEIGHTS,
    E1Parser,
    format_reward,
    make_e1_rubric,
    reward_accuracy,
    reward_asymmetric_cost,
    reward_calibration,
)

sv_parsers = pytest.importorskip("sv_shared.parsers", reason="make setup installs security-verifiers-utils==0.3.1")
sv_rewards = pytest.importorskip("sv_shared.rewards")

N_COMPLETIONS = 5_000
ANSWERS = ("Malicious", "Benign", "malicious", "BENIGN", "Abstain", "", 0, 1, 2, True, False)
COMPONENTS = ("reward_accuracy", "format_reward", "reward_calibration", "reward_asymmetric_cost")


def svbench_scores(completion, answer) -> dict[str, float]:
    """SV-Bench's four E1 components, called as its env's vf.Rubric calls them."""
    parser = sv_parsers.JsonClassificationParser(allowed_labels=list(E1_LABELS))
    kwargs = {"completion": completion, "answer": answer, "parser": parser}
    return {
        "reward_accuracy": sv_rewards.reward_accuracy(**kwargs),
        "format_reward": parser.get_format_reward_func()(**kwargs),
        "reward_calibration": sv_rewards.reward_calibration(**kwargs),
        "reward_asymmetric_cost": sv_rewards.reward_asymmetric_cost(**kwargs),
    }


OURS = dict(zip(COMPONENTS, (reward_accuracy, format_reward, reward_calibration, reward_asymmetric_cost)))


def our_scores(completion, answer) -> dict[str, float]:
    parser = E1Parser()
    return {name: f(completion=completion, answer=answer, parser=parser) for name, f in OURS.items()}


# --- generated completions ------------------------------------------------------------------------

labels = st.sampled_from(E1_LABELS) | st.sampled_from(("malicious", "BENIGN", "abstain", "Unknown", "")) | st.sampled_from(
    (None, 1, True, ["Malicious"])
)
confidences = (
    st.floats(min_value=-0.5, max_value=1.5, allow_nan=False)
    | st.sampled_from((0, 1, 2, -1, True, False, None, float("nan"), float("inf"), -float("inf"), 1e308))
    | st.floats(min_value=-0.5, max_value=1.5, allow_nan=False).map(lambda f: repr(round(f, 3)))  # "0.9"
    | st.sampled_from(("0.9", " 0.5 ", "1", "1e-1", "0_5", "nan", "high", "", "[0.3]"))
    | st.sampled_from(([0.3], {"v": 0.3}))
)
rationales = st.text(alphabet='ab {}"\\\n', max_size=12) | st.sampled_from(("DNS", 7, None))


@st.composite
def answer_objects(draw) -> str:
    obj = {}
    if draw(st.booleans()) or True:
        obj["label"] = draw(labels)
    if draw(st.integers(0, 4)):  # mostly present
        obj["confidence"] = draw(confidences)
    if draw(st.booleans()):
        obj["rationale"] = draw(rationales)
    keys = list(obj)
    order = draw(st.permutations(keys))
    text = json.dumps({k: obj[k] for k in order}, allow_nan=True, indent=draw(st.sampled_from((None, 2))))
    if draw(st.integers(0, 9)) == 0:  # truncated JSON
        text = text[: draw(st.integers(0, len(text)))]
    return text


noise = st.text(alphabet='ab {}[]"\\`:\n', max_size=10) | st.sampled_from(
    ("", "Here is my verdict:\n", "<think>hmm {x}</think>", "Flags {S} mean a SYN. ", " I hope this helps.", "\\", '"')
)


@st.composite
def completion_texts(draw) -> str:
    first = draw(answer_objects())
    shape = draw(st.sampled_from(("raw", "fenced", "prose", "two", "fenced-prose", "noise")))
    if shape == "raw":
        return first
    if shape == "fenced":
        tag = draw(st.sampled_from(("json", "JSON", "", "Json", "python")))
        return f"```{tag}\n{first}\n```"
    if shape == "prose":
        return draw(noise) + first + draw(noise)
    if shape == "two":
        return first + draw(noise) + draw(answer_objects())
    if shape == "fenced-prose":
        return draw(noise) + f"```json\n{first}```" + draw(noise) + f"```\n{draw(answer_objects())}\n```"
    return draw(noise) + draw(noise)


completions = (
    completion_texts()
    | completion_texts().map(lambda t: [{"role": "assistant", "content": t}])
    | completion_texts().map(lambda t: [{"role": "user", "content": "q"}, {"role": "assistant", "content": t}])
    | st.sampled_from(([], [{"role": "assistant", "content": None}], None))
)

COUNTED: list[int] = []


@pytest.mark.slow  # 5000 completions; the count check below is slow-marked with it
@settings(max_examples=N_COMPLETIONS, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(completion=completions)
def test_every_component_equals_svbench(completion):
    COUNTED.append(1)
    for answer in ANSWERS:
        theirs, ours = svbench_scores(completion, answer), our_scores(completion, answer)
        assert ours == theirs, (completion, answer)


@pytest.mark.slow
def test_the_differential_test_ran_on_at_least_5000_completions():
    # runs after test_every_component_equals_svbench in file order
    assert len(COUNTED) >= N_COMPLETIONS, len(COUNTED)


# --- the hand cases of the issue, with SV-Bench's values --------------------------------------------

HAND_CASES = [
    # completion, answer, SV-Bench's (accuracy, format, calibration, asymmetric)
    ('{"label": "Malicious", "confidence": 0.9}', "malicious", (1.0, 1.0, 0.9, 1.0)),  # answer lower case
    ('{"label": "Malicious", "confidence": "0.9"}', "Malicious", (1.0, 0.0, 0.9, 1.0)),  # string confidence
    ('{"label": "Malicious", "confidence": true}', "Malicious", (1.0, 1.0, 1.0, 1.0)),  # bool confidence
    ('{"label": "Malicious", "confidence": 0.9}', 1, (1.0, 1.0, 0.9, 1.0)),  # ClassLabel int answer
    ('{"label": "Benign", "confidence": 0.9}', False, (1.0, 1.0, 0.9, 1.0)),  # bool answer
    ('{"label": "Benign", "confidence": 0.9}', True, (0.0, 1.0, 0.1, -1.0)),
]


@pytest.mark.parametrize("text, answer, expected", HAND_CASES)
def test_issue_hand_cases_score_svbench_values(text, answer, expected):
    completion = [{"role": "assistant", "content": text}]
    theirs = svbench_scores(completion, answer)
    assert tuple(theirs[c] for c in COMPONENTS) == pytest.approx(expected)
    assert our_scores(completion, answer) == theirs


def test_rubric_total_uses_svbench_weights():
    rubric = make_e1_rubric()
    assert list(rubric.weights) == list(E1_WEIGHTS) == [1.0, 0.1, 0.2, 0.5]
    assert [f.__name__ for f in rubric.funcs] == list(COMPONENTS)


def test_parse_cap_is_an_option_off_by_default():
    answer = '{"label": "Malicious", "confidence": 0.9}'
    late = "x" * 70_000 + answer
    completion = [{"role": "assistant", "content": late}]
    assert our_scores(completion, "Malicious") == svbench_scores(completion, "Malicious")
    assert our_scores(completion, "Malicious")["reward_accuracy"] == 1.0
    capped = E1Parser(max_parse_chars=64 * 1024)
    assert reward_accuracy(completion=completion, answer="Malicious", parser=capped) == 0.0
