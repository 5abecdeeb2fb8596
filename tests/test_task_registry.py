"""Adding a task is one registration: a toy task ("parity": is a number odd or even), registered inside this
test, runs through hard-set mining (`sv-soar hardset`), `sv-soar score` and the v0 teacher environment with the
tiny real model, and is gone from every choice list once the test ends.

Everything the toy task needs is written here: its rows, its student prompt and JSON answer parser, its
teacher prompt and problem parser. Nothing in sv_soar/ names it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re

import pytest

from sv_soar.cli import main
from sv_soar.config import ConfigError, parse_config
from sv_soar.jsonl import read_jsonl, write_jsonl
from sv_soar.tasks import Row, Task, get_task, register_task, scoring_task, task_names, unregister_task
from sv_soar.teacher.checks import RejectReason, Rejection, TeacherProblem
from sv_soar.teacher.contamination import question_hash

pytestmark = pytest.mark.usefixtures("one_thread")  # the tiny model: ~6 s on a loaded 2-core machine

ANSWERS = ("odd", "even")
STUDENT = {"steps": 1, "steps_after_promotion": 1, "batch_prompts": 2, "group_size": 2, "max_new_tokens": 8}


def parity_question(number: int) -> str:
    return f"Is {number} odd or even?"  # short: questions about two numbers are no near-duplicates


def parity_row(number: int) -> Row:
    return {"question": parity_question(number), "answer": ANSWERS[number % 2 == 0], "meta": {"number": number}}


def first_json_object(text: str) -> dict | None:
    """The toy task's own answer parser: the first {...} of the text that decodes to a JSON object."""
    for match in re.finditer(r"\{[^{}]*\}", text):
        try:
            value = json.loads(match.group())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parsed_answer(text: str) -> str | None:
    value = (first_json_object(text) or {}).get("answer")
    return value if value in ANSWERS else None


def score(text: str, row: Row) -> dict[str, float]:
    accuracy = float(parsed_answer(text) == row["answer"])
    return {"accuracy": accuracy, "format": float(parsed_answer(text) is not None), "reward": accuracy}


def validate_row(value) -> Row:
    if not isinstance(value, dict) or not isinstance(value.get("question"), str) or not value["question"].strip():
        raise ValueError("'question' must be a non-empty string")
    if value.get("answer") not in ANSWERS:
        raise ValueError(f"'answer' is {value.get('answer')!r}: expected 'odd' or 'even'")
    return {"question": value["question"], "answer": value["answer"], "meta": dict(value.get("meta") or {})}


def teacher_prompt(**options):
    if options:
        raise ValueError(f"task 'parity' takes no prompt options, got {sorted(options)}")
    return [{"role": "system", "content": "You write practice problems about odd and even numbers."},
            {"role": "user", "content": 'Pick ONE whole number. Reply with only {"number": <the number>}.'}]


def parse_problem(text, *, limits=None, hard_set_index=None, options=None):
    """A teacher completion {"number": n} becomes the row asking about n; anything else is a Rejection."""
    value = first_json_object(text) if isinstance(text, str) else None
    if value is None:
        return Rejection(RejectReason.NOT_JSON, "no JSON object")
    number = value.get("number")
    if not isinstance(number, int) or isinstance(number, bool):
        return Rejection(RejectReason.SCHEMA, "number: not an integer")
    row = parity_row(number)
    if hard_set_index is not None and hard_set_index.is_near_duplicate(row["question"])[0]:
        return Rejection(RejectReason.DUPLICATE_OF_HARD_SET, f"asks about {number}, a hard-set number")
    return TeacherProblem(question=row["question"], answer=row["answer"], hash=question_hash(row["question"]),
                          task="parity")


PARITY = Task(
    name="parity",
    system_prompt='Answer with one JSON object: {"answer": "odd"} or {"answer": "even"}.',
    score=score,
    is_success=lambda text, row: parsed_answer(text) == row["answer"],
    breakdown=lambda row: row["answer"],
    validate_row=validate_row,
    answer_tokens=8,
    teacher_prompt=teacher_prompt,
    parse_problem=parse_problem,
)


@pytest.fixture
def parity_task():
    """PARITY registered for one test, and unregistered at its end whatever happens."""
    register_task(PARITY)
    try:
        yield PARITY
    finally:
        unregister_task(PARITY.name)


