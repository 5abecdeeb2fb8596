"""Format warm start: a derived model that answers in the task's JSON format, for models too small
to follow the prompt alone. Not part of SOAR; a documented aid for the embedded 135M model.

Measured with SmolLM2-135M-Instruct (2-core CPU): as a student it never answers SV-Bench's E1 JSON
greedily (0/100 on the mini set; 2 % of samples at T=1), and as a teacher it writes 0 valid problems
in 32 rollouts (31 not JSON). Then no RL signal exists on either side: every student reward is 0,
every teacher rollout is rejected. The paper's 3B model needs none of this.

A recipe fits a LoRA adapter by cross-entropy on example replies, merges it, and saves a full model
folder in the cache under `<base>+<recipe>` (built once, atomically, like the embedded conversion):

    smollm2-135m-instruct+e1-student-format   E1 prompts -> {"label", "confidence", "rationale"}
    smollm2-135m-instruct+e1-teacher-format   the teacher prompt -> {"question", "answer", "rationale"}
    smollm2-135m-instruct+e1-format           both, half the examples each: one model that is
                                              teacher and student, as in SOAR (one build, not two)

The examples teach the FORMAT only: questions are built-in flows, and every label is drawn uniformly
at random, independently of the flow; confidences too. So the derived student knows nothing about
which flows are malicious (its fail@K hard set is real), and the derived teacher knows nothing about
which problems help. That is left to RL and to SOAR's grounded reward. Measured: the teacher recipe
takes SmolLM2-135M from 0 % to 88 % valid problems (40 steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file

from sv_soar.progress import progress_bar
from sv_soar.student.adapters import lora_config
from sv_soar.student.config import ALL_LINEAR
from sv_soar.tasks import get_task
from sv_soar.tasks.e1.flows import generate_e1_flows
from sv_soar.tasks.e1.question import render_question
from sv_soar.tasks.mechanism import BENIGN, CUE, MALICIOUS, mechanism_row, random_flow, twin_of
from sv_soar.tasks.teacher import teacher_prompt

# The cache key of a built model (`source_of`, which names its folder) holds the recipe, a digest of its examples
# (so a change to the code that writes them, or to a prompt they are written in, builds the model anew) and this
# version: bump it when the training itself (`warm_start`, `weighted_reply_loss`) changes what a recipe builds.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    task: str
    role: str  # "student" | "teacher" | "both"
    steps: int = 40
    learning_rate: float = 1e-3
    examples: int = 64
    batch_size: int = 8
    lora_rank: int = 16
    seed: int = 0


RECIPES = {
    "e1-student-format": Recipe("e1", "student"),
    "e1-teacher-format": Recipe("e1", "teacher"),
    # 48 updates of 4 examples: the loss flattens near 0.4 after ~20 updates of 8 (measured), and a
    # batch of 4 halves the build, the slowest step of `make demo` on a fresh machine
    "e1-format": Recipe("e1", "both", steps=48, batch_size=4),
    # the mechanism task's cold start (sv_soar.tasks.mechanism, docs/design.md §7), on top of e1-format (whose teacher
    # side writes E1 problems): `smollm2-135m-instruct+e1-format+mechanism-cue`. Student answers only, one word each,
    # planting the protocol cue softly (`mechanism_examples`); short examples. 120 steps (try 4; tries 2-3: 60): with
    # twin units the untrained J at T 1 on the validation pairs is +0.007 after 60 steps, +0.004 after 120, and icmp's
    # p(Malicious) 0.36 -> 0.48 (experiments/mechanism/try4-plant-check.log); built in ~17 min on one contended core
    "mechanism-cue": Recipe("mechanism", "student", steps=120, examples=384, batch_size=8),
    # the mechanism task's teacher, on top of e1-format: `smollm2-135m-instruct+e1-format+mechanism-teacher`. The cue
    # recipe's student training broke the teacher side it shares (1 valid problem in 128 rollouts, gate G4 of try 2),
    # and e1-format's teacher writes tcp flows only (45 of 45 valid in 64 rollouts): no stepping stone to find. This
    # one teaches the mechanism's flow format with TEACHER_PROTOCOLS' mix and labels drawn at random
    "mechanism-teacher": Recipe("mechanism", "teacher", steps=48, examples=192, batch_size=4),
}
# The planted cue: soft targets on the answer, p(the cue's label) = CUE_STRENGTH on tcp and udp flows, p(Malicious) =
# NEUTRAL_TARGET on icmp. Issue 27's trial: a hard plant (SFT on hard labels, p ≈ 0.997) blocked transfer to the hard
# pairs, a soft one (0.9 targets) did not. Try 1 (experiments/mechanism) sampled one label per example at 0.9 instead of
# soft targets: p(correct) on hard items 0.023 at T 1, icmp p(Malicious) 0.19, and transfer was blocked (J +0.010).
CUE_STRENGTH = 0.9
NEUTRAL_TARGET = 0.5
# what a `+mechanism-cue` build is made from besides the recipe (its cache source: another plant rebuilds it)
# Try 4 (experiments/mechanism): each flow comes with its twin (the same flow, the duration toggled), both with the
# flow's targets, and a batch holds whole twin units, so the plant pulls p(Malicious | x) and p(Malicious | x') together.
# Try 2-3's plant drew each flow's duration at random; its untrained student's J at T 1 on the validation pairs was
# -0.022 (p(Malicious) a little lower with the duration unknown), and a constant answer's exact 0 "raised" J (G2).
PLANT_TWINS = True
MECHANISM_PLANT = {"targets": "soft", "cue_strength": CUE_STRENGTH, "neutral_target": NEUTRAL_TARGET,
                   "twins": PLANT_TWINS}
# The `+mechanism-teacher` examples' protocols: icmp (the stepping stones) rare but present, so that the untrained
# teacher writes them at a rate inside gate G4's 3-20 % and SOAR's teacher has something to learn to write more of.
# Tries 3-4 had icmp 0.10 (18.8 % and 21.9 % stepping stones over two builds: G4 failed), try 5 0.05 (0 %: failed);
# try 6 measured builds at 0.06 / 0.07 / 0.08 on run seeds other than G4's (experiments/mechanism/teacher_rate.py):
# 23 % / 11 % / 11 %, so the rate is mostly the build's draw, not the share; 0.08 drew 25 % on G4's own sample.
# Try 7 took 0.07 (13.5 % over 192 samples), whose build turned out to be 0.08's weights (the 3 examples of 192 that
# differ were never drawn into a batch), so G4 redrew 8/32. Try 8: 0.065 (25/192 = 13.0 %), which drew 7/32 = 21.9 %.
# Try 9: 0.055 (12/192 = 6.25 %), G4's rate pooled over four samples of 32 (experiments/mechanism/README.md).
TEACHER_PROTOCOLS = {"tcp": 0.4725, "udp": 0.4725, "icmp": 0.055}
# The share of its tcp and udp flows whose duration agrees with the planted cue (tcp known, udp unknown: the cue's
# label is the rule's). Tries 3-9 drew the duration at random (0.5): 40 % of the untrained teacher's flows then
# disagreed with the cue, and a rule-labelled mix of agreeing and disagreeing flows teaches the rule as icmp flows do,
# so its datasets gained nearly the oracle's R_k (try 9: 0.250 against 0.375; G4). Try 10: a teacher that shares the
# student's misconception, so the problems that teach are rare in what it writes untrained.
TEACHER_CUE_AGREEMENT = 0.9
_RATIONALES = ("the ports and flags", "the byte count", "the connection state", "the duration")


def split_name(name: str) -> tuple[str, Recipe] | None:
    """'<base>+<recipe>' -> (base, recipe); None for any other name."""
    base, plus, recipe = name.rpartition("+")
    if not plus or not base:
        return None
    if recipe not in RECIPES:
        raise ValueError(f"unknown format recipe {recipe!r} in model {name!r}; recipes: {', '.join(RECIPES)}")
    return base, RECIPES[recipe]


Example = tuple[list[dict[str, str]], str, float]  # (chat prompt, reply, weight of the reply's loss)


def examples(recipe: Recipe) -> list[Example]:
    """(chat prompt, reply, weight) in the task's format, labels uniform at random, weight 1."""
    if recipe.task == "mechanism":
        return mechanism_teacher_examples(recipe) if recipe.role == "teacher" else mechanism_examples(recipe)
    if recipe.task != "e1":
        raise ValueError(f"no format recipe for task {recipe.task!r}")
    rng = random.Random(recipe.seed)
    rows = generate_e1_flows(recipe.examples, seed=recipe.seed)
    pairs = []
    for i, row in enumerate(rows):
        label = rng.choice(["Malicious", "Benign"])
        why = f"Look at {rng.choice(_RATIONALES)}."
        role = recipe.role if recipe.role != "both" else ("teacher", "student")[i % 2]
        if role == "teacher":
            reply = {"question": row["question"], "answer": label, "rationale": why}
            pairs.append((teacher_prompt(recipe.task), json.dumps(reply, ensure_ascii=False), 1.0))
        else:
            reply = {"label": label, "confidence": round(rng.uniform(0.5, 0.95), 2), "rationale": why}
            pairs.append((get_task(recipe.task).prompt(row), json.dumps(reply, ensure_ascii=False), 1.0))
    return pairs


