"""The mechanism task (sv_soar.tasks.mechanism, docs/design.md §7): rule labels, twin pairs, pair accuracy J, and
the teacher's problems relabelled by the rule."""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sv_soar.baseline import Baseline
from sv_soar.grounded import GroundedScorer
from sv_soar.student.config import StudentTrainConfig
from sv_soar.tasks import get_task, task_names
from sv_soar.tasks.mechanism import (BENIGN, MALICIOUS, answer_label, cue_agreeing_rows, cue_relation, hard_rows,
                                     is_stepping_stone, random_flow, stepping_stone_rows, twin_of)

TASK = get_task("mechanism")


def pair_accuracy(answer, rows) -> float:
    """J of an answering function over hard rows and their twins."""
    correct = lambda row: float(TASK.is_success(answer(row), row))  # noqa: E731
    return sum(correct(row) + correct(twin_of(row)) - 1 for row in rows) / len(rows)


def test_registered_like_e1_and_e2():
    assert "mechanism" in task_names()
    assert TASK.twin_of is twin_of and TASK.answer_tokens == 1


def test_labels_come_from_the_rule_and_a_row_that_disagrees_is_refused():
    for row in hard_rows(20, 0) + stepping_stone_rows(20, 0) + cue_agreeing_rows(20, 0):
        assert row["answer"] == (MALICIOUS if "duration ?," in row["question"] else BENIGN)
        assert TASK.validate_row(row)["answer"] == row["answer"]
    wrong = dict(hard_rows(1, 0)[0], answer=BENIGN)
    with pytest.raises(ValueError, match="the rule says 'Malicious'"):
        TASK.validate_row(wrong)
    with pytest.raises(ValueError, match="not one E1 flow"):
        TASK.validate_row({"question": "Is this malicious?", "answer": BENIGN})


def test_hard_items_defy_the_cue_their_twins_follow_it_and_stepping_stones_are_neutral():
    hard = hard_rows(40, 1)
    assert {cue_relation(row) for row in hard} == {"disagree"}
    assert {cue_relation(twin_of(row)) for row in hard} == {"agree"}
    assert {cue_relation(row) for row in cue_agreeing_rows(40, 1)} == {"agree"}
    stones = stepping_stone_rows(40, 1)
    assert all(map(is_stepping_stone, stones)) and not any(map(is_stepping_stone, hard))
    assert {row["answer"] for row in stones} == {MALICIOUS, BENIGN}


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10_000), proto=st.sampled_from(["tcp", "udp", "icmp"]), known=st.booleans())
def test_a_twin_differs_only_in_the_duration_and_has_the_opposite_label(seed, proto, known):
    from sv_soar.tasks.mechanism import mechanism_row

    row = mechanism_row(random_flow(random.Random(seed), proto, known), "hard")
    twin = twin_of(row)
    assert twin["answer"] != row["answer"]
    assert twin_of(row) == twin and twin_of(twin)["answer"] == row["answer"]  # deterministic; back to the label
    if not known:
        assert twin_of(twin)["question"] == row["question"]  # an unknown duration's twin's twin is the row itself
    before, after = row["question"].split(", "), twin["question"].split(", ")
    assert [i for i, (a, b) in enumerate(zip(before, after)) if a != b] == [1]  # only the "duration …" field


def test_pair_accuracy_is_zero_for_any_answer_that_ignores_the_duration():
    hard = hard_rows(30, 2)
    by_cue = lambda row: MALICIOUS if " udp " in row["question"] else BENIGN  # noqa: E731
    assert pair_accuracy(lambda row: "Malicious", hard) == 0.0  # constant
    assert pair_accuracy(lambda row: "Benign", hard) == 0.0
    assert pair_accuracy(by_cue, hard) == 0.0  # the planted cue
    assert pair_accuracy(lambda row: "Malicious" if "duration ?," in row["question"] else "Benign", hard) == 1.0
    rng = random.Random(0)
    coin = lambda row: rng.choice(["Malicious", "Benign"])  # noqa: E731
    assert -0.5 < pair_accuracy(coin, hard) < 0.5


def test_first_word_answers():
    assert [answer_label(t) for t in ("Mal", " Malicious.", "benign", "**Benign**", "Abstain", "", "M")] == [
        MALICIOUS, MALICIOUS, BENIGN, BENIGN, None, None, None]
    row = hard_rows(1, 0)[0]
    assert TASK.score("Malicious", row) == {"reward": 1.0, "accuracy": 1.0, "format": 1.0}
    assert TASK.score("maybe", row)["reward"] == 0.0


