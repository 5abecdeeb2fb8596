"""student.finetune = "full": a student trains every weight of its own copy of the base model, on the tiny real
Llama (tests/conftest.py), through the real TransformersEngine and GroundedScorer."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.generation import SamplingParams
from sv_soar.baseline import Baseline
from sv_soar.grounded import GroundedScorer
from sv_soar.models import load_model
from sv_soar.student.adapters import load_baseline, save_baseline
from sv_soar.student.full_finetune import FULL_WEIGHTS, StoredWeights, trainable_copy
from sv_soar.student.trainer import StudentTrainConfig, student_policy, train_student
from tests.digits_task import DIGIT_ROWS, DIGITS, quiet, toy_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def full_config(**overrides) -> StudentTrainConfig:
    return toy_config(finetune="full", learning_rate=1e-3, **overrides)


@pytest.fixture
def base_and_copy(tiny_model_dir):
    """The frozen shared base model (student_policy leaves it bare under "full"), an engine over it, and an
    engine over the student copy."""
    model, tokenizer = load_model(str(tiny_model_dir))
    base = student_policy(model, full_config())
    engine = TransformersEngine(base, tokenizer)
    return base, engine, engine.over(trainable_copy(base))


def test_a_full_student_trains_every_weight_of_its_copy_and_learns_while_the_base_stays(base_and_copy):
    """The bandit of test_mean_reward_rises_on_a_learnable_toy_task, trained with no adapter at all."""
    base, engine, student = base_and_copy
    assert not hasattr(base, "peft_config") and not any(p.requires_grad for p in base.parameters())
    base_before = {k: v.clone() for k, v in base.state_dict().items()}
    config = full_config(steps=20, group_size=8, max_new_tokens=1, lr_schedule="constant", kl_coef=0.0)

    run = train_student(base, student, DIGITS, DIGIT_ROWS, config, adapter_name="full", seed=0, log=quiet)

    assert run.adapter_state.keys() == base_before.keys()  # the model's own keys, no lora_*
    changed = [k for k in base_before if not torch.equal(run.adapter_state[k], base_before[k])]
    assert any(k.endswith("mlp.down_proj.weight") for k in changed) and any("embed_tokens" in k for k in changed)
    assert all(torch.equal(v, base_before[k]) for k, v in base.state_dict().items())  # the base is untouched
    rewards = [entry["mean_reward"] for entry in run.log]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.2, rewards


def test_each_full_student_starts_from_its_init_weights_and_the_saved_folder_is_a_model(base_and_copy, tmp_path,
                                                                                        tiny_model_dir):
    base, engine, student = base_and_copy
    config = full_config(steps=2)
    first = train_student(base, student, DIGITS, DIGIT_ROWS, config, adapter_name="a", seed=0, log=quiet)
    again = train_student(base, student, DIGITS, DIGIT_ROWS, config, adapter_name="b", seed=0, log=quiet)
    # the second run reloaded the base's weights first: the same seed trains the same student
    assert all(torch.equal(first.adapter_state[k], again.adapter_state[k]) for k in first.adapter_state)
    onward = train_student(base, student, DIGITS, DIGIT_ROWS, config, adapter_name="c", seed=0, log=quiet,
                           init_adapter_state=first.adapter_state)
    assert not all(torch.equal(first.adapter_state[k], onward.adapter_state[k]) for k in first.adapter_state)

    folder = first.save(tmp_path / "student")
    assert (folder / FULL_WEIGHTS).is_file() and (folder / "config.json").is_file()
    assert not (folder / "adapter_config.json").exists()
    _, tokenizer = load_model(str(tiny_model_dir))
    reloaded = AutoModelForCausalLM.from_pretrained(str(folder))  # the folder is a transformers model
    prompts = [DIGITS.prompt(row) for row in DIGIT_ROWS[:3]]
    greedy = SamplingParams(max_new_tokens=6)
    student.model.load_state_dict(first.adapter_state)
    expected = [c[0].token_ids for c in student.generate(prompts, greedy)]
    assert [c[0].token_ids for c in TransformersEngine(reloaded, tokenizer).generate(prompts, greedy)] == expected


def test_full_training_refuses_an_engine_over_the_shared_base(base_and_copy):
    base, engine, _ = base_and_copy
    with pytest.raises(ValueError, match="own copy"):
        train_student(base, engine, DIGITS, DIGIT_ROWS, full_config(), adapter_name="x", seed=0, log=quiet)


def test_the_scorer_keeps_full_students_and_a_full_baseline_round_trips(tiny_model_dir, tmp_path):
    """keep_adapters gives whole-model weights; promoted to a baseline they save, load and score as before."""
    scorer = GroundedScorer(str(tiny_model_dir), DIGITS, full_config(steps=1), students=2, progress=False,
                            grounding="full", cache_dir=tmp_path / "cache")
    assert scorer.lockstep is False and scorer.student_engine is not None
    base_before = {k: v.clone() for k, v in scorer.policy.state_dict().items()}
    datasets = [DIGIT_ROWS[:4], DIGIT_ROWS[4:]]
    scores = scorer.score(datasets, DIGIT_ROWS, Baseline("base"), seed=0, keep_adapters=True)
    students = [s for score in scores for s in score.students]
    assert all(s.failure is None and s.accuracy is not None for s in students)
    assert all(s.adapter_state.keys() == base_before.keys() for s in students)
    # kept whole models are read back from their reward-cache files, not all held in memory
    assert all(isinstance(s.adapter_state, StoredWeights) and s.adapter_state.path.is_file() for s in students)
    assert all(torch.equal(v, base_before[k]) for k, v in scorer.policy.state_dict().items())

    baseline = Baseline("promoted", students[0].adapter_state)
    assert baseline.full_weights
    folder = save_baseline(baseline, tmp_path / "baseline")
    assert (folder / FULL_WEIGHTS).is_file()
    loaded = load_baseline(folder)
    assert loaded.full_weights and loaded.id == baseline.id
    # the baseline's Acc is its own model's: the accuracy that student was measured with
    assert scorer.baseline_accuracy(loaded, DIGIT_ROWS) == pytest.approx(students[0].accuracy)
    cached = scorer.score(datasets, DIGIT_ROWS, Baseline("base"), seed=0, keep_adapters=True)
    assert all(s.cached for s in cached)
    assert all(torch.equal(a.adapter_state[k], b.adapter_state[k]) for score, again in zip(scores, cached)
               for a, b in zip(score.students, again.students) for k in a.adapter_state)


def test_full_students_refuse_lockstep_and_vllm(tiny_model_dir):
    for options in ({"lockstep": True}, {"engine": "vllm"}):
        with pytest.raises(ValueError, match='student.finetune = "full"'):
            GroundedScorer(str(tiny_model_dir), DIGITS, full_config(), progress=False, **options)


def test_finetune_takes_lora_or_full_only():
    assert StudentTrainConfig().finetune == "lora"
    with pytest.raises(ValidationError, match="finetune") as info:
        StudentTrainConfig(finetune="qlora")
    assert "'lora' or 'full'" in str(info.value)
