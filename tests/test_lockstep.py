"""Students in lockstep, gradient checkpointing and the CUDA defaults, on the tiny real Llama (CPU).

Lockstep must train the students `train_student` trains one after another for the same seeds: same
completions, same rewards, same weights up to float rounding (the batched forward sums in another order).
"""

from __future__ import annotations

import pytest
import torch

from sv_soar.engines.transformers_engine import CPU_BATCH_SIZE, TransformersEngine, kv_cache_bytes_per_token
from sv_soar.generation import SamplingParams
from sv_soar.baseline import Baseline
from sv_soar.grounded import GroundedScorer
from sv_soar.models import default_dtype, load_model
from sv_soar.student.lockstep import LockstepStudent, train_students_lockstep
from sv_soar.student.trainer import remove_student_adapter, student_policy, train_student
from tests.digits_task import BROKEN, DIGIT_ROWS, DIGITS, TIMING_FIELDS, quiet, toy_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def shared(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    policy = student_policy(model, toy_config())
    return policy, TransformersEngine(policy, tokenizer)


def without_timings(log):
    return [{k: v for k, v in entry.items() if k not in TIMING_FIELDS} for entry in log]


SEEDS = [3, 11, 12]


def test_lockstep_students_equal_sequential_students(shared):
    policy, engine = shared
    config = toy_config(steps=3, group_size=4, max_new_tokens=6)
    rows = [DIGIT_ROWS, DIGIT_ROWS[:3], DIGIT_ROWS[2:]]  # other datasets too: "several datasets a batch"
    sequential = []
    for j, seed in enumerate(SEEDS):
        run = train_student(policy, engine, DIGITS, rows[j], config, adapter_name=f"seq{j}", seed=seed, log=quiet)
        remove_student_adapter(policy, f"seq{j}")
        sequential.append(run)

    calls = []
    generate_many = engine.generate_many
    engine.generate_many = lambda requests: calls.append(len(requests)) or generate_many(requests)
    lockstep = train_students_lockstep(
        policy, engine, DIGITS,
        [LockstepStudent(f"lock{j}", rows[j], seed, log=quiet) for j, seed in enumerate(SEEDS)], config)
    assert calls == [3, 3, 3]  # one generate a step for the three students
    for seq, lock in zip(sequential, lockstep, strict=True):
        assert not isinstance(lock, BaseException), lock
        for got, want in zip(without_timings(lock.log), without_timings(seq.log), strict=True):
            assert got == pytest.approx(want, rel=1e-5, abs=1e-7)
        assert [e["gen_tokens"] for e in lock.log] == [e["gen_tokens"] for e in seq.log]  # same completions
        assert lock.adapter_state.keys() == seq.adapter_state.keys()  # peft's saved keys carry no adapter name
        for key, value in seq.adapter_state.items():
            torch.testing.assert_close(lock.adapter_state[key], value, rtol=1e-4, atol=1e-6)
    # the students really differ from each other (else equality above would prove little)
    first, second = lockstep[0].adapter_state, lockstep[1].adapter_state
    assert not all(torch.equal(first[k], second[k]) for k in first)


def test_one_failing_student_does_not_stop_the_others(shared):
    policy, engine = shared
    config = toy_config(steps=2)
    stop = RuntimeError("time limit")

    def stop_after_first(entry):
        raise stop

    results = train_students_lockstep(policy, engine, DIGITS, [
        LockstepStudent("ok", DIGIT_ROWS, 0, log=quiet),
        LockstepStudent("stopped", DIGIT_ROWS, 1, log=stop_after_first),
    ], config)
    assert results[1] is stop
    assert len(results[0].log) == 2
    broken = train_students_lockstep(policy, engine, BROKEN, [LockstepStudent("nan", DIGIT_ROWS, 0, log=quiet)],
                                     config)
    assert "non-finite reward" in str(broken[0])


def test_generate_many_equals_separate_generates(shared):
    policy, engine = shared
    prompts = [DIGITS.prompt(row) for row in DIGIT_ROWS[:3]]
    a = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=5)
    b = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=9)
    together = engine.generate_many([(prompts, a, None), (prompts[:2], b, None)])
    assert [[c.token_ids for c in g] for g in together[0]] == [[c.token_ids for c in g]
                                                               for g in engine.generate(prompts, a)]
    assert [[c.token_ids for c in g] for g in together[1]] == [[c.token_ids for c in g]
                                                               for g in engine.generate(prompts[:2], b)]
    with pytest.raises(ValueError, match="except seed and n"):
        engine.generate_many([(prompts, a, None), (prompts, SamplingParams(max_new_tokens=4, seed=1), None)])