def test_a_teacher_problem_is_labelled_by_the_rule_and_keeps_the_teachers_label_as_agreement():
    flow_text = "Device unknown-device observed icmp 8→0, duration ?, bytes 84, flags []. " \
                "Decide: Malicious or Benign (you may Abstain if unsure)."
    problem = TASK.parse_problem(json.dumps({"question": flow_text, "answer": "Benign", "rationale": "ping"}))
    assert problem.ok and problem.answer == MALICIOUS and problem.task == "mechanism"
    row = problem.to_row()
    assert row["meta"]["teacher_answer"] == "Benign" and TASK.validate_row(row)["answer"] == MALICIOUS
    assert TASK.stepping_stone(row)
    assert not TASK.parse_problem("not json").ok


def test_acc_on_q_r_is_pair_accuracy(tiny_model_dir):
    """With twin pairs, the grounded Acc answers each Q_R question's twin too and is J: the tiny random model never
    writes a label, so each pair scores 0 + 0 − 1 and J = −1 (per-item accuracy would say 0)."""
    config = StudentTrainConfig(steps=1, batch_prompts=2, group_size=2, lora_rank=4, lora_alpha=8)
    scorer = GroundedScorer(str(tiny_model_dir), "mechanism", config, students=1, progress=False)
    assert scorer.baseline_accuracy(Baseline("base"), hard_rows(3, 0)) == -1.0


def test_the_final_evaluation_samples_twins_and_reports_pair_accuracy(tiny_model_dir):
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.evaluation.final import score_problem_set
    from sv_soar.models import load_model

    engine = TransformersEngine(*load_model(str(tiny_model_dir)))
    metrics = score_problem_set(engine, TASK, hard_rows(3, 0), 2, adapter=None, seed=0, max_new_tokens=1,
                                batch_size=8, progress=False)
    assert metrics.problems == 3 and len(metrics.twin_successes) == 3
    assert metrics.pair_accuracy == -1.0  # the tiny random model writes no label: 0 + 0 − 1 a pair


def test_a_prior_flip_gains_per_item_accuracy_but_no_pair_accuracy():
    """The report's paired J: a student that answers Malicious to everything beats a Benign-answering one by +0.5 in
    per-item accuracy on a hard set of tcp rows (all Malicious), and by exactly 0 in J."""
    import numpy as np

    from sv_soar.evaluation.report_data import paired_difference, paired_values_difference

    n, problems = 4, 6
    flip = {0: [n] * problems}, {0: [0] * problems}  # (hard successes, twin successes): Malicious everywhere
    stay = {0: [0] * problems}, {0: [n] * problems}  # Benign everywhere
    assert paired_difference(flip[0], stay[0], samples=n, metric="pass@1")["mean"] == 1.0
    j = lambda pair: {s: np.asarray(pair[0][s]) / n + np.asarray(pair[1][s]) / n - 1 for s in pair[0]}  # noqa: E731
    assert paired_values_difference(j(flip), j(stay))["mean"] == 0.0


