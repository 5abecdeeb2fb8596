"""The student inner loop on the tiny real Llama, generating through the real TransformersEngine.

E1 rewards are all zero for a random tiny model (it never writes a JSON label), which leaves the
policy gradient at zero; so most tests train on `DIGITS`, a toy task (tests/digits_task.py) whose reward is
the fraction of digits in the completion: a random tiny model writes ~40 % digits, and a student
can learn to write more.
"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.generation import SamplingParams
from sv_soar.models import load_model
from sv_soar.tasks import Task
from sv_soar.tasks.e1 import E1_TASK
from sv_soar.tasks.e1.flows import generate_e1_flows
from sv_soar.student.adapters import BASE_POLICY_ADAPTER, adapter_state_dict, student_adapter, student_policy
from sv_soar.student.config import StudentTrainConfig
from sv_soar.policy_gradient import StudentTrainingError, group_logprobs
from sv_soar.student.trainer import train_student
from tests.digits_task import BROKEN, DIGIT_ROWS, DIGITS, TIMING_FIELDS, quiet, toy_config

LOG_FIELDS = {"step", "mean_reward", "pass_rate", "mixed_groups", "kl", "loss", "lr", "grad_norm", "gen_tokens"} | TIMING_FIELDS

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def shared(tiny_model_dir):
    """One base model per test, wrapped once into the shared policy, and an engine over it."""
    model, tokenizer = load_model(str(tiny_model_dir))
    policy = student_policy(model, toy_config())
    return policy, TransformersEngine(policy, tokenizer)


def probe_logits(policy) -> torch.Tensor:
    with torch.no_grad():
        return policy(input_ids=torch.tensor([[5, 17, 42, 99, 7]])).logits


def without_timings(log):
    return [{k: v for k, v in entry.items() if k not in TIMING_FIELDS} for entry in log]


# --- (a) a run completes; only the student's LoRA weights change ------------------------------------


def test_run_trains_only_its_adapter_and_leaves_the_base_untouched(shared, capsys):
    policy, engine = shared
    base_before = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" not in n}
    placeholder_before = adapter_state_dict(policy, BASE_POLICY_ADAPTER)
    logits_before = probe_logits(policy)  # placeholder adapter active: lora_B = 0, the bare model

    config = toy_config(steps=3)
    with student_adapter(policy, "s1"):
        run = train_student(policy, engine, DIGITS, DIGIT_ROWS, config, adapter_name="s1", seed=0)
        printed = capsys.readouterr().out
        assert printed.count("step ") == 3 and "tok/s" in printed and "fwd/bwd" in printed

        assert [entry["step"] for entry in run.log] == [1, 2, 3]
        for entry in run.log:
            assert LOG_FIELDS <= set(entry), LOG_FIELDS - set(entry)
            assert all(math.isfinite(v) for v in entry.values())
            assert entry["gen_tokens"] > 0 and entry["seconds_generation"] > 0
        assert run.log[0]["lr"] == pytest.approx(config.learning_rate)  # cosine starts at the peak
        assert run.log[2]["lr"] < run.log[1]["lr"] < run.log[0]["lr"]

        # the adapter holds only LoRA weights, and training moved them (lora_B starts at 0)
        assert run.adapter_state and all("lora_" in k for k in run.adapter_state)
        assert any(v.abs().sum() > 0 for k, v in run.adapter_state.items() if "lora_B" in k)
        with torch.no_grad():
            assert not torch.allclose(probe_logits(policy), logits_before)  # s1 is active after training
            with policy.disable_adapter():
                torch.testing.assert_close(probe_logits(policy), logits_before, rtol=0, atol=0)

    # base weights and the other adapter are bit-for-bit unchanged, and s1 is gone again
    for name, param in policy.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base_before[name]), name
    for key, value in adapter_state_dict(policy, BASE_POLICY_ADAPTER).items():
        assert torch.equal(value, placeholder_before[key])
    assert "s1" not in policy.peft_config and engine.loaded_adapters() == [BASE_POLICY_ADAPTER]
    torch.testing.assert_close(probe_logits(policy), logits_before, rtol=0, atol=0)


def test_e1_rows_run_end_to_end(shared):
    """The real E1 task and rows: the run completes and logs the rubric reward (a random tiny model scores 0)."""
    policy, engine = shared
    rows = generate_e1_flows(6, seed=3)
    with student_adapter(policy, "e1-student"):
        run = train_student(policy, engine, E1_TASK, rows, StudentTrainConfig.cpu_small(steps=1, max_new_tokens=8),
                            adapter_name="e1-student", seed=0, log=quiet)
    assert len(run.log) == 1 and run.log[0]["gen_tokens"] > 0 and math.isfinite(run.log[0]["mean_reward"])


def test_saved_student_reloads_through_the_engine(shared, tmp_path):
    policy, engine = shared
    run = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(), adapter_name="s1", seed=0, log=quiet)
    folder = run.save(tmp_path / "s1")
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    assert len((folder / "student_log.jsonl").read_text().splitlines()) == 2
    engine.load_adapter("reloaded", str(folder))
    prompts = [DIGITS.prompt(row) for row in DIGIT_ROWS[:3]]
    greedy = SamplingParams(max_new_tokens=8)
    trained = engine.generate(prompts, greedy, adapters="s1")
    reloaded = engine.generate(prompts, greedy, adapters="reloaded")
    assert [c[0].token_ids for c in trained] == [c[0].token_ids for c in reloaded]


# --- (b) seeded runs are reproducible ---------------------------------------------------------------


def test_same_seed_same_student_and_different_seed_differs(shared):
    policy, engine = shared
    config = toy_config(steps=2)
    runs = {}
    for name, seed in [("first", 7), ("again", 7), ("other", 8)]:
        with student_adapter(policy, name):
            runs[name] = train_student(policy, engine, DIGITS, DIGIT_ROWS, config, adapter_name=name, seed=seed,
                                       log=quiet)
    a, b, c = runs["first"], runs["again"], runs["other"]
    assert without_timings(a.log) == without_timings(b.log)
    assert a.adapter_state.keys() == b.adapter_state.keys()
    assert all(torch.equal(a.adapter_state[k], b.adapter_state[k]) for k in a.adapter_state)
    assert without_timings(a.log) != without_timings(c.log)
    assert not all(torch.equal(a.adapter_state[k], c.adapter_state[k]) for k in a.adapter_state)


# --- (c) the loop learns what the reward asks for ---------------------------------------------------


def test_mean_reward_rises_on_a_learnable_toy_task(shared):
    """Fails if the policy-gradient sign, the advantages or the token alignment were wrong.

    One-token completions make it a bandit over the first token (a random tiny model writes an
    all-digit token ~50 % of the time): over longer completions the toy reward is too noisy for a
    20-step test to pass for every seed. Multi-token alignment is checked by the padding test below.
    """
    policy, engine = shared
    config = toy_config(steps=20, group_size=8, max_new_tokens=1, learning_rate=3e-2, lr_schedule="constant",
                        kl_coef=0.0, lora_rank=8, lora_alpha=16)
    run = train_student(policy, engine, DIGITS, DIGIT_ROWS, config, adapter_name="learner", seed=0, log=quiet)
    rewards = [entry["mean_reward"] for entry in run.log]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.2, rewards
    assert last > 0.85, rewards


# --- micro-batching changes memory, not the update ---------------------------------------------------


def test_micro_batch_size_does_not_change_the_update(shared):
    policy, engine = shared
    states = []
    for name, micro in [("whole", 16), ("pieces", 3)]:
        with student_adapter(policy, name):
            run = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(steps=1, micro_batch_size=micro),
                                adapter_name=name, seed=1, log=quiet)
        states.append(run.adapter_state)
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=1e-4, atol=1e-6)


def test_shared_prompt_logprobs_equal_separate_forwards(shared):
    """One prompt pass shared by a group (KV cache repeated) scores every token as a plain forward of
    prompt + completion does, gradients included; right padding changes nothing."""
    policy, _ = shared
    policy.set_adapter(BASE_POLICY_ADAPTER)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(5, 300, (9,), generator=g).tolist()
    completions = [torch.randint(5, 300, (n,), generator=g).tolist() for n in (5, 1, 8)]
    lora = [p for n, p in policy.named_parameters() if "lora_B" in n]  # lora_A's grad is 0 while B = 0
    for p in lora:
        p.requires_grad_(True)

    shared_lp = group_logprobs(policy, prompt, completions, temperature=0.7)
    shared_lp.sum().backward()
    shared_grads = [p.grad.clone() for p in lora]
    assert any(grad.abs().sum() > 0 for grad in shared_grads)
    policy.zero_grad()
    total = 0.0
    for j, ids in enumerate(completions):
        logits = policy(input_ids=torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
        alone = torch.log_softmax(logits / 0.7, dim=-1).gather(-1, torch.tensor(ids)[:, None])[:, 0]
        torch.testing.assert_close(shared_lp[j, : len(ids)], alone, rtol=1e-5, atol=1e-5)
        assert torch.all(shared_lp[j, len(ids) :] == 0)
        total = total + alone.sum()
    total.backward()
    for shared_grad, p in zip(shared_grads, lora):
        torch.testing.assert_close(shared_grad, p.grad, rtol=1e-4, atol=1e-5)


# --- (d) a student starts from the baseline's weights ----------------------------------------------


class RecordingEngine:
    """The real engine, plus a record of the student's weights when the first rollouts are drawn."""

    def __init__(self, engine, policy, adapter_name):
        self.engine, self.policy, self.adapter_name = engine, policy, adapter_name
        self.first_state = None

    def generate(self, prompts, params, adapters=None):
        if self.first_state is None:
            self.first_state = adapter_state_dict(self.policy, self.adapter_name)
        return self.engine.generate(prompts, params, adapters)


