"""One-token answers (the mechanism task): a student step's rollouts and its update share one forward
(`TransformersEngine.first_tokens`, `sv_soar.student.trainer.fused_rollouts`). On the tiny real Llama: the fused
rollouts draw the tokens `generate` draws, their log π is a forward of each prompt alone (gradients included, the
prompts' shared prefix run once), and a fused student run takes the steps an unfused one takes."""

from __future__ import annotations

import pytest
import torch

from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.generation import SamplingParams
from sv_soar.models import load_model
from sv_soar.policy_gradient import group_logprobs
from sv_soar.student import trainer
from sv_soar.student.adapters import student_adapter, student_policy
from sv_soar.student.trainer import fused_rollouts, train_student
from tests.digits_task import DIGIT_ROWS, DIGITS, TIMING_FIELDS, quiet, toy_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ONE_TOKEN = {"max_new_tokens": 1, "group_size": 8, "batch_prompts": 4, "learning_rate": 3e-2}
# prompts of different lengths behind one chat template and system prompt: a shared prefix and left padding
ROWS = [{"question": "Count to " + "nine " * k + "now."} for k in (0, 3, 1, 6)]


@pytest.fixture
def shared(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    policy = student_policy(model, toy_config())
    return policy, TransformersEngine(policy, tokenizer)


def trained_adapter(policy, engine, name):
    """An adapter with non-zero lora_A and lora_B (two steps of DIGITS), active, every LoRA weight trainable."""
    train_student(policy, engine, DIGITS, DIGIT_ROWS, toy_config(steps=2), adapter_name=name, seed=0, log=quiet)
    return [p for n, p in policy.named_parameters() if p.requires_grad]


def test_first_tokens_draw_what_generate_draws_and_score_each_prompt_as_its_own_forward(shared):
    policy, engine = shared
    with student_adapter(policy, "s"):
        params = trained_adapter(policy, engine, "s")
        prompts = [DIGITS.prompt(row) for row in ROWS]
        sampling = SamplingParams(max_new_tokens=1, temperature=0.8, n=8, seed=3, stop_at_json_end=True)
        policy.eval()
        policy.zero_grad()  # the training's last gradients
        groups, logprobs = engine.first_tokens(prompts, sampling, "s")
        assert logprobs.shape == (len(ROWS), policy.config.vocab_size) and logprobs.requires_grad
        expected = engine.generate(prompts, sampling, adapters="s")
        assert [[c.token_ids for c in g] for g in groups] == [[c.token_ids for c in g] for g in expected]
        assert [[c.text for c in g] for g in groups] == [[c.text for c in g] for g in expected]
        assert len({c.token_ids[0] for g in groups for c in g}) > 1  # the draws vary: a real test of the streams

        tokens = [[c.token_ids for c in g] for g in groups]
        fused = torch.stack([logprobs[b, [ids[0] for ids in tokens[b]]] for b in range(len(ROWS))])
        fused.sum().backward()
        fused_grads = [p.grad.clone() for p in params]
        assert all(grad.abs().sum() > 0 for grad in fused_grads)
        policy.zero_grad()
        alone = torch.stack([group_logprobs(policy, groups[b][0].prompt_token_ids, tokens[b], 0.8)[:, 0]
                             for b in range(len(ROWS))])
        torch.testing.assert_close(fused, alone, rtol=1e-5, atol=1e-5)
        alone.sum().backward()
        for fused_grad, p in zip(fused_grads, params):
            torch.testing.assert_close(fused_grad, p.grad, rtol=1e-4, atol=2e-5)


def test_first_tokens_over_a_model_without_adapters(tiny_model_dir):
    """A bare model (no peft): the same draws as generate, and a gradient in the model's own weights."""
    model, tokenizer = load_model(str(tiny_model_dir))
    engine = TransformersEngine(model, tokenizer)
    prompts = [DIGITS.prompt(row) for row in ROWS]
    sampling = SamplingParams(max_new_tokens=1, temperature=1.0, n=4, seed=1)
    groups, logprobs = engine.first_tokens(prompts, sampling)
    expected = engine.generate(prompts, sampling)
    assert [[c.token_ids for c in g] for g in groups] == [[c.token_ids for c in g] for g in expected]
    logprobs[:, 5].sum().backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_first_tokens_refuses_what_it_cannot_differentiate(shared):
    _, engine = shared
    for bad in (SamplingParams(max_new_tokens=2, temperature=1.0), SamplingParams(max_new_tokens=1, temperature=0)):
        with pytest.raises(ValueError, match="one-token completions at a temperature > 0"):
            engine.first_tokens([DIGITS.prompt(ROWS[0])], bad)


def test_only_students_whose_step_is_one_forward_are_fused(shared):
    _, engine = shared
    assert fused_rollouts(engine, DIGITS, toy_config(**ONE_TOKEN))
    for other in ({"max_new_tokens": 2}, {"lora_dropout": 0.1}, {"gradient_checkpointing": True},
                  {"finetune": "full", "learning_rate": 1e-5}):
        assert not fused_rollouts(engine, DIGITS, toy_config(**{**ONE_TOKEN, **other})), other

    class GenerateOnly:  # an engine that cannot keep the graph (vLLM's, a recording wrapper)
        def generate(self, prompts, params, adapters=None):
            return engine.generate(prompts, params, adapters)

    assert not fused_rollouts(GenerateOnly(), DIGITS, toy_config(**ONE_TOKEN))


@pytest.mark.parametrize(("kl_coef", "from_baseline"), [(0.0, False), (0.05, False), (0.5, True)])
def test_a_fused_student_run_takes_the_steps_an_unfused_one_takes(shared, monkeypatch, kl_coef, from_baseline):
    """Three steps of a one-token student, fused and not: the same rollouts and rewards, the same loss and KL and
    the same weights up to float rounding; the fused run's update runs no forward of its own (two forwards a step:
    the shared prefix and the prompts), the unfused one a rollout prefill and then one a prompt. From a promoted
    baseline the KL's reference is a frozen adapter on the same model, switched on between the forward and the
    backward (what the mechanism comparison's students do after a promotion)."""
    policy, engine = shared
    config = toy_config(steps=3, kl_coef=kl_coef, **ONE_TOKEN)
    init = None
    if from_baseline:
        with student_adapter(policy, "baseline"):
            init = train_student(policy, engine, DIGITS, ROWS, toy_config(steps=2, **ONE_TOKEN), adapter_name="baseline",
                                 seed=0, log=quiet).adapter_state
    runs, forwards = {}, {}
    base = policy.get_base_model()
    for fused in (True, False):
        monkeypatch.setattr(trainer, "fused_rollouts", lambda *args, fused=fused: fused)
        calls = []
        hook = base.register_forward_pre_hook(lambda module, args, calls=calls: calls.append(1))
        try:
            with student_adapter(policy, f"f{fused}"):
                runs[fused] = train_student(policy, engine, DIGITS, ROWS, config, adapter_name=f"f{fused}", seed=4,
                                            init_adapter_state=init, log=quiet)
        finally:
            hook.remove()
        forwards[fused] = len(calls)
    assert forwards[True] == 2 * 3 + (len(ROWS) if kl_coef else 0)  # + π_ref once a prompt (its cache)
    assert forwards[False] > forwards[True]
    fused_log, plain_log = ([{k: v for k, v in e.items() if k not in TIMING_FIELDS} for e in runs[f].log]
                            for f in (True, False))
    assert [e["mean_reward"] for e in fused_log] == [e["mean_reward"] for e in plain_log]
    assert any(e["grad_norm"] > 0 for e in fused_log)  # steps were taken: the comparison is not of no-ops
    if kl_coef:
        assert fused_log[-1]["kl"] > 0  # the reference is read, and it has moved away from it
    for fused_entry, plain_entry in zip(fused_log, plain_log):
        assert fused_entry.keys() == plain_entry.keys()
        for key in fused_entry:
            assert fused_entry[key] == pytest.approx(plain_entry[key], rel=1e-4, abs=1e-6), key
    for key, value in runs[True].adapter_state.items():  # Adam's g/√v: a rounding-sized g may move by a bit more
        torch.testing.assert_close(value, runs[False].adapter_state[key], rtol=1e-3, atol=config.learning_rate / 300)
