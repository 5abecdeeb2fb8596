"""sv-soar-teacher: the group reward function on a real verifiers env with the tiny real model, and the
real `vf-eval sv-soar-teacher` through a real `sv-soar serve-model` subprocess.

The tiny model writes no valid teacher problem (it is random), so vf-eval exercises the invalid path end
to end; the valid path (partition, R_k per dataset, promotion, PQ) is proven by calling the env's real
rubric with hand-written teacher completions. The tiny student never answers E1 correctly either, so
its real R_k is 0; to see a dataset with another R_k, one dataset's entry is written into the scorer's
own reward cache (the path a retried group takes), and the test checks that exactly its rollouts get it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sv_soar_teacher
from sv_soar.baseline import Baseline
from sv_soar.reward_cache import RewardCache, reward_cache_key
from sv_soar.student.adapters import load_baseline
from sv_soar.tasks.teacher import validate_batch
from sv_soar.soar_step import draw_q_r, partition, step_seed
from sv_soar.teacher_step import METRIC_NAMES
from tests.served_model import start_server, stop_server
from tests.teacher_env_inputs import STUDENT, VALID, group_states, invalid, load, teacher_rubric

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SERVED = "tiny-teacher"


# ----------------------------------------------------------------------------- loading


def test_missing_hard_set_says_how_to_make_one(tmp_path):
    with pytest.raises(ValueError, match=r"sv-soar hardset .*pass hard_set="):
        sv_soar_teacher.load_environment()
    with pytest.raises(FileNotFoundError, match=r"nowhere'.*sv-soar hardset"):
        sv_soar_teacher.load_environment(hard_set=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"no d_train.jsonl.*sv-soar hardset"):
        sv_soar_teacher.load_environment(hard_set=str(tmp_path))
    bad = tmp_path / "d_train.jsonl"
    bad.write_text('{"question": "q", "answer": "maybe"}\n')
    with pytest.raises(ValueError, match=rf"{bad}:1: 'answer'"):
        sv_soar_teacher.load_environment(hard_set=str(bad))


def test_environment_shape(hard_set, tiny_model_dir, tmp_path):
    env = load(hard_set, tiny_model_dir, tmp_path / "run", num_prompts=3)
    assert len(env.dataset) == 3 and len({row["question"] for row in env.dataset}) == 1  # one prompt, repeated
    prompt = env.dataset[0]["prompt"]
    assert [m["role"] for m in prompt] == ["system", "user"] and "ONE new practice problem" in prompt[1]["content"]
    rubric = teacher_rubric(env)
    assert rubric._is_group_func(rubric.grounded_reward)  # verifiers sees a group reward function
    names = rubric._get_reward_func_names()
    assert names[0] == "grounded_reward" and names[1:] == list(METRIC_NAMES)
    assert rubric.weights == [1.0] + [0.0] * len(METRIC_NAMES)
    assert (tmp_path / "run" / "state.json").is_file()
    with pytest.raises(ValueError, match="preset must be"):
        load(hard_set, tiny_model_dir, tmp_path / "run", preset="gpu")


def test_run_config_sets_arguments_and_keyword_arguments_win(hard_set, tiny_model_dir, tmp_path):
    """`config=`: a `sv-soar train` TOML (or a dict of its sections) through verifiers' own loader."""
    import verifiers as vf

    from sv_soar.config import ConfigError
    from sv_soar.student.config import student_config
    from sv_soar.teacher_env_config import TeacherEnvConfig

    config = tmp_path / "run.toml"
    config.write_text(f'[data]\ntask = "e1"\nhard_set = "{hard_set}"\n[teacher]\ng = 3\nn = 2\nlearning_rate = 1e-3\n'
                      f'[student]\nmodel = "{tiny_model_dir}"\nsteps = 1\n[soar]\nq_r = 3\nfloor = "neutral"\n'
                      '[evaluation]\nsamples = 4\n')
    env = vf.load_environment("sv-soar-teacher", config=str(config), n=5, preset="cpu", run_dir=str(tmp_path / "run"),
                              num_prompts=1)
    rubric = teacher_rubric(env)
    args = rubric.step.config
    assert (args.g, args.n, args.q_r, args.floor, rubric.step.task) == (3, 5, 3, "neutral", "e1")  # n: keyword
    assert rubric.step.student == student_config("cpu", {"steps": 1})
    assert rubric.step.hard_set.source == hard_set / "d_train.jsonl"
    env = sv_soar_teacher.load_environment(config={"soar": {"q_r": 2}}, hard_set=str(hard_set),
                                           model=str(tiny_model_dir), run_dir=str(tmp_path / "run2"), num_prompts=1)
    args = teacher_rubric(env).step.config
    assert (args.q_r, args.g, args.floor) == (2, 4, "neutral")  # env defaults
    env = sv_soar_teacher.load_environment(config=TeacherEnvConfig(hard_set=str(hard_set), model=str(tiny_model_dir),
                                                                   q_r=2, g=3), g=2, run_dir=str(tmp_path / "run3"))
    assert (teacher_rubric(env).step.config.q_r, teacher_rubric(env).step.config.g) == (2, 2)  # the one config too
    with pytest.raises(ConfigError, match=r"config: soar\.qr: unknown key"):
        sv_soar_teacher.load_environment(config={"soar": {"qr": 2}}, hard_set=str(hard_set))
    with pytest.raises(ConfigError, match=r"config: sor: unknown key"):
        sv_soar_teacher.load_environment(config={"sor": {}}, hard_set=str(hard_set))