def test_init_adapter_state_is_the_starting_point(shared):
    policy, engine = shared
    baseline = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(), adapter_name="baseline", seed=0,
                             log=quiet)
    recorder = RecordingEngine(engine, policy, "child")
    with student_adapter(policy, "child"):
        child = train_student(policy, recorder, DIGITS, DIGIT_ROWS, toy_config(), adapter_name="child", seed=1,
                              init_adapter_state=baseline.adapter_state, log=quiet)
    assert recorder.first_state.keys() == baseline.adapter_state.keys()
    for key, value in baseline.adapter_state.items():
        assert torch.equal(recorder.first_state[key], value), key
    assert not all(torch.equal(child.adapter_state[k], baseline.adapter_state[k]) for k in child.adapter_state)

    # without init_adapter_state a student starts from peft's default init, not from the baseline
    fresh = RecordingEngine(engine, policy, "fresh")
    with student_adapter(policy, "fresh"):
        train_student(policy, fresh, DIGITS, DIGIT_ROWS, toy_config(steps=1), adapter_name="fresh", seed=2,
                      log=quiet)
    assert not all(torch.equal(fresh.first_state[k], baseline.adapter_state[k]) for k in baseline.adapter_state)


CONSTANT = Task("constant", "Answer.", lambda t, r: {"reward": 1.0}, lambda t, r: True, lambda r: "all", lambda r: r)