def test_scorer_in_lockstep_gives_the_sequential_rewards(tiny_model_dir):
    from tests.kind_task import KIND, kind_config

    def score(lockstep):
        scorer = GroundedScorer(load_model(str(tiny_model_dir)), KIND, kind_config(steps=3), students=3,
                                progress=False, lockstep=lockstep)
        dataset = [{"question": f"Item {i}: write the count.", "answer": "digits"} for i in range(6)]
        q_r = [{"question": f"Item {i}: write the count.", "answer": "digits"} for i in range(6, 14)]
        return scorer, scorer.score([dataset, dataset[:4]], q_r, Baseline("base"), seed=4)

    seq_scorer, sequential = score(False)
    lock_scorer, lockstep = score(True)
    assert seq_scorer.lockstep is False and lock_scorer.lockstep is True
    assert GroundedScorer.__init__.__kwdefaults__["lockstep"] is None  # auto: on for CUDA only
    for a, b in zip(sequential, lockstep, strict=True):
        assert [s.accuracy for s in a.students] == [s.accuracy for s in b.students]
        assert a.reward == b.reward
        assert [s.failure for s in b.students] == [None] * 3


def test_gradient_checkpointing_gives_the_same_update(shared):
    policy, engine = shared
    states = []
    for name, checkpointing in [("plain", False), ("checkpointed", True)]:
        run = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(steps=2, gradient_checkpointing=checkpointing),
                            adapter_name=name, seed=2, log=quiet)
        remove_student_adapter(policy, name)
        states.append(run.adapter_state)
    for key in states[0]:
        # recomputing the forward may sum in another order: float32 rounding, ~1e-5 on a weight of ~0.1
        torch.testing.assert_close(states[0][key], states[1][key], rtol=1e-3, atol=1e-5)
    base = policy.get_base_model()
    assert not getattr(base, "is_activation_checkpointing", None) and not any(
        getattr(m, "gradient_checkpointing", False) for m in base.modules())  # off again: rollouts need the KV cache


def test_cpu_defaults_are_unchanged_and_cuda_defaults_are_bf16(shared, tiny_model_dir):
    policy, engine = shared
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("cuda") == torch.bfloat16 and default_dtype("cuda:1") == torch.bfloat16
    assert next(policy.get_base_model().parameters()).dtype == torch.float32
    assert engine.max_batch_size is None and engine.auto_batch_size(500) == CPU_BATCH_SIZE
    config = policy.get_base_model().config  # 2 layers, 2 KV heads of 16 dims
    assert kv_cache_bytes_per_token(config, torch.float32) == 2 * 2 * 2 * 16 * 4
    assert kv_cache_bytes_per_token(config, torch.bfloat16) == 2 * 2 * 2 * 16 * 2
    with pytest.raises(ValueError, match="max_batch_size"):
        TransformersEngine(policy, engine.tokenizer, max_batch_size=0)


def test_lora_weights_stay_fp32_on_a_bf16_base(tiny_model_dir):
    """What a CUDA run gets from load_model (bf16), built on CPU: peft keeps the adapters in fp32, so the
    optimizer's state is fp32 too, and a training step runs."""
    model, tokenizer = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    policy = student_policy(model, toy_config())
    engine = TransformersEngine(policy, tokenizer)
    run = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(steps=1), adapter_name="bf", seed=0,
                        log=quiet)
    assert {v.dtype for v in run.adapter_state.values()} == {torch.float32}
    assert next(policy.get_base_model().parameters()).dtype == torch.bfloat16