def test_partition_rule():
    assert partition(list(range(8)), 2, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # g·n valid: g datasets of n
    assert partition([0, 2, 3, 5, 9], 2, 4) == [[0, 2, 3], [5, 9]]  # fewer: g datasets, sizes differ by <= 1
    assert partition([1, 4], 4, 64) == [[1], [4]]  # fewer valid than g: one dataset each
    assert partition(list(range(11)), 2, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # beyond g·n: not scored
    assert partition([], 4, 64) == []
    assert draw_q_r(list(range(10)), 4, step_seed(0, 1)) != draw_q_r(list(range(10)), 4, step_seed(0, 2))
    assert draw_q_r(list(range(10)), 4, 11) == draw_q_r(list(range(10)), 4, 11)  # seeded
    assert sorted(draw_q_r(list(range(3)), 64, 5)) == [0, 1, 2]


# ----------------------------------------------------------------------------- the group reward, called directly


def test_group_reward_on_hand_written_teacher_completions(hard_set, tiny_model_dir, tmp_path):
    """The valid path end to end through the real rubric, scorer, promotion and run directory."""
    cache_dir, run_dir = tmp_path / "cache", tmp_path / "run"
    # window 1, tau 0.1: step 0 (R̂ = 0) cannot promote, step 1 (R̂ = 0.125) must
    env = load(hard_set, tiny_model_dir, run_dir, reward_cache=str(cache_dir), window=1, tau=0.1)
    rubric = teacher_rubric(env)
    d_train = [json.loads(line) for line in (hard_set / "d_train.jsonl").read_text().splitlines()]
    bad = invalid(d_train[0]["question"])
    texts = VALID[:2] + list(bad.values())[:3] + VALID[2:] + list(bad.values())[3:]  # g·n = 10, valid at 0,1,5,6
    valid_at = [0, 1, 5, 6]

    # --- step 0: both datasets scored for real
    states = group_states(texts)
    asyncio.run(env.rubric.score_group(states))  # the real verifiers path: RubricGroup -> our group function
    rewards = [s["reward"] for s in states]
    metrics = [s["metrics"] for s in states]
    for i, s in enumerate(states):
        assert s["metrics"]["grounded_reward"] == s["reward"]
        if i not in valid_at:
            assert s["reward"] == metrics[i]["reward_hat"]  # the default floor, "neutral": R̂_t
            assert metrics[i]["valid"] == 0.0 and metrics[i]["dataset"] == 0.0
    reasons = {name: sum(m[f"rejected_{name}"] for m in metrics) for name in bad}
    assert reasons == {name: 1.0 for name in bad}, reasons  # each invalid rollout counted under its own reason
    assert [metrics[i]["dataset"] for i in valid_at] == [1.0, 1.0, 2.0, 2.0]  # X_1 = rollouts 0,1; X_2 = 5,6
    state = json.loads((run_dir / "state.json").read_text())
    (record,) = state["history"]
    assert state["step"] == 1 and record["baseline_id"] == "base" and not record["promoted"]
    r_1, r_2 = record["dataset_rewards"]
    assert [rewards[i] for i in valid_at] == [r_1, r_1, r_2, r_2]
    for m in metrics:
        assert m["valid_fraction"] == pytest.approx(0.4) and m["datasets"] == 2.0 and m["outer_step"] == 0.0
        assert m["scoring_error"] == 0.0 and 0.0 < m["diversity_distinct_2"] <= 1.0
        assert m["diversity_pairwise_jaccard_distance"] > 0.0

    # --- step 1: X_2's entry is in the reward cache with R_2 = 0.25 (students 0.2 and 0.3)
    scorer_model, config = str(tiny_model_dir), rubric.step.student
    q_r = draw_q_r(d_train, 4, step_seed(7, 1))
    batch = validate_batch(texts, rubric.step.hard_set.index, rubric.step.limits)  # the rows exactly as the rubric builds them
    datasets = [[batch.outcomes[i].to_row() for i in part] for part in partition(batch.valid_indices, 2, 5)]

    def key(rows):
        return reward_cache_key(task="e1", model=scorer_model, dataset=rows, baseline_id="base", q_r=q_r,
                                config=config.model_dump(), grounding="correctness", students=2,
                                seed=step_seed(7, 1), promoted=False)

    cache = RewardCache(cache_dir)
    step0_keys = [p.name[:-5] for p in cache_dir.rglob("*.json")]
    assert len(step0_keys) == 2  # step 0 stored both datasets (and their adapters, kept for promotion)
    donor = cache.get(step0_keys[0])
    adapters = [cache.get_adapter(step0_keys[0], j) for j in range(2)]
    entry = {**donor, "reward": 0.25, "cached": False}
    entry["students"] = [{**s, "reward": r, "accuracy": r} for s, r in zip(donor["students"], (0.3, 0.2))]
    cache.put(key(datasets[1]), entry)
    for j, weights in enumerate(adapters):
        cache.put_adapter(key(datasets[1]), j, weights)

    states = group_states(texts)
    asyncio.run(env.rubric.score_group(states))
    rewards = [s["reward"] for s in states]
    state = json.loads((run_dir / "state.json").read_text())
    record = state["history"][1]
    assert record["dataset_rewards"] == [0.0, 0.25] and record["reward_hat"] == pytest.approx(0.125)
    assert [rewards[i] for i in valid_at] == [0.0, 0.0, 0.25, 0.25]  # every rollout of X_k gets R_k
    m = states[5]["metrics"]
    assert (m["dataset_reward"], m["student_reward_min"], m["student_reward_max"]) == (0.25, 0.2, 0.3)
    assert m["promoted"] == 1.0 and m["reward_hat"] == pytest.approx(0.125) and m["outer_step"] == 1.0
    assert all(s["reward"] == pytest.approx(0.125) for i, s in enumerate(states) if i not in valid_at)  # R̂_t

    # promotion: X_2 joined PQ; the baseline is X_2's median student (lower median: 0.2, student 1)
    assert record["promoted"] and record["promoted_dataset"] == 1 and state["promotions"] == 1
    promoted = [json.loads(line) for line in (run_dir / "promoted" / "0001-step-000001.jsonl").read_text().splitlines()]
    assert [row["question"] for row in promoted] == [row["question"] for row in datasets[1]]
    baseline = load_baseline(run_dir / state["baseline"]["folder"])
    assert baseline.id == state["baseline"]["id"] == Baseline("x", adapter_state=adapters[1]).id

    # --- a restarted trainer resumes the run, and step 2 trains from the promoted baseline
    env = load(hard_set, tiny_model_dir, run_dir, window=1, tau=0.1)
    assert teacher_rubric(env).step.run.state.step == 2 and teacher_rubric(env).step.run.baseline().id == baseline.id
    states = group_states(texts)
    asyncio.run(env.rubric.score_group(states))
    state = json.loads((run_dir / "state.json").read_text())
    assert state["step"] == 3 and state["history"][2]["baseline_id"] == baseline.id
    assert state["history"][2]["dataset_rewards"] == [0.0, 0.0] and states[0]["metrics"]["outer_step"] == 2.0


def test_scoring_failure_gives_the_whole_group_the_floor(hard_set, tmp_path):
    """A scorer that cannot be built (a model folder that is not there) must not stop the trainer."""
    missing_model = tmp_path / "no-such-model"
    missing_model.mkdir()  # a folder, so load_environment accepts the name; loading it then fails
    env = load(hard_set, missing_model, tmp_path / "run", floor=-0.5)
    states = group_states(VALID + ["", "", "", "", "", ""])
    asyncio.run(env.rubric.score_group(states))
    assert [s["reward"] for s in states] == [-0.5] * 10  # equal rewards: no gradient from a broken step
    assert all(s["metrics"]["scoring_error"] == 1.0 for s in states)
    assert [s["metrics"]["valid"] for s in states] == [1.0] * 4 + [0.0] * 6
    (record,) = json.loads((tmp_path / "run" / "state.json").read_text())["history"]
    assert record["reward_hat"] is None and record["error"] and "no-such-model" in record["error"]


def test_a_step_cancelled_while_it_waits_for_a_scorer_takes_no_step_number_and_trains_nothing(hard_set, tmp_path):
    """A group dropped while it waits for a scorer (a stale episode, a deadline) never starts: it builds no scorer,
    trains no student and takes no step number, so the next group is step 0 (here a scorer that cannot be built
    records its error at step 0: what a started step does)."""
    import threading

    from sv_soar.teacher_step import StepCancelled

    missing_model = tmp_path / "no-such-model"
    missing_model.mkdir()
    step = teacher_rubric(load(hard_set, missing_model, tmp_path / "run", floor=-0.5)).step
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(StepCancelled):
        step.score(VALID + [""] * 6, cancelled)
    assert not (tmp_path / "run" / "state.json").exists() or not json.loads(
        (tmp_path / "run" / "state.json").read_text())["history"]
    assert step.score(VALID + [""] * 6).step == 0
    (record,) = json.loads((tmp_path / "run" / "state.json").read_text())["history"]
    assert record["step"] == 0 and "no-such-model" in record["error"]


def test_concurrent_groups_are_bounded_and_each_is_one_step(hard_set, tiny_model_dir, tmp_path):
    """verifiers scores groups concurrently: at most max_concurrent_scorings run at once, on one scorer each."""
    import threading

    env = load(hard_set, tiny_model_dir, tmp_path / "run", g=1, n=2, max_concurrent_scorings=1)
    rubric = teacher_rubric(env)
    lock, active, peak = threading.Lock(), [0], [0]
    score_step = rubric.step.score

    def counted(*args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return score_step(*args)
        finally:
            with lock:
                active[0] -= 1

    rubric.step.score = counted  # the step's own method, observed from outside
    groups = [group_states(VALID[0:2]), group_states(VALID[2:4]), group_states(VALID[1:3])]

    async def all_groups():
        await asyncio.gather(*(env.rubric.score_group(states) for states in groups))

    asyncio.run(all_groups())
    assert peak[0] == 1 and len(rubric.step.scorers._scorers) == 1  # one slot, one model copy
    steps = sorted(states[0]["metrics"]["outer_step"] for states in groups)
    assert steps == [0.0, 1.0, 2.0]  # each group its own outer step
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["step"] == 3 and sorted(r["step"] for r in state["history"]) == [0, 1, 2]


# ----------------------------------------------------------------------------- vf-eval, end to end


@pytest.mark.slow
def test_vf_eval_sv_soar_teacher_through_serve_model(hard_set, tiny_model_dir, tmp_path):
    port_file = tmp_path / "port"
    served = start_server(tiny_model_dir, tmp_path / "server.log", "--port-file", str(port_file),
                          "--served-model-name", SERVED, "--batch-window-ms", "50")
    try:
        port = int(port_file.read_text())
        run_dir, outputs = tmp_path / "run", tmp_path / "outputs"
        args = {"hard_set": str(hard_set), "model": str(tiny_model_dir), "preset": "cpu", "student": STUDENT,
                "g": 2, "n": 2, "students": 1, "q_r": 4, "run_dir": str(run_dir), "num_prompts": 1}
        vf_eval = shutil.which("vf-eval", path=str(Path(sys.executable).parent))
        command = [vf_eval] if vf_eval else [sys.executable, "-m", "verifiers.scripts.eval"]
        command += ["sv-soar-teacher", "-a", json.dumps(args), "-m", SERVED, "-b", f"http://127.0.0.1:{port}/v1",
                    "-k", "SV_SOAR_TEST_KEY", "-n", "1", "-r", "4", "-t", "48", "-s", "-o", str(outputs),
                    "--disable-tui"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "SV_SOAR_TEST_KEY": "unused"}
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    finally:
        stop_server(served.proc)

    (results,) = outputs.glob(f"evals/sv-soar-teacher--{SERVED}/*/results.jsonl")
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert len(rows) == 4  # g·n rollouts, one group
    for row in rows:
        metrics = row.get("metrics") or {}
        for name in ("grounded_reward", *METRIC_NAMES):
            assert isinstance(row.get(name, metrics.get(name)), (int, float)), f"{name} missing from {sorted(row)}"
        value = lambda name: row.get(name, metrics.get(name))  # noqa: E731
        rejected = sum(value(f"rejected_{r}") for r in ("empty", "too_long", "not_json", "schema", "bad_label",
                                                         "question_too_short", "question_too_long", "injection",
                                                         "not_e1_style", "duplicate_of_hard_set",
                                                         "duplicate_in_batch"))
        assert value("valid") + rejected == 1.0  # every rollout is valid or rejected for exactly one reason
        if value("valid") == 0.0:
            assert row["reward"] == value("reward_hat")  # the default floor, "neutral": R̂_t, no advantage
        assert value("outer_step") == 0.0
    state = json.loads((run_dir / "state.json").read_text())
    assert state["step"] == 1 and len(state["history"]) == 1  # the group was one outer step, persisted
    metadata = json.loads((results.parent / "metadata.json").read_text())
    assert "valid_fraction" in json.dumps(metadata)  # vf-eval's averages include the teacher metrics


def test_neutral_floor_gives_invalid_rollouts_no_advantage(hard_set, tmp_path):
    """floor = "neutral": an invalid rollout gets R̂_t (here nothing was scored: every rollout 0.0, one value,
    no gradient), never −1; a floor that is neither a number nor "neutral" is refused by name."""
    missing_model = tmp_path / "no-such-model"
    missing_model.mkdir()
    env = load(hard_set, missing_model, tmp_path / "run", floor="neutral")
    states = group_states(VALID + ["", "", "", "", "", ""])
    asyncio.run(env.rubric.score_group(states))
    assert [s["reward"] for s in states] == [0.0] * 10
    with pytest.raises(ValueError, match="neutral"):
        load(hard_set, missing_model, tmp_path / "run2", floor="zero")
