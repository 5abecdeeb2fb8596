"""The v1 teacher env's outer step driven by hand, in the verifiers v1 venvs (tests/test_hosted_v1.py's docstring:
which venvs, and why some tests run on the newest verifiers only):

- The valid path with several datasets (partition, R_k on every trace of X_k) runs through the env's teacher
  step on hand-written teacher replies (tests/hosted_v1/outer_step.py).
- What a real prime-rl run must survive, through verifiers' own episode machinery (`Env.run_slot`) against a
  model server on loopback that refuses a share of its requests: a failed generation leaves its episode ok
  (its trace ok and untrainable, the others with their dataset's R_k, one committed step); two episodes
  started together run one after the other; an episode cancelled while its students train commits nothing
  and the next one redoes its step; a step whose students cannot train commits nothing.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.teacher_env_inputs import STUDENT, VALID, invalid
from tests.v1_venvs import NEWEST_ONLY, env_copy, harness_env, package, run_v1

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@NEWEST_ONLY
def test_v1_teacher_outer_step_trains_students_on_hand_written_problems(v1_python, hard_set, tiny_model_dir,
                                                                        tmp_path):
    project = env_copy("sv_soar_teacher_v1", tmp_path)
    package(hard_set, project, "tiny-e1")
    d_train = [json.loads(line) for line in (hard_set / "d_train.jsonl").read_text().splitlines()]
    bad = invalid(d_train[0]["question"])
    texts = [VALID[0], bad["not_json"], VALID[1], None, VALID[2], VALID[3]]  # g·n = 6; None: a failed agent run
    args = {"hard_set": "tiny-e1", "model": str(tiny_model_dir), "preset": "cpu", "student": STUDENT, "g": 2, "n": 3,
            "students": 1, "q_r": 4, "seed": 7, "run_dir": str(tmp_path / "run")}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"steps": [{"args": args, "texts": texts},
                                          {"args": {**args, "floor": -1.0}, "texts": texts}]}), encoding="utf-8")
    done = run_v1(v1_python, [str(REPO / "tests" / "hosted_v1" / "outer_step.py"), str(spec),
                              str(tmp_path / "out.json")], pythonpath=[project, REPO], cwd=tmp_path,
                  env={"SV_SOAR_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-4000:]
    first, second = json.loads((tmp_path / "out.json").read_text())
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["step"] == 2 and [r["step"] for r in state["history"]] == [0, 1]
    for result, record in zip((first, second), state["history"]):
        r_1, r_2 = record["dataset_rewards"]  # X_1 = traces 0, 2; X_2 = traces 4, 5 (1, 3 invalid)
        rewards, metrics = result["rewards"], result["metrics"]
        assert [rewards[i] for i in (0, 2, 4, 5)] == [r_1, r_1, r_2, r_2]  # every trace of X_k gets R_k
        assert [metrics[i]["dataset"] for i in (0, 2, 4, 5)] == [1.0, 1.0, 2.0, 2.0]
        assert metrics[1]["rejected_not_json"] == 1.0 and metrics[3]["rejected_agent_error"] == 1.0
        assert all(m["valid_fraction"] == pytest.approx(4 / 6) and m["scoring_error"] == 0.0 for m in metrics)
    assert [first["rewards"][i] for i in (1, 3)] == [pytest.approx(state["history"][0]["reward_hat"])] * 2  # neutral
    assert [second["rewards"][i] for i in (1, 3)] == [-1.0, -1.0]  # a number as the floor
    assert second["metrics"][0]["outer_step"] == 1.0  # a second env (restarted server) resumed the run


# ------------------------------------------------------------------------------------------ a real run's faults


def run_episodes(python: Path, hard_set: Path, tiny_model_dir: Path, tmp_path: Path, *, g: int, n: int,
                 episodes: int = 1, fail_every: int = 0, cancel_first: bool = False) -> tuple[dict, Path]:
    """tests/hosted_v1/episodes.py: teacher episodes through verifiers' Env.run_slot on the packaged tiny hard
    set (one student a dataset, |Q_R| = 4), against a scripted server replying with the four VALID problems in
    turn; (its output, the run directory)."""
    project = env_copy("sv_soar_teacher_v1", tmp_path)
    package(hard_set, project, "tiny-e1")
    run_dir = tmp_path / "run"
    spec = {"env": {"taskset": {"id": "sv-soar-teacher-v1", "hard_set": "tiny-e1", "model": str(tiny_model_dir),
                                "preset": "cpu", "student": STUDENT, "g": g, "n": n, "students": 1, "q_r": 4,
                                "run_dir": str(run_dir), "num_prompts": 2},
                    "teacher": {"harness": {"id": "null", "env": harness_env(python)},
                                "runtime": {"type": "subprocess"}},
                    "max_concurrent_agents": g * n},
            "replies": VALID, "fail_every": fail_every, "episodes": episodes, "cancel_first": cancel_first}
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    done = run_v1(python, [str(REPO / "tests" / "hosted_v1" / "episodes.py"), str(tmp_path / "spec.json"),
                           str(tmp_path / "out.json")], pythonpath=[project, REPO], cwd=tmp_path,
                  env={"SV_SOAR_TEST_KEY": "unused", "SV_SOAR_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads((tmp_path / "out.json").read_text()), run_dir


def prime_rl_advantages(episode: dict) -> list[float | None]:
    """What prime-rl makes of an episode (its source, main of Aug 2026): a not-ok episode fails every trace
    (src/prime_rl/orchestrator/envs.py:108-114); only ok traces of trainable agents are scored
    (orchestrator/algo/base.py:35-42, iter_trainable_traces; its check for sampled tokens is left out: the
    eval client records none) and get reward − their mean (algo/grpo.py:25-30, no length penalty). None: the
    trace trains nothing."""
    ok = [trace["ok"] and episode["ok"] for trace in episode["traces"]]
    scored = [i for i, trace in enumerate(episode["traces"]) if ok[i] and trace["trainable"]]
    mean = sum(episode["traces"][i]["reward"] for i in scored) / len(scored) if scored else 0.0
    return [episode["traces"][i]["reward"] - mean if i in scored else None for i in range(len(ok))]


def test_a_failed_generation_stays_inside_its_episode(v1_python, hard_set, tiny_model_dir, tmp_path):
    """Every 3rd request refused: g·n = 6 generations, 2 fail. The episode stays ok, so prime-rl keeps it; the
    failed traces are ok but untrainable (no advantage); the 4 others are X_1, X_2 and carry their R_k; the
    step is committed once."""
    out, run_dir = run_episodes(v1_python, hard_set, tiny_model_dir, tmp_path, g=2, n=3, fail_every=3)
    assert out["requests"] == {"answered": 4, "refused": 2}
    (episode,) = out["episodes"]
    assert episode["ok"] and not episode["errors"], episode["errors"]
    traces, advantages = episode["traces"], prime_rl_advantages(episode)
    failed = [i for i, t in enumerate(traces) if t["errors"]]
    assert len(failed) == 2 and len(traces) == 6
    state = json.loads((run_dir / "state.json").read_text())
    assert state["step"] == 1 and len(state["history"]) == 1  # exactly one committed step
    (record,) = state["history"]
    r_k = record["dataset_rewards"]
    assert len(r_k) == 2
    for i, trace in enumerate(traces):
        metrics = trace["metrics"]
        assert trace["ok"] and metrics["committed"] == 1.0 and metrics["outer_step"] == 0.0
        if i in failed:
            assert not trace["trainable"] and metrics["rejected_agent_error"] == 1.0
            assert advantages[i] is None  # trains nothing, moves nobody's baseline
        else:
            assert trace["trainable"] and metrics["valid"] == 1.0
            assert trace["reward"] == pytest.approx(r_k[int(metrics["dataset"]) - 1])  # its dataset's R_k
            survivors = [traces[j]["reward"] for j in range(6) if j not in failed]
            assert advantages[i] == pytest.approx(trace["reward"] - sum(survivors) / len(survivors))
    assert sorted(int(traces[i]["metrics"]["dataset"]) for i in range(6) if i not in failed) == [1, 1, 2, 2]


def test_outer_steps_of_one_run_directory_run_one_after_another(v1_python, hard_set, tiny_model_dir,
                                                                tmp_path):
    """Two episodes dispatched together: the second one's teacher generations start only after the first one
    scored and committed its step, so it starts from that step's state; steps 0 and 1 are committed."""
    out, run_dir = run_episodes(v1_python, hard_set, tiny_model_dir, tmp_path, g=1, n=2, episodes=2)
    assert all(e["ok"] for e in out["episodes"])
    steps = [{t["metrics"]["outer_step"] for t in e["traces"]} for e in out["episodes"]]
    assert sorted(steps) == [{0.0}, {1.0}]
    first, second = sorted(out["episodes"], key=lambda e: e["traces"][0]["metrics"]["outer_step"])
    scored_first, scored_second = sorted(out["scoring"], key=lambda w: w["start"])
    assert scored_first["end"] <= scored_second["start"]
    assert min(t["start"] for t in second["traces"]) >= scored_first["end"]  # not a trace of it before
    state = json.loads((run_dir / "state.json").read_text())
    assert state["step"] == 2 and [r["step"] for r in state["history"]] == [0, 1]