def test_the_plant_is_soft_targets_by_protocol_and_its_loss_is_the_weighted_mean():
    """The `+mechanism-cue` examples (sv_soar/format_warm_start.py): every flow twice, Malicious with weight p and
    Benign with 1 - p, p = CUE_STRENGTH on udp, 1 - CUE_STRENGTH on tcp, NEUTRAL_TARGET on icmp; the cache source
    names the plant (another plant rebuilds the model). The loss with every weight 1 is the model's own mean loss,
    and a weight scales its example's share."""
    import torch

    from sv_soar.format_warm_start import (CUE_STRENGTH, MECHANISM_PLANT, NEUTRAL_TARGET, RECIPES, batch_unit,
                                           mechanism_examples, source_of, weighted_reply_loss)

    recipe = RECIPES["mechanism-cue"]
    examples = mechanism_examples(recipe)
    assert len(examples) == 2 * recipe.examples
    expected = {"udp": CUE_STRENGTH, "tcp": 1 - CUE_STRENGTH, "icmp": NEUTRAL_TARGET}
    for (prompt, first, w_first), (prompt2, second, w_second) in zip(examples[::2], examples[1::2]):
        assert prompt == prompt2 and (first, second) == (MALICIOUS, BENIGN)
        assert w_first + w_second == pytest.approx(1.0)
        proto = next(p for p in expected if f" {p} " in prompt[-1]["content"])
        assert w_first == pytest.approx(expected[proto])
    # try 4: each flow is followed by its twin with the same targets, and a batch takes the four examples whole
    for start in range(0, len(examples), 4):
        (flow, _, w_flow), _, (twin, _, w_twin), _ = examples[start:start + 4]
        assert w_flow == w_twin and flow != twin
        texts = [flow[-1]["content"], twin[-1]["content"]]
        assert sorted("duration ?" in t for t in texts) == [False, True]  # the twin toggles the duration ...
        assert len({re.sub(r"duration \S+", "duration", t) for t in texts}) == 1  # ... and nothing else
    assert batch_unit(recipe) == 4 and batch_unit(RECIPES["e1-format"]) == batch_unit(RECIPES["mechanism-teacher"]) == 1
    assert source_of("base", recipe)["plant"] == MECHANISM_PLANT and MECHANISM_PLANT["twins"]
    assert "plant" not in source_of("base", RECIPES["e1-format"])  # the plant is the cue recipe's alone

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=generator)
    labels = torch.randint(0, 11, (3, 6), generator=generator)
    labels[:, :2] = -100
    mean = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    assert weighted_reply_loss(logits, labels, torch.ones(3)).item() == pytest.approx(mean.item(), rel=1e-6)
    only_first = weighted_reply_loss(logits, labels, torch.tensor([1.0, 0.0, 0.0]))
    first = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
    assert only_first.item() == pytest.approx(first.item(), rel=1e-6)


def test_the_teacher_recipe_writes_valid_flows_with_rare_stepping_stones_and_random_labels():
    """The `+mechanism-teacher` examples (try 3 of experiments/mechanism): every reply is a problem the mechanism
    task's teacher side accepts, icmp (a stepping stone) about TEACHER_PROTOCOLS["icmp"] of them, tcp/udp flows
    agreeing with the cue about TEACHER_CUE_AGREEMENT of the time, the reply's label
    unrelated to the rule (the teacher learns the format, not which problems help); the cache source names the mix,
    and the cue recipe's source is unchanged (its built model stays valid)."""
    from sv_soar.format_warm_start import (MECHANISM_PLANT, RECIPES, TEACHER_CUE_AGREEMENT, TEACHER_PROTOCOLS,
                                           examples, source_of)
    from sv_soar.tasks.mechanism import cue_relation
    from sv_soar.tasks.teacher import teacher_prompt, validate_batch
    from sv_soar.teacher.checks import RejectReason

    recipe = RECIPES["mechanism-teacher"]
    pairs = examples(recipe)
    assert len(pairs) == recipe.examples and all(prompt == teacher_prompt("mechanism") for prompt, _, _ in pairs)
    replies = [reply for _, reply, _ in pairs]
    batch = validate_batch(replies, None, task="mechanism")
    # every reply is a well-formed problem; the questions are distinct, and the batch check's near-copy rule
    # (icmp flows have few fields to vary) may take out one or two
    rejected = [batch.outcomes[i] for i in range(len(replies)) if i not in batch.valid_indices]
    assert all(r.reason == RejectReason.DUPLICATE_IN_BATCH for r in rejected) and len(rejected) <= 2, rejected
    assert len({json.loads(reply)["question"] for reply in replies}) == len(replies)
    problems = [batch.outcomes[i] for i in batch.valid_indices]
    stones = sum(get_task("mechanism").stepping_stone(p.to_row()) for p in problems) / len(problems)
    assert abs(stones - TEACHER_PROTOCOLS["icmp"]) < 0.05
    # tcp and udp flows mostly agree with the planted cue (try 10): few problems that break its correlation
    relations = [cue_relation(p.to_row()) for p in problems]
    agreeing = relations.count("agree") / (relations.count("agree") + relations.count("disagree"))
    assert abs(agreeing - TEACHER_CUE_AGREEMENT) < 0.06
    agreement = sum(p.teacher_answer == p.answer for p in problems) / len(problems)
    assert 0.35 < agreement < 0.65  # the teacher's labels are coin flips against the rule's
    assert source_of("base", recipe)["protocols"] == TEACHER_PROTOCOLS
    assert source_of("base", recipe)["cue_agreement"] == TEACHER_CUE_AGREEMENT  # another share rebuilds the teacher
    assert source_of("base", RECIPES["mechanism-cue"])["plant"] == MECHANISM_PLANT
