"""The grounded scorer (SOAR's R_k) on the tiny real Llama, training through the real student trainer.

A random tiny model never writes an E1 JSON label, so E1 accuracy is 0 before and after any short run.
Most tests therefore use `KIND` (tests/kind_task.py), a toy task: a row's answer is "digits" or "letters" and a
one-token completion succeeds when it is made of that kind of characters. The tiny model's greedy
first token is neither for most prompts (a stray byte), while ~40 % of its samples at temperature 1
are digits: a student can learn to answer digits in a few RLOO steps, and to answer letters instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sv_soar.student_runs as student_runs
from sv_soar.baseline import Baseline
from sv_soar.grounded import GroundedScorer, student_seed
from sv_soar.q_r_accuracy import BASELINE_ADAPTER
from sv_soar.student.adapters import load_baseline, save_baseline
from sv_soar.jsonl import write_jsonl
from sv_soar.models import load_model
from sv_soar.tasks.e1.flows import generate_e1_flows
from sv_soar.student.config import ALL_LINEAR, StudentTrainConfig
from sv_soar.student.trainer import _shuffled_batches, train_student
from tests.kind_task import KIND, comparable, flipped, hard_items, is_kind, kind_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def make_scorer(tiny_model_dir):
    def make(config: StudentTrainConfig | None = None, **kwargs) -> GroundedScorer:
        kwargs.setdefault("progress", False)
        kwargs.setdefault("students", 2)
        return GroundedScorer(load_model(str(tiny_model_dir)), KIND, config or kind_config(), **kwargs)

    return make


# --- (a) the reward is grounded: teaching the hard items pays, teaching them wrong does not -------------


def test_teaching_the_hard_items_earns_more_than_flipped_labels(make_scorer):
    scorer = make_scorer(students=2)
    q_r = hard_items(scorer)
    teach, wrong = q_r, flipped(q_r)
    before = scorer.engine.stats.prompts
    good, bad = scorer.score([teach, wrong], q_r, Baseline("base"), seed=0)

    assert good.baseline_accuracy == bad.baseline_accuracy == 0.0  # hard items: the baseline fails them all
    assert good.reward is not None and bad.reward is not None
    assert good.reward >= 0.75, good.student_accuracies  # the students learned to answer the hard items
    assert bad.reward <= 0.0 and good.reward > bad.reward + 0.5
    # R_k is the mean of R_{k,j} = Acc(student) − Acc(baseline)
    assert good.reward == pytest.approx(sum(good.student_rewards) / 2)
    assert all(r == a - good.baseline_accuracy for r, a in zip(good.student_rewards, good.student_accuracies))
    seeds = [s.seed for s in good.students]
    assert seeds == [student_seed(0, 0), student_seed(0, 1)] and seeds[0] != seeds[1]  # r distinct students
    assert [s.seed for s in bad.students] == seeds  # seeds come from (seed, j), never from the position k
    assert all(len(s.log) == 8 for s in good.students)  # config.steps, not yet promoted
    assert good.n_failed == 0 and good.error is None and not good.cached
    assert set(good.seconds) == {"train", "evaluate", "baseline_evaluate", "total"}
    json.dumps([good.to_dict(), bad.to_dict()])  # JSON-able, no tensors
    # the students' adapters are gone again; generation went through the shared engine
    assert scorer.engine.loaded_adapters() == ["sv-soar-base"]
    assert scorer.engine.stats.prompts > before


def test_promoted_students_train_longer_and_keep_their_weights(make_scorer):
    scorer = make_scorer(students=1)
    q_r = hard_items(scorer, n=6)
    [score] = scorer.score([q_r], q_r, Baseline("base"), seed=0, promoted=True, keep_adapters=True)
    student = score.students[0]
    assert len(student.log) == 9  # steps_after_promotion (SOAR: 15 after the first promotion)
    assert student.adapter_state and all("lora_" in key for key in student.adapter_state)

    # the kept weights are the student: as a baseline, its Acc on Q_R is the student's, and R_{k,j} starts there
    promoted = Baseline("promoted", student.adapter_state)
    assert promoted.id != "base"
    assert scorer.baseline_accuracy(promoted, q_r) == student.accuracy


# --- (b) reproducible --------------------------------------------------------------------------------------


def test_same_seed_same_reward_and_position_does_not_matter(make_scorer):
    scorer = make_scorer(kind_config(steps=3))
    q_r = hard_items(scorer, n=6)
    x1, x2 = q_r[:4], flipped(q_r)[:4]
    first = scorer.score([x1, x2], q_r, Baseline("base"), seed=3)
    again = scorer.score([x1, x2], q_r, Baseline("base"), seed=3)
    assert [comparable(s) for s in first] == [comparable(s) for s in again]  # bitwise: == on floats
    assert [s.reward for s in first] == [s.reward for s in again]

    # the same dataset at another position trains the same students: seeds come from (seed, j), not k
    swapped = scorer.score([x2, x1], q_r, Baseline("base"), seed=3)
    assert swapped[1].key == first[0].key and comparable(swapped[1]) == comparable(first[0])

    # another seed trains other students (their logs differ)
    other = scorer.score([x1], q_r, Baseline("base"), seed=4)[0]
    assert other.key != first[0].key
    assert [s["log"] for s in comparable(other)["students"]] != [s["log"] for s in comparable(first[0])["students"]]


# --- (c) the reward cache ------------------------------------------------------------------------------------


def test_cache_hit_trains_and_generates_nothing(make_scorer, tmp_path, monkeypatch, caplog):
    config = kind_config(steps=3)
    q_r = hard_items(make_scorer(config), n=6)
    x1, x2 = q_r[:4], flipped(q_r)[:4]
    first = make_scorer(config, cache_dir=tmp_path).score([x1, x2], q_r, Baseline("base"), seed=0, keep_adapters=True)
    assert not any(s.cached for s in first)

    def no_training(*args, **kwargs):
        raise AssertionError("a cache hit must not train a student")

    fresh = make_scorer(config, cache_dir=tmp_path)  # another process would see the same files
    monkeypatch.setattr(student_runs, "train_student", no_training)
    hits = fresh.score([x2, x1], q_r, Baseline("base"), seed=0, keep_adapters=True)  # other positions, same keys
    assert all(s.cached for s in hits)
    assert fresh.engine.stats.prompts == 0 and fresh.engine.stats.generated_tokens == 0  # not even the baseline
    assert comparable(hits[0]) == comparable(first[1]) and comparable(hits[1]) == comparable(first[0])
    for stored, kept in zip(hits[1].students, first[0].students):  # keep_adapters: the weights come back too
        assert all(torch.equal(stored.adapter_state[k], v) for k, v in kept.adapter_state.items())

    # what the key names: another baseline, seed, Q_R, r or promotion is a miss
    key = fresh.cache_key(x1, q_r, Baseline("base"), seed=0)
    assert key == first[0].key
    assert fresh.cache_key(x1, q_r, Baseline("base"), seed=1) != key
    assert fresh.cache_key(x1, q_r, Baseline("base"), seed=0, promoted=True) != key
    assert fresh.cache_key(x1, q_r[:5], Baseline("base"), seed=0) != key
    assert fresh.cache_key(x1, q_r, Baseline("b", first[0].students[0].adapter_state), seed=0) != key
    assert make_scorer(config, students=3).cache_key(x1, q_r, Baseline("base"), seed=0) != key
    meta_only = [{**row, "meta": {"source": "elsewhere"}} for row in x1]
    assert fresh.cache_key(meta_only, q_r, Baseline("base"), seed=0) == key  # meta does not decide a problem

    # a corrupt entry is ignored with a warning and recomputed (to the same numbers)
    monkeypatch.setattr(student_runs, "train_student", train_student)
    entry = next(tmp_path.rglob(f"{key}.json"))
    entry.write_text('{"reward": 0.5, "trunc')
    with caplog.at_level(logging.WARNING, logger="sv_soar.reward_cache"):
        [redone] = fresh.score([x1], q_r, Baseline("base"), seed=0)
    assert "unreadable entry" in caplog.text
    assert not redone.cached and fresh.engine.stats.prompts > 0
    assert comparable(redone) == comparable(first[0])
    assert json.loads(entry.read_text())["key"] == key  # rewritten whole


def test_a_stop_between_students_trains_only_the_unfinished_ones_when_it_comes_back(make_scorer, tmp_path,
                                                                                     monkeypatch):
    """A step's cache entries are written once all its students are measured on Q_R; a run stopped before that keeps
    the students it finished (their weights and logs), trains only the others when it comes back, and ends with the
    R_k, logs and weights of a run never stopped: stopped while training, or while measuring. The kept students are
    gone once the entries are written (also when a stop came between writing and dropping them)."""
    config = kind_config(steps=3)
    q_r = hard_items(make_scorer(config), n=6)
    x1, x2 = q_r[:4], flipped(q_r)[:4]

    def score(scorer):
        return scorer.score([x1, x2], q_r, Baseline("base"), seed=0, keep_adapters=True)

    whole = score(make_scorer(config))  # never stopped, no cache
    trained = []

    def train_until(stop_at):
        def train(*args, **kwargs):
            trained.append(kwargs["adapter_name"])
            if len(trained) == stop_at:
                raise KeyboardInterrupt  # a stop, not a student's failure
            return train_student(*args, **kwargs)
        return train

    def same_as_whole(resumed):
        assert [comparable(s) for s in resumed] == [comparable(s) for s in whole]  # R_k and the logs
        for got, expected in zip(resumed, whole, strict=True):
            for a, b in zip(got.students, expected.students, strict=True):
                assert all(torch.equal(a.adapter_state[k], v) for k, v in b.adapter_state.items())
        assert not list(tmp_path.rglob("*.trained-*"))

    # stopped while training x2's first student
    monkeypatch.setattr(student_runs, "train_student", train_until(3))
    with pytest.raises(KeyboardInterrupt):
        score(make_scorer(config, cache_dir=tmp_path))
    assert len(list(tmp_path.rglob("*.trained-*.json"))) == 2  # x1's two students, kept
    assert [p for p in tmp_path.rglob("*.json") if ".trained-" not in p.name] == []  # no entry yet
    trained.clear()
    same_as_whole(score(make_scorer(config, cache_dir=tmp_path)))
    assert len(trained) == 2  # x2's students only

    # stopped while measuring the four finished students on Q_R: none is trained again
    for entry in tmp_path.rglob("*.json"):
        entry.unlink()
    trained.clear()
    monkeypatch.setattr(student_runs, "train_student", train_until(None))  # counts, never stops
    scorer = make_scorer(config, cache_dir=tmp_path)
    measure = scorer._accuracies

    def stop_measuring(names, *args, **kwargs):
        if len(names) > 1:
            raise KeyboardInterrupt
        return measure(names, *args, **kwargs)

    monkeypatch.setattr(scorer, "_accuracies", stop_measuring)
    with pytest.raises(KeyboardInterrupt):
        score(scorer)
    assert len(list(tmp_path.rglob("*.trained-*.json"))) == 4 and len(trained) == 4
    trained.clear()
    same_as_whole(score(make_scorer(config, cache_dir=tmp_path)))
    assert trained == []

    # stopped after the entries were written, before the kept students were dropped: a cache hit drops them
    key = whole[0].key
    stray = tmp_path / key[:2] / f"{key}.trained-1.json"  # the cache's own layout: <key[:2]>/<key>...
    stray.write_text("{}")
    assert all(s.cached for s in score(make_scorer(config, cache_dir=tmp_path)))
    assert not stray.exists()


# --- (d) faults: a failed student is left out and counted, never fatal -----------------------------------------


def test_failed_students_are_excluded_and_other_datasets_still_scored(make_scorer, tmp_path, caplog):
    config = kind_config(steps=1, batch_prompts=1)
    scorer = make_scorer(config, students=4, cache_dir=tmp_path)
    q_r = hard_items(scorer, n=4)
    good_row = q_r[0]
    crashing = [good_row, {"question": "Item x: write the count.", "answer": "boom"}]
    # which students draw the crashing row in their one step: the trainer's own batching, per student seed
    seed = next(s for s in range(50)
                if 0 < sum(next(_shuffled_batches(crashing, 1, random.Random(student_seed(s, j))))[0] is crashing[1]
                           for j in range(4)) < 4)
    will_crash = [next(_shuffled_batches(crashing, 1, random.Random(student_seed(seed, j))))[0] is crashing[1]
                  for j in range(4)]
    diverging = [{"question": f"Item {i}: write the count.", "answer": "nan"} for i in range(3)]

    with caplog.at_level(logging.WARNING, logger="sv_soar.grounded"):
        part, nan, fine = scorer.score([crashing, diverging, q_r], q_r, Baseline("base"), seed=seed)

    # some students crashed: they are out of R_k, counted, with their cause
    assert [s.failure is not None for s in part.students] == will_crash
    assert part.n_failed == sum(will_crash) and part.error is None
    for student in part.students:
        if student.failure is not None:
            assert student.failure.startswith("KeyError") and student.accuracy is None and student.reward is None
    finished = [s.reward for s in part.students if s.failure is None]
    assert part.reward == pytest.approx(sum(finished) / len(finished))
    # every student diverged (NaN reward): no R_k, and an error that says why
    assert nan.reward is None and nan.n_failed == 4
    assert all(s.failure.startswith("StudentTrainingError") for s in nan.students)
    assert "all 4 students failed" in nan.error and "non-finite reward" in nan.error
    # the other dataset of the call is scored anyway
    assert fine.reward is not None and fine.n_failed == 0
    assert "KeyError" in caplog.text and "no R_k" in caplog.text
    # no failed student's adapter is left behind on the shared model
    assert scorer.engine.loaded_adapters() == ["sv-soar-base"]
    # divergence is a property of the data and seed, so it is cached; a crash may be transient, so it is not
    assert scorer._cached(nan.key, False) is not None and scorer._cached(fine.key, False) is not None
    assert scorer._cached(part.key, False) is None


def test_students_past_the_time_limit_are_counted_as_timeouts(make_scorer, tmp_path):
    scorer = make_scorer(kind_config(steps=2), time_limit_s=0.0, cache_dir=tmp_path)
    q_r = hard_items(scorer, n=4)
    [score] = scorer.score([q_r], q_r, Baseline("base"), seed=0)
    assert score.reward is None and score.n_failed == 2
    for student in score.students:
        assert student.failure.startswith("StudentTimeout") and "after step 1/2" in student.failure
        assert len(student.log) == 1  # cooperative: stopped after the step that went over
    assert "time limit" in score.error
    assert scorer._cached(score.key, False) is None  # a timeout depends on the machine's load: not cached
    assert scorer.engine.loaded_adapters() == ["sv-soar-base"]


# --- Acc: one greedy answer a question ----------------------------------------------------------------------------


def test_acc_reads_one_greedy_answer_a_question_in_batches_under_the_baselines_adapter(make_scorer):
    """Acc(student, Q_R) (SOAR's R_kj, docs/design.md §4): one greedy completion a question, stopped at the JSON
    end, in batches of eval_batch_size, under the baseline's adapter. A scripted engine answers, because the
    random tiny model cannot be made to solve chosen questions; the scorer, its batching, its adapter and its
    grounding are real. (This was tests/test_pass_at_k.py's greedy_accuracy test: the library's one Acc is here.)"""
    from sv_soar.generation import Completion
    from sv_soar.student.adapters import BASE_POLICY_ADAPTER, adapter_state_dict

    scorer = make_scorer(kind_config(steps=1), students=1, eval_batch_size=3)
    rows = [{"question": f"q{i}", "answer": "digits"} for i in range(4)]
    answers = {"q0": "7", "q1": "x", "q2": "7", "q3": "7"}
    calls = []

    class ScriptedEngine:
        max_batch_size = 64

        def generate(self, prompts, params, adapters=None):
            calls.append((len(prompts), params, adapters))
            return [[Completion(text=answers[prompt[-1]["content"]], token_ids=[], prompt_token_ids=[],
                                finish_reason="stop")] for prompt in prompts]

    scorer.engine = ScriptedEngine()
    student = Baseline("student-1", adapter_state_dict(scorer.policy, BASE_POLICY_ADAPTER))
    assert scorer.baseline_accuracy(student, rows) == 0.75
    assert all(p.temperature == 0.0 and p.n == 1 and p.stop_at_json_end for _, p, _ in calls)
    assert [n for n, _, _ in calls] == [3, 1]
    assert all(a == [BASELINE_ADAPTER] * n for n, _, a in calls)
    assert scorer.baseline_accuracy(Baseline("base"), rows) == 0.75 and calls[-1][2] == [None]
    with pytest.raises(ValueError):
        scorer.baseline_accuracy(Baseline("base"), [])


# --- (e) Acc(baseline, Q_R) once per (baseline, Q_R) --------------------------------------------------------------


def test_baseline_accuracy_is_computed_once_per_baseline_and_q_r(make_scorer, monkeypatch):
    scorer = make_scorer(kind_config(steps=1), students=1)
    q_r = hard_items(scorer, n=6)
    calls = []
    evaluate = scorer._evaluate_baseline
    monkeypatch.setattr(scorer, "_evaluate_baseline", lambda b, q: calls.append((b.id, len(q))) or evaluate(b, q))

    assert scorer.baseline_accuracy(Baseline("base"), q_r) == 0.0
    prompts = scorer.engine.stats.prompts
    assert scorer.baseline_accuracy(Baseline("another name, same weights"), q_r) == 0.0
    assert scorer.engine.stats.prompts == prompts and len(calls) == 1
    first = scorer.score([q_r[:3]], q_r, Baseline("base"), seed=0, keep_adapters=True)[0]
    scorer.score([q_r[3:]], q_r, Baseline("base"), seed=0)
    assert len(calls) == 1 and first.seconds["baseline_evaluate"] == 0.0

    scorer.baseline_accuracy(Baseline("base"), q_r[:4])  # another Q_R
    student = Baseline("student", first.students[0].adapter_state)  # another baseline
    scorer.baseline_accuracy(student, q_r)
    scorer.baseline_accuracy(Baseline("same student", dict(student.adapter_state)), q_r)
    assert calls == [("base", 6), ("base", 4), (student.id, 6)]


def test_baseline_folder_round_trip(make_scorer, tmp_path):
    scorer = make_scorer(kind_config(steps=1), students=1)
    q_r = hard_items(scorer, n=3)
    [score] = scorer.score([q_r], q_r, Baseline("base"), seed=0, keep_adapters=True)
    baseline = Baseline("step-3", score.students[0].adapter_state)
    folder = save_baseline(baseline, tmp_path / "baseline")
    save_baseline(baseline, folder)  # overwriting leaves one whole folder
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                         "baseline.json"]
    loaded = load_baseline(folder)
    assert loaded.name == "step-3" and loaded.id == baseline.id
    # no config was given: rank and modules read off the weights, alpha by the project's α/r = 2
    assert (loaded.lora_config.r, loaded.lora_config.lora_alpha) == (8, 16)
    assert set(loaded.lora_config.target_modules) == set(ALL_LINEAR)
    # it is a real peft adapter folder: the engine loads it and answers as the scorer measured
    scorer.engine.load_adapter("reloaded", str(folder))
    out = scorer.engine.generate([KIND.prompt(r) for r in q_r], scorer.eval_params, adapters="reloaded")
    assert sum(is_kind(o[0].text, r) for o, r in zip(out, q_r)) / len(q_r) == score.students[0].accuracy
    bare = load_baseline(save_baseline(Baseline("base"), tmp_path / "bare"))
    assert bare.adapter_state is None and bare.id == "base"
    with pytest.raises(FileNotFoundError):
        load_baseline(tmp_path / "missing")


# --- (f) `sv-soar score` end to end ----------------------------------------------------------------------------------


def sv_soar(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "sv_soar.cli", "score", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_scores_datasets_and_reports_bad_input(tiny_model_dir, tmp_path):
    rows = generate_e1_flows(12, seed=5)
    write_jsonl(tmp_path / "hard" / "d_train.jsonl", rows[:6])
    write_jsonl(tmp_path / "x1.jsonl", rows[6:])
    bad = tmp_path / "x2.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "answer": "Malware"}) + "\n")
    common = ["--hard-set", str(tmp_path / "hard"), "--model", str(tiny_model_dir), "--preset", "cpu",
              "--students", "2", "--q-r", "4", "--no-progress"]

    done = sv_soar("--dataset", str(tmp_path / "x1.jsonl"), *common, "--cache", str(tmp_path / "cache"),
                   "--out", str(tmp_path / "score.json"), cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "R_k = +0.0000" in done.stdout and "student 1 (seed" in done.stdout and "time: train" in done.stdout
    result = json.loads((tmp_path / "score.json").read_text())
    [dataset] = result["datasets"]
    assert len(result["q_r"]) == 4 and dataset["rows"] == 6 and len(dataset["students"]) == 2
    assert dataset["reward"] == 0.0 and dataset["baseline_accuracy"] == 0.0  # a random model never labels E1
    assert all(len(s["log"]) == 3 and math.isfinite(s["log"][-1]["loss"]) for s in dataset["students"])
    assert list(tmp_path.joinpath("cache").rglob(dataset["key"] + ".json"))

    malformed = sv_soar("--dataset", str(tmp_path / "x1.jsonl"), "--dataset", str(bad), *common, cwd=REPO)
    assert malformed.returncode == 2
    assert f"{bad}:2:" in malformed.stderr and "Traceback" not in malformed.stderr
    assert len(malformed.stderr.strip().splitlines()) == 1

    unknown = sv_soar("--dataset", str(tmp_path / "x1.jsonl"), *common[:2], "--model", str(tmp_path / "nope"),
                      cwd=REPO)
    assert unknown.returncode == 2 and "unknown model" in unknown.stderr


def test_a_sampled_acc_is_graded_and_every_student_draws_the_baselines_random_numbers(make_scorer, tmp_path):
    """soar.q_r_samples > 1 at q_r_temperature > 0 (an option; SOAR's Acc is greedy): Acc is the mean success over
    that many sampled answers a question, so it is graded where the greedy Acc of these hard items is 0; each
    question's samples come from a stream seeded by its content, so a student whose adapter changes nothing
    (LoRA B = 0) scores exactly the base model's Acc, and R_k measures the student, not the dice. The sampling
    enters the reward cache's key; greedy keys stay what they were."""
    from sv_soar.reward_cache import reward_cache_key
    from sv_soar.student.adapters import BASE_POLICY_ADAPTER, adapter_state_dict

    greedy = make_scorer(kind_config(steps=1), students=1)
    q_r = hard_items(greedy, n=6)
    assert greedy.baseline_accuracy(Baseline("base"), q_r) == 0.0
    sampled = make_scorer(kind_config(steps=1), students=1, q_r_samples=8, q_r_temperature=1.0, eval_batch_size=5)
    base = sampled.baseline_accuracy(Baseline("base"), q_r)
    assert 0.0 < base < 1.0 and math.isclose(base * 48, round(base * 48))  # successes out of 6 x 8 answers
    no_op = Baseline("a student that changed nothing", adapter_state_dict(sampled.policy, BASE_POLICY_ADAPTER))
    assert sampled.baseline_accuracy(no_op, q_r) == base
    other = make_scorer(kind_config(steps=1), students=1, q_r_samples=8, q_r_temperature=1.0, eval_batch_size=64)
    assert other.baseline_accuracy(Baseline("base"), q_r) == base  # batching does not change the draws

    dataset = q_r[:3]
    assert greedy.cache_key(dataset, q_r, Baseline("base"), seed=0) == reward_cache_key(
        task="kind", model=greedy.model_name, dataset=dataset, baseline_id="base", q_r=q_r,
        config=greedy.config.model_dump(), grounding="correctness", students=1, seed=0, promoted=False)
    assert sampled.cache_key(dataset, q_r, Baseline("base"), seed=0) != greedy.cache_key(
        dataset, q_r, Baseline("base"), seed=0)
    with pytest.raises(ValueError, match="greedy answers are all alike"):
        make_scorer(q_r_samples=4)