def test_a_student_from_a_promoted_baseline_has_zero_kl_at_its_first_step(shared):
    """The KL reference is where a student starts (docs/design.md §4), not the base model: a student copied from a
    trained baseline is its own reference at step 1, so the KL and its gradient are exactly zero there, whatever β."""
    policy, engine = shared
    baseline = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(steps=2), adapter_name="baseline",
                             seed=0, log=quiet)
    children = {}
    for kl_coef in (0.0, 10.0):
        with student_adapter(policy, f"child-{kl_coef:g}"):
            children[kl_coef] = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(steps=1, kl_coef=kl_coef),
                                              adapter_name=f"child-{kl_coef:g}", seed=1,
                                              init_adapter_state=baseline.adapter_state, log=quiet)
    first = children[10.0].log[0]
    assert first["grad_norm"] > 0  # the step had a signal, so the zero KL is not a skipped step
    assert first["kl"] == 0.0
    for key, value in children[0.0].adapter_state.items():  # β = 10 or 0: the same first step
        assert torch.equal(children[10.0].adapter_state[key], value), key
    assert not any(name.endswith("-ref") for name in policy.peft_config)  # the reference adapters went too


@pytest.mark.parametrize("from_baseline", [False, True])
def test_one_token_answers_read_the_reference_once_a_prompt_and_step_exactly_as_without(shared, from_baseline):
    """One-token answers (the mechanism task): a student run computes π_ref's distribution at a prompt's end once
    and reads it after, for the base model (adapters off) and for a promoted baseline (a reference adapter). Three
    steps of two prompts with a cache run the reference forward twice, not six times, and leave weights, loss and
    KL bitwise equal to the same steps without one."""
    from sv_soar.student.adapters import add_student_adapter, remove_student_adapter
    from sv_soar.policy_gradient import policy_gradient_step
    from sv_soar.student.trainer import student_reference

    policy, engine = shared
    config = toy_config(kl_coef=0.5)
    init = None
    if from_baseline:
        init = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(steps=1), adapter_name="baseline",
                             seed=0, log=quiet).adapter_state
        remove_student_adapter(policy, "baseline")
    prompts = []
    for row in DIGIT_ROWS[:2]:
        text = engine.tokenizer.apply_chat_template(DIGITS.prompt(row), add_generation_prompt=True, tokenize=False)
        prompts.append(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    groups = [(prompt, [([5], 0.5), ([9], -0.5), ([5], 0.5), ([11], -0.5)]) for prompt in prompts]
    base = policy.get_base_model()
    results = {}
    for cached in (False, True):
        torch.manual_seed(0)
        name = f"cache-{cached}"
        params = add_student_adapter(policy, name, config, init)
        reference = student_reference(policy, name, config, init)
        optimizer, cache, forwards = config.make_optimizer(params), ({} if cached else None), []
        hook = base.register_forward_pre_hook(lambda module, args: forwards.append(torch.is_grad_enabled()))
        try:
            steps = [policy_gradient_step(policy, params, optimizer, groups, lr=1e-2, kl_coef=0.5, temperature=1.0,
                                          max_grad_norm=1.0, micro_batch_size=16, reference=reference,
                                          reference_cache=cache) for _ in range(3)]
        finally:
            hook.remove()
        results[cached] = ([p.detach().clone() for p in params], [(s["loss"], s["kl"]) for s in steps],
                           forwards.count(False))
        remove_student_adapter(policy, name)
    (uncached_weights, uncached_steps, uncached_forwards), (weights, steps, reference_forwards) = results.values()
    assert (uncached_forwards, reference_forwards) == (6, 2)  # π_ref's forwards (no grad): a prompt a step vs once
    assert steps == uncached_steps and steps[-1][1] > 0  # the KL is live: the reference is read, and the same
    assert all(torch.equal(a, b) for a, b in zip(weights, uncached_weights))


def test_a_student_whose_groups_carry_no_advantage_does_not_move_at_any_kl(shared):
    """Every group unanimous (a constant reward): no policy gradient, so no step at all, whatever the KL's β or the
    weight decay: the student stays exactly the baseline it was copied from (docs/design.md §4)."""
    policy, engine = shared
    baseline = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(steps=2), adapter_name="baseline",
                             seed=0, log=quiet)
    with student_adapter(policy, "still"):
        still = train_student(policy, engine, CONSTANT, DIGIT_ROWS, toy_config(steps=3, kl_coef=0.5, weight_decay=0.1),
                              adapter_name="still", seed=1, init_adapter_state=baseline.adapter_state, log=quiet)
    assert [entry["grad_norm"] for entry in still.log] == [0.0, 0.0, 0.0]
    for key, value in baseline.adapter_state.items():
        assert torch.equal(still.adapter_state[key], value), key


