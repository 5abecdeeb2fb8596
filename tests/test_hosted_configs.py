"""configs/hosted/teacher-*.toml: SV-Bench's hosted-RL layout, one group = one SOAR outer step
(rollouts_per_example = g·n, docs/design.md §5), and the real teacher environment loads with their [[env]] args
(hard_set and run_dir pointed at this machine; the student service is only contacted when a group is scored)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import sv_soar_teacher
from sv_soar.tasks import get_task
from sv_soar_teacher.grounded_rubric import GroundedTeacherRubric
from tests.test_teacher_env import hard_set  # noqa: F401 (fixture)

HOSTED = Path(__file__).resolve().parents[1] / "configs" / "hosted"
CONFIGS = sorted(HOSTED.glob("teacher-*.toml"))


def test_both_tasks_have_a_config():
    assert [p.name for p in CONFIGS] == ["teacher-e1.toml", "teacher-e2.toml"]


@pytest.fixture
def hard_set_of(request, hard_set, tmp_path_factory):  # noqa: F811
    """The hard set for a config's task: E1 built-in rows, or E2 rows of the mini set (skips without it)."""

    def make(task: str) -> Path:
        if task == "e1":
            return hard_set
        import numpy as np

        from sv_soar.evaluation.hardset import mine_hard_set
        from sv_soar.tasks.sources import load_rows

        mini = request.getfixturevalue("svbench_mini")
        spec = get_task(task)
        rows = load_rows(task, "jsonl", path=str(mini / f"{task}.jsonl"))[:8]
        out = tmp_path_factory.mktemp(f"hard-{task}")
        mine_hard_set(spec, rows, np.zeros((len(rows), 2), dtype=bool), out, model="tiny", source="jsonl",
                      temperature=1.0)
        return out

    return make


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_one_outer_step_a_group_and_loads_the_env(path, hard_set_of, tmp_path):
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    for key in ("model", "max_steps", "batch_size", "rollouts_per_example", "learning_rate", "lora_alpha"):
        assert key in config, f"{path.name}: {key} missing"
    assert config["sampling"]["temperature"] == 1.0  # SOAR samples the teacher at 1.0
    [env] = config["env"]
    args = env["args"]
    assert env["id"].endswith("/sv-soar-teacher")
    assert config["rollouts_per_example"] == args["g"] * args["n"]  # one group = one outer step
    assert config["batch_size"] % config["rollouts_per_example"] == 0  # whole groups a trainer step
    assert args["students_url"].startswith(("http://", "https://")) and "students_token" not in args  # no secret
    assert config["model"] == args["model"]  # SOAR: teacher and student start from the same model

    try:
        get_task(args["task"])
    except ValueError:
        pytest.skip(f"{path.name}: task {args['task']!r} is not in this build of sv-soar yet")
    local = {**args, "hard_set": str(hard_set_of(args.get("hard_set_task") or args["task"])),
             "run_dir": str(tmp_path / "run")}
    env_object = sv_soar_teacher.load_environment(**local)
    (rubric,) = [r for r in env_object.rubric.rubrics if isinstance(r, GroundedTeacherRubric)]
    assert (rubric.g, rubric.n, rubric.q_r) == (args["g"], args["n"], args["q_r"])
    assert len(env_object.dataset) == args["num_prompts"]