def test_a_cancelled_episode_commits_nothing_and_the_next_one_redoes_its_step(v1_python, hard_set,
                                                                               tiny_model_dir, tmp_path):
    """An episode cancelled while its students train (prime-rl drops stale episodes): its students finish in
    their thread, nothing is committed; the next episode does step 0 again and commits it."""
    out, run_dir = run_episodes(v1_python, hard_set, tiny_model_dir, tmp_path, g=1, n=2, cancel_first=True)
    cancelled = out["cancelled"]
    assert cancelled["raised"]
    assert cancelled["state"]["step"] == 0 and cancelled["state"]["history"] == []
    assert not (run_dir / "promoted").exists() or not any((run_dir / "promoted").iterdir())
    (episode,) = out["episodes"]
    assert episode["ok"] and {t["metrics"]["outer_step"] for t in episode["traces"]} == {0.0}
    assert {t["metrics"]["committed"] for t in episode["traces"]} == {1.0}
    state = json.loads((run_dir / "state.json").read_text())
    assert state["step"] == 1 and [r["step"] for r in state["history"]] == [0]


@NEWEST_ONLY
def test_a_step_whose_students_cannot_train_commits_nothing(v1_python, hard_set, tiny_model_dir,
                                                            tmp_path):
    """The students' service is down (a closed loopback port): the step has datasets but no R_k, so nothing is
    committed and every trace gets the same floor (no advantage); the next step, with students that train,
    is step 0 again."""
    project = env_copy("sv_soar_teacher_v1", tmp_path)
    package(hard_set, project, "tiny-e1")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    args = {"hard_set": "tiny-e1", "model": str(tiny_model_dir), "preset": "cpu", "student": STUDENT, "g": 2, "n": 1,
            "students": 1, "q_r": 4, "seed": 7, "run_dir": str(tmp_path / "run")}
    texts = [VALID[0], VALID[1]]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"steps": [{"args": {**args, "students_url": f"http://127.0.0.1:{closed}"},
                                           "texts": texts}, {"args": args, "texts": texts}]}), encoding="utf-8")
    done = run_v1(v1_python, [str(REPO / "tests" / "hosted_v1" / "outer_step.py"), str(spec),
                              str(tmp_path / "out.json")], pythonpath=[project, REPO], cwd=tmp_path,
                  env={"SV_SOAR_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-4000:]
    down, up = json.loads((tmp_path / "out.json").read_text())
    assert down["state"]["step"] == 0 and down["state"]["history"] == []
    assert all(m["committed"] == 0.0 and m["scoring_error"] == 1.0 and m["outer_step"] == 0.0
               for m in down["metrics"])
    assert len(set(down["rewards"])) == 1  # one floor for all: zero advantage
    assert up["state"]["step"] == 1 and all(m["committed"] == 1.0 and m["outer_step"] == 0.0 for m in up["metrics"])