def test_registration_is_the_only_step_and_is_undone(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'parity'"):
        parse_config({"data": {"task": "parity", "hard_set": str(tmp_path)}})
    register_task(PARITY)
    try:
        assert task_names() == ("e1", "e2", "mechanism", "parity") and get_task("parity") is PARITY
        assert scoring_task(parse_config({"data": {"task": "parity", "hard_set": str(tmp_path)}})) is PARITY
        with pytest.raises(ValueError, match="taken"):
            register_task(PARITY)
    finally:
        unregister_task("parity")
    assert "parity" not in task_names()
    with pytest.raises(ValueError, match="unknown task 'parity'"):
        get_task("parity")


def test_toy_task_through_hardset_score_and_the_teacher_env(parity_task, tiny_model_dir, tmp_path, capsys):
    import sv_soar_teacher
    from sv_soar_teacher.grounded_rubric import GroundedTeacherRubric

    write_jsonl(tmp_path / "rows.jsonl", [parity_row(n) for n in range(100, 112)])

    # hard-set mining: the tiny random model never writes {"answer": ...}, so every row fails 2/2 samples
    hard = tmp_path / "hard"
    assert main(["hardset", "--task", "parity", "--model", str(tiny_model_dir), "--source", "jsonl",
                 "--path", str(tmp_path / "rows.jsonl"), "--samples", "2", "--seed", "0", "--no-progress",
                 "--out", str(hard)]) == 0
    d_train, d_test = (read_jsonl(hard / name, validate_row) for name in ("d_train.jsonl", "d_test.jsonl"))
    assert len(d_train) == len(d_test) == 6
    assert {row["meta"]["number"] for row in d_train + d_test} == set(range(100, 112))
    assert all(row["meta"]["fail_at_k"]["successes"] == 0 for row in d_train + d_test)

    # `sv-soar score`: students trained on a teacher dataset of parity rows, Acc measured on Q_R from D_train
    write_jsonl(tmp_path / "x1.jsonl", [parity_row(n) for n in range(4)])
    assert main(["score", "--task", "parity", "--dataset", str(tmp_path / "x1.jsonl"), "--hard-set", str(hard),
                 "--model", str(tiny_model_dir), "--preset", "cpu", "--students", "1", "--q-r", "2",
                 "--no-progress", "--out", str(tmp_path / "score.json")]) == 0
    result = json.loads((tmp_path / "score.json").read_text())
    [dataset] = result["datasets"]
    assert result["task"] == "parity" and dataset["rows"] == 4 and len(dataset["students"]) == 1
    assert dataset["baseline_accuracy"] == 0.0 and math.isfinite(dataset["reward"])
    assert {row["question"] for row in result["q_r"]} <= {row["question"] for row in d_train}
    assert "score: task parity" in capsys.readouterr().out

    # the v0 teacher env: the toy teacher prompt, and one rollout group scored by the grounded group reward
    env = sv_soar_teacher.load_environment(task="parity", hard_set=str(hard), model=str(tiny_model_dir),
                                           preset="cpu", student=STUDENT, g=2, n=2, students=1, q_r=2,
                                           run_dir=str(tmp_path / "run"), num_prompts=1)
    assert env.dataset[0]["prompt"][1]["content"] == teacher_prompt()[1]["content"]
    texts = ['{"number": 7}', "I like odd numbers.", 'Here: {"number": 8}', '{"number": 101}']
    # valid: 7 and 8; "I like..." is not JSON, 101 is a hard-set number
    states = [{"prompt": [], "completion": [{"role": "assistant", "content": t}], "answer": "", "info": {},
               "trajectory": []} for t in texts]
    asyncio.run(env.rubric.score_group(states))
    metrics = [s["metrics"] for s in states]
    assert [m["valid"] for m in metrics] == [1.0, 0.0, 1.0, 0.0]
    assert metrics[1]["rejected_not_json"] == 1.0 and metrics[3]["rejected_duplicate_of_hard_set"] == 1.0
    assert [m["dataset"] for m in metrics] == [1.0, 0.0, 2.0, 0.0]  # X_1 = {7}, X_2 = {8}
    # invalid rollouts get the floor, by default "neutral": R̂_t, no advantage
    assert states[1]["reward"] == states[3]["reward"] == metrics[1]["reward_hat"]
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    (record,) = state["history"]
    assert state["step"] == 1 and [states[0]["reward"], states[2]["reward"]] == record["dataset_rewards"]
    (rubric,) = [r for r in env.rubric.rubrics if isinstance(r, GroundedTeacherRubric)]
    assert rubric.step.task == "parity"


def test_student_env_scores_a_toy_task_with_its_own_score(parity_task, tmp_path):
    """Without a rubric factory of its own, the student env's rubric is the task's `score` (verifiers' own
    rollout and scoring path; the model is scripted, as in test_student_env.py)."""
    import sv_soar_student
    from tests.scripted_client import ScriptedClient

    write_jsonl(tmp_path / "rows.jsonl", [parity_row(n) for n in range(4)])
    env = sv_soar_student.load_environment(task="parity", source="jsonl", path=str(tmp_path / "rows.jsonl"))
    assert env.system_prompt == PARITY.system_prompt
    example = next(row for row in env.get_dataset().to_list() if row["question"] == parity_question(3))
    client = ScriptedClient(['{"answer": "odd"}', 'I think {"answer": "even"}'])
    outputs = asyncio.run(env.run_group([example] * 2, client, "scripted", {}))
    assert sorted(output["reward"] for output in outputs) == [0.0, 1.0]