def test_init_adapter_state_of_another_shape_is_refused(shared):
    policy, engine = shared
    baseline = train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(steps=1), adapter_name="baseline",
                             seed=0, log=quiet)
    with pytest.raises(ValueError, match="does not fit"):
        train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(lora_target_modules=["k_proj"]),
                      adapter_name="odd", seed=0, init_adapter_state=baseline.adapter_state, log=quiet)
    assert "odd" not in policy.peft_config


# --- (e) divergence is an error the caller can count ----------------------------------------------------


def test_nan_reward_raises_student_training_error_and_the_adapter_is_removed(shared):
    policy, engine = shared
    with pytest.raises(StudentTrainingError, match="non-finite reward"):
        with student_adapter(policy, "doomed"):
            train_student(policy, engine, BROKEN, DIGIT_ROWS, toy_config(), adapter_name="doomed", seed=0, log=quiet)
    assert "doomed" not in policy.peft_config


# --- the config ------------------------------------------------------------------------------------------


def test_config_defaults_are_the_papers_and_errors_name_the_field():
    config = StudentTrainConfig()
    assert (config.steps, config.steps_after_promotion, config.batch_prompts, config.group_size) == (10, 15, 8, 32)
    assert (config.learning_rate, config.lr_schedule) == (1e-3, "cosine")  # LoRA's, calibrated; full: SOAR's 1e-5
    assert (config.kl_coef, config.temperature) == (0.001, 1.0)
    assert config.estimator == "rloo" and config.reward == "full"
    assert config.steps_for(promoted=False) == 10 and config.steps_for(promoted=True) == 15
    small = StudentTrainConfig.cpu_small(steps=5)
    assert small.steps == 5 and small.group_size == 4 and small.max_new_tokens == 48
    assert small.learning_rate == 1e-3  # the calibrated LoRA rate: at 1e-4 its steps did not raise the reward
    with pytest.raises(ValidationError, match="group_sise"):
        StudentTrainConfig(group_sise=4)
    with pytest.raises(ValidationError, match="learning_rate"):
        StudentTrainConfig(learning_rate=float("inf"))
    with pytest.raises(ValidationError, match="correctness"):
        StudentTrainConfig(estimator="maxrl")
    StudentTrainConfig(estimator="maxrl", reward="correctness")