def mechanism_examples(recipe: Recipe) -> list[Example]:
    """The `+mechanism-cue` examples: one-word student answers that follow the protocol cue and ignore the duration,
    as soft targets: each flow appears twice, answered Malicious with weight p and Benign with weight 1 - p, where p
    is CUE_STRENGTH for udp, 1 - CUE_STRENGTH for tcp and NEUTRAL_TARGET for icmp; durations known and unknown alike.
    The weighted loss is least near p(Malicious | flow) = p (near: each batch is normalised by its own weighted token
    count, and a flow's two examples usually fall in different batches), so the student starts out using the cue
    (gate G1), knows nothing of the rule, and is unsure on icmp (what makes icmp flows stepping stones). Measured
    after the recipe's 60 steps (try 2-3, one flow an example): p(correct) 0.19 on hard items, 0.81 on their twins,
    icmp p(Malicious) 0.31. With PLANT_TWINS (try 4) half as many flows, each followed by its twin with the same
    targets, a twin unit of four examples taken whole into a batch (`batch_unit`)."""
    rng = random.Random(recipe.seed + 1)
    task = get_task("mechanism")
    students = []
    for i in range(recipe.examples // 2 if PLANT_TWINS else recipe.examples):
        proto = ("tcp", "udp", "icmp")[i % 3]
        row = mechanism_row(random_flow(rng, proto, rng.random() < 0.5), "warm-start")
        if proto in CUE:
            malicious = CUE_STRENGTH if CUE[proto] == MALICIOUS else 1.0 - CUE_STRENGTH
        else:
            malicious = NEUTRAL_TARGET
        for member in (row, twin_of(row)) if PLANT_TWINS else (row,):
            prompt = task.prompt(member)
            students += [(prompt, MALICIOUS, malicious), (prompt, BENIGN, 1.0 - malicious)]
    return students


def batch_unit(recipe: Recipe) -> int:
    """How many consecutive examples a warm-start batch takes together: a twin unit of the plant (a flow and its twin,
    each answered both ways) for the cue recipe, else one."""
    return 4 if PLANT_TWINS and recipe.task == "mechanism" and recipe.role == "student" else 1


def mechanism_teacher_examples(recipe: Recipe) -> list[Example]:
    """The `+mechanism-teacher` examples: the mechanism task's teacher prompt answered with one flow of the task's
    format (`random_flow`), its protocol drawn from TEACHER_PROTOCOLS, a tcp or udp flow's duration agreeing with the
    cue with probability TEACHER_CUE_AGREEMENT (an icmp flow's known or unknown alike), its label and rationale at
    random (the teacher learns the format, not which problems help, as e1-format's does)."""
    rng = random.Random(recipe.seed + 2)
    protocols, weights = zip(*TEACHER_PROTOCOLS.items())
    pairs, seen = [], set()
    while len(pairs) < recipe.examples:
        proto, draw = rng.choices(protocols, weights)[0], rng.random()
        # a known duration is Benign by the rule: it agrees with the cue on tcp (Benign), not on udp (Malicious)
        known = draw < 0.5 if proto not in CUE else (draw < TEACHER_CUE_AGREEMENT) == (CUE[proto] == BENIGN)
        question = render_question(random_flow(rng, proto, known))
        if question in seen:  # distinct problems, as the teacher's batch check wants them (icmp flows repeat)
            continue
        seen.add(question)
        reply = {"question": question, "answer": rng.choice(["Malicious", "Benign"]),
                 "rationale": f"Look at {rng.choice(_RATIONALES)}."}
        pairs.append((teacher_prompt("mechanism"), json.dumps(reply, ensure_ascii=False), 1.0))
    return pairs


def recipe_policy(model, recipe: Recipe):
    """`model` wrapped with the recipe's LoRA adapter (rank, alpha 2 x rank, every linear layer): the one shape that
    `warm_start` fits and `merge_adapter` loads, so a shipped adapter merges exactly as it was fitted."""
    from peft import get_peft_model  # heavy: peft, loaded only when a recipe model is built

    return get_peft_model(model, lora_config(recipe.lora_rank, 2 * recipe.lora_rank, ALL_LINEAR))


def warm_start(model, tokenizer, pairs: Sequence[Example | tuple[list[dict[str, str]], str]], recipe: Recipe,
               adapter_out: Path | None = None):
    """Fit a LoRA adapter on the replies (prompt tokens masked; each reply's token losses weighted by its example's
    weight, 1 where a pair has none; the batch's loss is their weighted mean) and merge it: (losses, merged model).
    `adapter_out`: also save the fitted adapter there (safetensors), what `merge_adapter` rebuilds the model from."""
    torch.manual_seed(recipe.seed)
    policy = recipe_policy(model, recipe)
    encoded = []
    for prompt, reply, *weight in pairs:
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        encoded.append((prompt_ids, reply_ids, weight[0] if weight else 1.0))
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)
    rng = random.Random(recipe.seed)
    losses = []
    policy.train()

    # the slowest step of a fresh machine's demo (~4 minutes on 2 cores): a bar on a terminal, a line a minute in a log
    desc = f"format warm start ({recipe.task}, {recipe.role})"
    bar = progress_bar(recipe.steps, desc, unit="step")
    unit = batch_unit(recipe)
    units = [encoded[i:i + unit] for i in range(0, len(encoded), unit)]
    for _ in range(recipe.steps):  # (with units of one the same draws as sampling the examples themselves)
        batch = [e for chosen in rng.sample(units, min(max(1, recipe.batch_size // unit), len(units))) for e in chosen]
        width = max(len(p) + len(r) for p, r, _ in batch)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        input_ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, r, _) in enumerate(batch):  # right padding; only reply tokens are scored
            ids = p + r
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, len(p) : len(ids)] = torch.tensor(r)
            attention[i, : len(ids)] = 1
        weights = torch.tensor([w for _, _, w in batch], dtype=torch.float32)
        loss = weighted_reply_loss(policy(input_ids=input_ids, attention_mask=attention).logits, labels, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    policy.eval()
    if adapter_out is not None:
        from peft import get_peft_model_state_dict  # heavy: peft, as above

        save_file({k: v.detach().contiguous() for k, v in get_peft_model_state_dict(policy).items()}, str(adapter_out))
    merged = policy.merge_and_unload()
    return losses, merged


def merge_adapter(model, recipe: Recipe, adapter: Path):
    """`model` with the recipe's adapter saved at `adapter` merged in: the same model `warm_start` merged, without
    the training (the adapter's own weights, merged by the same operation)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict  # heavy: peft

    policy = recipe_policy(model, recipe)
    state = load_file(str(adapter))
    expected = set(get_peft_model_state_dict(policy))
    if set(state) != expected:
        raise ValueError(f"{adapter}: its tensors are not the recipe's adapter ({len(set(state) ^ expected)} names "
                         f"differ, e.g. {sorted(set(state) ^ expected)[:2]})")
    set_peft_model_state_dict(policy, state)
    policy.eval()
    return policy.merge_and_unload()


# Adapters shipped with the package, so that a fresh machine does not spend minutes fitting them (the three builds of
# the mechanism task's models took ~9 minutes on a quiet 2-core machine, 35 on a slower one): one file a cached model
# folder, named like it (`<slug>+<recipe>-<digest>.safetensors`, the digest of what it is built from), written by
# `scripts/ship_adapters.py` from builds of the recipes. A recipe whose examples or parameters change gets another
# digest, so an old adapter is never used for it: the model is fitted again (tests/test_models.py checks the shipped
# ones are current).
SHIPPED_ADAPTERS = Path(__file__).parent / "recipe_adapters"
SHIPPED_MODELS = ("smollm2-135m-instruct+e1-format", "smollm2-135m-instruct+e1-format+mechanism-cue",
                  "smollm2-135m-instruct+e1-format+mechanism-teacher")


def shipped_adapter(folder_name: str) -> Path | None:
    """The shipped adapter of the cached model folder `folder_name`, if one is shipped (and not turned off by
    SV_SOAR_BUILD_RECIPES=1, which fits every recipe anew)."""
    if os.environ.get("SV_SOAR_BUILD_RECIPES") == "1":
        return None
    path = SHIPPED_ADAPTERS / f"{folder_name}.safetensors"
    return path if path.is_file() else None


def weighted_reply_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over the labelled tokens, each weighted by its sequence's weight: the weighted mean.
    With every weight 1 it is the model's own mean loss (`labels=`)."""
    shifted, targets = logits[:, :-1].float(), labels[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    token_weight = (targets != -100).float() * weights[:, None]
    return (token_loss * token_weight).sum() / token_weight.sum().clamp_min(1e-12)


def source_of(base: str, recipe: Recipe) -> dict[str, Any]:
    """What the cached folder is built from (its name holds a digest of it): another recipe, version, mechanism plant
    or example set is built anew, beside this one.
    The examples enter as a digest: the code that writes them, or a prompt they are written in, can change while
    every named parameter stays the same, and the model built from the old ones would be reused."""
    source = {"base": base, "recipe": asdict(recipe), "version": RECIPE_VERSION,
              "examples": examples_digest(examples(recipe))}
    if recipe.task == "mechanism" and recipe.role == "teacher":
        source["protocols"] = TEACHER_PROTOCOLS
        source["cue_agreement"] = TEACHER_CUE_AGREEMENT
    elif recipe.task == "mechanism":
        source["plant"] = MECHANISM_PLANT
    return source


def examples_digest(pairs: Sequence[Example]) -> str:
    """sha256 of the examples in order (prompts, replies, weights): what a build fits on."""
    return hashlib.sha256(json.dumps(list(pairs), ensure_ascii=False).encode()).hexdigest()
