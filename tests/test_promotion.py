"""SOAR's promotion rule (sv_soar.promotion): R̂_t, the moving average over a window that restarts at each
promotion, τ, the median student of argmax_k R_k, PQ, and the run directory (sv_soar.promotion_run: atomic,
resumable, and clear about a corrupt or foreign state.json).

Scores are real `DatasetScore`s with real LoRA-shaped tensors; no model is needed for the rule itself.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import sv_soar.promotion_run as promotion_run
from sv_soar.baseline import Baseline
from sv_soar.promotion import PromotionState, median_student, moving_average, promote, reward_hat
from sv_soar.promotion_run import PromotionRun, PromotionStateError, load_state
from sv_soar.scores import DatasetScore, StudentResult
from sv_soar.student.adapters import save_baseline

KEYS = ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")


def adapter(seed: int) -> dict[str, torch.Tensor]:
    """Distinct LoRA weights (rank 2 on a 6-wide q_proj) so each student has its own Baseline.id."""
    g = torch.Generator().manual_seed(seed)
    return {KEYS[0]: torch.randn(2, 6, generator=g), KEYS[1]: torch.randn(6, 2, generator=g)}


def student(seed: int, reward: float | None) -> StudentResult:
    failed = reward is None
    return StudentResult(seed=seed, accuracy=None if failed else 0.5 + reward, reward=reward,
                         failure="StudentTrainingError: diverged" if failed else None, seconds_train=0.1, log=[],
                         adapter_state=None if failed else adapter(seed))


def score(student_rewards: list[float | None], seed0: int = 0) -> DatasetScore:
    students = [student(seed0 + j, r) for j, r in enumerate(student_rewards)]
    finished = [r for r in student_rewards if r is not None]
    return DatasetScore(reward=sum(finished) / len(finished) if finished else None, baseline_accuracy=0.5,
                        students=students, error=None if finished else "all failed", cached=False,
                        key=f"k{seed0}", seconds={})


def rows(tag: str, count: int = 2) -> list[dict]:
    return [{"question": f"Device d observed tcp {1000 + i}→23 ({tag}), duration ?, bytes ?, flags [S]. "
                         "Decide: Malicious or Benign (you may Abstain if unsure).",
             "answer": "Malicious", "meta": {"source": "teacher"}} for i in range(count)]


def step_with(state: PromotionState, r_k: list[float | None]):
    """One step whose dataset k has R_k = r_k[k] (four students at R_k ± 0.02, ± 0.01)."""
    scores = [score([None] * 4 if r is None else [r - 0.02, r + 0.01, r - 0.01, r + 0.02], seed0=10 * k)
              for k, r in enumerate(r_k)]
    return promote(state, scores, [rows(f"x{k}") for k in range(len(r_k))])


def new_state(**kw) -> PromotionState:
    return PromotionState(task="e1", model="tiny", **kw)


# ----------------------------------------------------------------------------- the rule


def test_reward_hat_and_moving_average():
    assert reward_hat([score([0.1, 0.3]), score([None]), score([-0.2])]) == pytest.approx((0.2 - 0.2) / 2)
    assert reward_hat([score([None, None])]) is None and reward_hat([]) is None
    assert moving_average([0.1, 0.2], 3) is None  # the window is not full yet
    assert moving_average([5.0, 0.1, 0.2, 0.3], 3) == pytest.approx(0.2)


def test_promotes_only_once_the_window_average_exceeds_tau():
    state = new_state()  # the paper's window 3, tau 0.01
    for r in (0.05, 0.05):  # two steps far above tau: the 3-step window is not full, no promotion
        decision = step_with(state, [r, r])
        assert not decision.promoted and decision.record.moving_average is None
        state = decision.state
    decision = step_with(state, [-0.05, -0.04])  # mean(0.05, 0.05, -0.045) = 0.0183 > 0.01
    assert decision.promoted and decision.record.moving_average == pytest.approx((0.1 - 0.045) / 3)
    assert decision.state.promotions == 1 and decision.state.promoted and decision.state.step == 3
    assert state.promotions == 0 and state.step == 2  # promote() is pure

    at_tau = new_state(window=1)
    assert not step_with(at_tau, [0.01]).promoted  # "exceeds": equal to tau does not promote
    assert step_with(at_tau, [0.0101]).promoted


def test_promoted_baseline_is_the_median_student_of_argmax_k_and_pq_gets_x_k():
    state = new_state(window=1)
    scores = [score([0.0, 0.1, 0.2, 0.1], seed0=0),  # R_1 = 0.1
              score([0.2, 0.5, 0.3, 0.6], seed0=10),  # R_2 = 0.4: argmax
              score([None, None, None, None], seed0=20)]  # no R_3
    datasets = [rows("x0"), rows("x1", 3), rows("x2")]
    decision = promote(state, scores, datasets)
    assert decision.promoted and decision.record.promoted_dataset == 1
    # finished rewards sorted: 0.2 (seed 10), 0.3 (12), 0.5 (11), 0.6 (13); lower median = 0.3 (seed 12)
    assert decision.record.promoted_student_seed == 12
    assert torch.equal(decision.baseline.adapter_state[KEYS[0]], adapter(12)[KEYS[0]])
    assert decision.state.baseline.id == decision.baseline.id != "base"
    assert decision.promoted_rows == datasets[1]
    assert decision.state.promoted_datasets == ["promoted/0001-step-000000.jsonl"]
    assert decision.record.dataset_rewards == [pytest.approx(0.1), pytest.approx(0.4), None]


def test_median_student_skips_failed_students_and_ties_go_to_the_lowest_k():
    assert median_student(score([0.3, None, 0.1, 0.2], seed0=0)).seed == 3  # 0.1, 0.2, 0.3 -> 0.2
    assert median_student(score([0.7], seed0=5)).seed == 5
    with pytest.raises(ValueError, match="no student"):
        median_student(score([None, None]))
    tie = promote(new_state(window=1), [score([0.2], 0), score([0.2], 10)], [rows("a"), rows("b")])
    assert tie.record.promoted_dataset == 0


def test_window_restarts_after_a_promotion():
    state = new_state()
    for _ in range(3):
        decision = step_with(state, [0.1, 0.1])
        state = decision.state
    assert decision.promoted and state.window_rewards() == []
    # steps 4 and 5 are as good, but measured against the new baseline the window is not full yet
    for step in (3, 4):
        decision = step_with(state, [0.1, 0.1])
        assert not decision.promoted and decision.record.moving_average is None, step
        state = decision.state
    decision = step_with(state, [0.1, 0.1])
    assert decision.promoted and decision.state.promotions == 2
    assert [r.promoted for r in decision.state.history] == [False, False, True, False, False, True]


def test_failed_and_stale_steps_are_recorded_but_never_count():
    state = new_state()
    state = step_with(state, [0.1]).state
    failed = promote(state, [], [], error="RuntimeError: engine died")
    assert failed.record.reward_hat is None and failed.record.error == "RuntimeError: engine died"
    state = step_with(failed.state, [None, None]).state  # every dataset failed: R̂ None
    assert state.window_rewards() == [pytest.approx(0.1)] and state.step == 3
    state = step_with(state, [0.1]).state
    # a step scored against an older baseline (it overlapped a promotion) cannot promote
    stale = promote(state, [score([0.9, 0.9])], [rows("s")], baseline_id="0123456789abcdef")
    assert not stale.promoted and stale.record.moving_average is None
    assert stale.state.window_rewards() == state.window_rewards()
    fresh = step_with(state, [0.1])  # the window's third current-baseline step promotes
    assert fresh.promoted


def test_promotion_needs_the_students_adapters():
    s = score([0.3, 0.4])
    for result in s.students:
        result.adapter_state = None  # scored without keep_adapters=True
    with pytest.raises(ValueError, match="keep_adapters=True"):
        promote(new_state(window=1), [s], [rows("x")])
    with pytest.raises(ValueError, match="2 scores for 1 datasets"):
        promote(new_state(), [s, s], [rows("x")])


# ----------------------------------------------------------------------------- the run directory


def test_run_directory_persists_promotions_and_resumes(tmp_path):
    run = PromotionRun.open(tmp_path / "run", task="e1", model="tiny", window=1)
    assert (tmp_path / "run" / "state.json").is_file()  # written at once
    assert run.baseline().id == "base" and run.baseline().adapter_state is None

    first = step_with(run.state, [0.2, 0.1])
    run.commit(first)
    promoted_id = first.baseline.id
    assert run.baseline() is first.baseline
    second = step_with(run.state, [-0.3])  # no promotion: only state.json changes
    run.commit(second)

    again = PromotionRun.open(tmp_path / "run", task="e1", model="tiny", window=1)  # a restarted trainer
    assert again.state == run.state and again.state.step == 2 and again.state.promotions == 1
    assert again.baseline().id == promoted_id  # weights read back bit for bit
    assert again.promoted_questions() == rows("x0")
    files = sorted(str(p.relative_to(tmp_path / "run")) for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert files == ["baseline/0001-step-000000/adapter_config.json", "baseline/0001-step-000000/adapter_model.safetensors",
                     "baseline/0001-step-000000/baseline.json", "promoted/0001-step-000000.jsonl", "state.json",
                     "state.lock"]

    third = step_with(again.state, [0.5])
    again.commit(third)
    assert not (tmp_path / "run" / "baseline" / "0001-step-000000").exists()  # the old baseline is gone
    assert (tmp_path / "run" / "baseline" / "0002-step-000002").is_dir()
    assert again.promoted_questions() == rows("x0") + rows("x0")  # PQ: both promotions, in order
    assert again.state.promoted_datasets == ["promoted/0001-step-000000.jsonl", "promoted/0002-step-000002.jsonl"]
    with pytest.raises(ValueError, match="decision made at 2 steps, but the run has 3"):
        again.commit(third)  # the same decision twice


def test_crash_before_state_json_leaves_the_previous_state(tmp_path, monkeypatch):
    run = PromotionRun.open(tmp_path, task="e1", model="tiny", window=1)
    before = (tmp_path / "state.json").read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(promotion_run, "write_text_atomic", crash)  # the failing write is the commit point
    with pytest.raises(OSError, match="disk full"):
        run.commit(step_with(run.state, [0.3]))
    monkeypatch.undo()
    assert (tmp_path / "state.json").read_text() == before and run.state.step == 0
    resumed = PromotionRun.open(tmp_path, task="e1", model="tiny", window=1)
    assert resumed.state.step == 0 and resumed.baseline().id == "base"
    resumed.commit(step_with(resumed.state, [0.3]))  # the same step again overwrites the leftovers
    assert PromotionRun.open(tmp_path, task="e1", model="tiny", window=1).state.promotions == 1
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"format": "sv-soar-promotion", "task": "e1", "mod', "not valid JSON"),
        ("", "not valid JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        ('{"name": "some other tool", "step": 3}', "not an sv-soar promotion state"),
        ("[1, 2]", "not an sv-soar promotion state"),
        ('{"format": "sv-soar-promotion", "task": "e1", "model": "tiny", "step": -1}', "step:"),
        ('{"format": "sv-soar-promotion", "task": "e1", "model": "tiny", "surprise": 1}', "surprise:"),
    ],
    ids=["truncated", "empty", "binary", "foreign", "array", "bad field", "unknown field"],
)
def test_corrupt_or_foreign_state_json_names_the_file(tmp_path, content, message):
    path = tmp_path / "state.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PromotionStateError, match=message) as info:
        PromotionRun.open(tmp_path, task="e1", model="tiny")
    assert str(info.value).startswith(f"{path}:")
    with pytest.raises(PromotionStateError):
        load_state(path)


def test_resuming_with_other_settings_or_missing_files_is_refused(tmp_path):
    run = PromotionRun.open(tmp_path, task="e1", model="tiny", window=1)
    run.commit(step_with(run.state, [0.3]))
    for change, name in (({"model": "other"}, "model"), ({"tau": 0.5}, "tau"), ({"window": 3}, "window")):
        args = {"task": "e1", "model": "tiny", "window": 1, **change}
        with pytest.raises(PromotionStateError, match=f"this run has {name}="):
            PromotionRun.open(tmp_path, **args)

    # the baseline folder edited by hand: its weights no longer match the id the state names
    folder = tmp_path / run.state.baseline.folder
    save_baseline(Baseline("tampered", adapter_state=adapter(99)), folder)
    with pytest.raises(PromotionStateError, match="changed outside this run"):
        PromotionRun.open(tmp_path, task="e1", model="tiny", window=1).baseline()

    os.remove(tmp_path / run.state.promoted_datasets[0])
    with pytest.raises(PromotionStateError, match="promoted dataset 'promoted/0001-step-000000.jsonl' is missing"):
        PromotionRun.open(tmp_path, task="e1", model="tiny", window=1)


def test_state_json_is_plain_readable_json(tmp_path):
    run = PromotionRun.open(tmp_path, task="e1", model="tiny", window=1)
    run.commit(step_with(run.state, [0.25, None]))
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["format"] == "sv-soar-promotion" and data["version"] == 1 and data["promotions"] == 1
    (record,) = data["history"]
    assert record["dataset_rewards"] == [pytest.approx(0.25), None] and record["promoted"] is True
    assert data["baseline"]["folder"] == "baseline/0001-step-000000"


def test_two_handles_on_one_run_directory_see_each_others_commits(tmp_path):
    """Two env worker processes share a run directory: each promote + commit runs under `locked()`."""
    a = PromotionRun.open(tmp_path, task="e1", model="tiny", window=1)
    b = PromotionRun.open(tmp_path, task="e1", model="tiny", window=1)
    stale = step_with(b.state, [0.2])  # b decided before a committed
    with a.locked() as state:
        a.commit(step_with(state, [0.3]))
    with b.locked() as state:
        assert state.step == 1 and state.promotions == 1 and b.baseline().id == a.baseline().id
        with pytest.raises(ValueError, match="decision made at 0 steps, but the run has 1"):
            b.commit(stale)  # a decision from before the other's commit is refused, not written over it
        b.commit(step_with(state, [0.2]))
    final = PromotionRun.open(tmp_path, task="e1", model="tiny", window=1).state
    assert final.step == 2 and final.promotions == 2
    assert final.promoted_datasets == ["promoted/0001-step-000000.jsonl", "promoted/0002-step-000001.jsonl"]
