"""sv-soar-student as verifiers runs it: the dataset it builds and the rubric's real scoring path."""

from __future__ import annotations

import asyncio

import pytest
import verifiers as vf

import sv_soar_student
from rubrics.e1 import E1_SYSTEM_PROMPT, E1_WEIGHTS, E1Parser, completion_text, make_e1_rubric
from sv_soar.tasks import get_task
from tests.scripted_client import ScriptedClient

COMPONENTS = ("reward_accuracy", "format_reward", "reward_calibration", "reward_asymmetric_cost")

# Completions for a Malicious row and their totals worked out by hand (see test_e1_rubric.py):
# (accuracy, format, calibration, asymmetric) . (1.0, 0.1, 0.2, 0.5)
HAND_SCORED = {
    '{"label": "Malicious", "confidence": 0.9}': 1.0 + 0.1 + 0.2 * 0.9 + 0.5,  # 1.78
    '```json\n{"label": "Benign", "confidence": 0.8}\n```': 0.1 + 0.2 * 0.2 - 0.5,  # -0.36
    'I think {"label": "Abstain", "confidence": 0.3} fits': 0.1 + 0.2 * 0.7,  # 0.24
    "no idea": 0.0,
}


@pytest.fixture(scope="module")
def svbench_env(svbench_mini):
    return sv_soar_student.load_environment(source="jsonl", path=str(svbench_mini / "e1.jsonl"))


def _malicious_input(env):
    return next(row for row in env.get_dataset().to_list() if row["answer"] == "Malicious")


def test_builtin_environment_dataset():
    env = sv_soar_student.load_environment(task="e1", source="builtin", n=16, seed=3)
    assert isinstance(env, vf.SingleTurnEnv)
    assert env.env_id == "sv-soar-student"
    dataset = env.get_dataset()
    assert len(dataset) == 16
    assert {"question", "answer", "info", "prompt", "example_id"} <= set(dataset.column_names)
    row = dataset[0]
    assert row["prompt"] == [
        {"role": "system", "content": E1_SYSTEM_PROMPT},
        {"role": "user", "content": row["question"]},
    ]
    assert set(row["info"]) == {"task_name", "breakdown", "source", "hash", "split"}
    assert row["info"]["source"] == "sv-soar-builtin"
    assert sorted(dataset["answer"]).count("Malicious") == 8
    assert isinstance(env.parser, E1Parser)
    # MultiTurnEnv wraps our rubric in a RubricGroup with its own num_turns metric (weight 0)
    assert env.rubric._get_reward_func_names()[:4] == list(COMPONENTS)
    assert env.rubric._get_reward_weights() == [*E1_WEIGHTS, 0.0]


def test_svbench_jsonl_environment_dataset(svbench_env, svbench_mini):
    from sv_soar.jsonl import read_jsonl

    rows = read_jsonl(svbench_mini / "e1.jsonl")
    dataset = svbench_env.get_dataset()
    assert dataset["question"] == [r["question"] for r in rows]
    assert dataset["answer"] == [r["answer"] for r in rows]
    assert {info["breakdown"] for info in dataset["info"]} == {"S0", "OTH", "SF", "S3", "RSTR"}
    sample = sv_soar_student.load_environment(source="jsonl", path=str(svbench_mini), n=10)
    assert len(sample.get_dataset()) == 10


def test_system_prompt_override():
    env = sv_soar_student.load_environment(n=2, system_prompt="Answer in JSON.")
    assert env.get_dataset()[0]["prompt"][0] == {"role": "system", "content": "Answer in JSON."}


def test_empty_problem_set_is_refused():
    with pytest.raises(ValueError, match="no e1 rows"):
        sv_soar_student.load_environment(n=0)


def test_rollout_group_scored_by_verifiers_score_group(svbench_env):
    """A real rollout group (env.run_group -> rollouts -> Rubric.score_group), model scripted."""
    example = _malicious_input(svbench_env)
    client = ScriptedClient(list(HAND_SCORED))
    outputs = asyncio.run(svbench_env.run_group([example] * 4, client, "scripted", {}))
    seen = {}
    for output in outputs:
        text = completion_text(output["completion"])
        seen[text] = output["reward"]
        assert output["reward"] == pytest.approx(HAND_SCORED[text])
        # the task interface scores the same text identically, component by component
        row = {"question": example["question"], "answer": example["answer"]}
        components = {name: output["metrics"][name] for name in COMPONENTS}
        assert get_task("e1").score(text, row) == {**components, "reward": output["reward"]}
    assert set(seen) == set(HAND_SCORED)


def test_rollout_scored_by_verifiers_score_rollout(svbench_env):
    example = _malicious_input(svbench_env)
    client = ScriptedClient(['{"label": "Malicious", "confidence": 0.9, "rationale": "single SYN"}'])
    output = asyncio.run(svbench_env.run_rollout(example, client, "scripted", {}))
    assert output["reward"] == pytest.approx(1.78)
    assert output["metrics"] == pytest.approx(
        {
            "reward_accuracy": 1.0,
            "format_reward": 1.0,
            "reward_calibration": 0.9,
            "reward_asymmetric_cost": 1.0,
            "num_turns": 1.0,  # MultiTurnEnv's own metric, weight 0
        }
    )


def test_states_built_by_init_state_score_like_a_rollout(svbench_env):
    """States made the way verifiers makes them (Environment.init_state), completion filled in."""
    example = _malicious_input(svbench_env)

    async def score():
        states = []
        for text in HAND_SCORED:
            state = await svbench_env.init_state(example, ScriptedClient(["unused"]), "scripted")
            state["completion"] = [vf.AssistantMessage(content=text)]
            states.append(state)
        await svbench_env.rubric.score_rollout(states[0])
        single = states[0]["reward"]
        await svbench_env.rubric.score_group(states)
        group = [state["reward"] for state in states]
        # the E1 rubric alone also sets group advantages (the env's RubricGroup lets its
        # trailing num_turns rubric overwrite them)
        await make_e1_rubric(E1Parser()).score_group(states)
        return single, group, states

    single, group, states = asyncio.run(score())
    assert single == pytest.approx(1.78)
    assert group == pytest.approx(list(HAND_SCORED.values()))
    assert [state["reward"] for state in states] == group
    mean = sum(HAND_SCORED.values()) / 4  # 0.415
    assert [state["advantage"] for state in states] == pytest.approx([r - mean for r in HAND_SCORED.values()])