@pytest.mark.parametrize("estimator", ["grpo", "maxrl"])
def test_other_estimators_run(shared, estimator):
    policy, engine = shared
    config = toy_config(steps=1, estimator=estimator, reward="correctness")
    run = train_student(policy, engine, DIGITS, DIGIT_ROWS, config, adapter_name=estimator, seed=0, log=quiet)
    assert run.log[0]["mean_reward"] == run.log[0]["pass_rate"]  # correctness reward = success indicator


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_first_step_grows_with_the_signal_under_sgd_not_under_adamw(shared, optimizer):
    """issue 27: a fresh AdamW's first step is ≈ lr·sign(g) whatever the size of g, so a dataset that carries half
    the signal moves a student as far as one that carries all of it; SGD's step is lr·g (student.optimizer)."""
    from sv_soar.student.adapters import add_student_adapter, remove_student_adapter
    from sv_soar.policy_gradient import policy_gradient_step

    policy, engine = shared
    config = toy_config(optimizer=optimizer, learning_rate=1e-2 if optimizer == "adamw" else 1.0, kl_coef=0.0,
                        max_grad_norm=1e6)
    text = engine.tokenizer.apply_chat_template(DIGITS.prompt(DIGIT_ROWS[0]), add_generation_prompt=True,
                                                tokenize=False)
    prompt = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    moved = {}
    for scale in (1.0, 2.0):
        torch.manual_seed(0)
        params = add_student_adapter(policy, "signal", config)
        before = [p.detach().clone() for p in params]
        policy_gradient_step(policy, params, config.make_optimizer(params),
                             [(prompt, [([5, 6, 7], 0.5 * scale), ([8, 9], -0.5 * scale)])], lr=config.learning_rate,
                             kl_coef=0.0, temperature=1.0, max_grad_norm=1e6, micro_batch_size=16)
        moved[scale] = sum((p.detach() - b).norm() ** 2 for p, b in zip(params, before)).sqrt().item()
        remove_student_adapter(policy, "signal")
    ratio = moved[2.0] / moved[1.0]
    assert ratio == pytest.approx(2.0 if optimizer == "sgd" else 1.0, rel=0.05)


def test_balanced_batches_hold_each_answer_equally_and_shuffled_is_the_unwritten_default():
    """`batching = "balanced"` (issue 27): on a dataset of 3 Malicious and 9 Benign problems every batch of 8 holds 4
    of each, so the gradient along the answer prior cancels within a batch; every problem of an answer is drawn once
    before any is drawn again. The default "shuffled" is left out of a config's dump (reward-cache keys unchanged)."""
    import random

    from sv_soar.student.trainer import _shuffled_batches

    rows = [{"question": f"m{i}", "answer": "Malicious"} for i in range(3)]
    rows += [{"question": f"b{i}", "answer": "Benign"} for i in range(9)]
    batches = _shuffled_batches(rows, 8, random.Random(0), "balanced")
    drawn = [next(batches) for _ in range(9)]
    for batch in drawn:
        assert sorted(row["answer"] for row in batch) == ["Benign"] * 4 + ["Malicious"] * 4
    benign = [row["question"] for batch in drawn for row in batch if row["answer"] == "Benign"]
    assert sorted(benign[:9]) == sorted(f"b{i}" for i in range(9))  # a full pass before a repeat
    distinct = [{"question": f"q{i}", "answer": {"violations": [i]}} for i in range(16)]  # every answer differs
    firsts = {tuple(r["question"] for r in next(_shuffled_batches(distinct, 8, random.Random(s), "balanced")))
              for s in range(3)}
    assert len(firsts) == 3  # the seed still decides the batches
    with pytest.raises(ValueError, match="no problems"):
        next(_shuffled_batches([], 8, random.Random(0), "balanced"))
    shuffled = next(_shuffled_batches(rows, 8, random.Random(0)))
    assert len({row["question"] for row in shuffled}) == 8
    assert "batching" not in StudentTrainConfig().model_dump()
    assert StudentTrainConfig(batching="balanced").model_dump()["batching"] == "balanced"
