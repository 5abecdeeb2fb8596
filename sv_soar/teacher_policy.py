"""The teacher policy of SOAR's outer loop (docs/design.md §4): the model that writes problems, how a step samples
it, and its update. A LoRA adapter on the teacher model (or, with teacher.finetune = "full", every weight), its
AdamW, and its checkpoints; sv_soar.soar_loop drives it one outer step at a time.

    sample   rejection sampling: g·n rollouts a round until g·n are valid problems (or the round limit)
    update   one RLOO step on the rollouts of the step's datasets (sv_soar.policy_gradient), KL to the initial
             teacher; cosine learning rate with warmup over the run's outer steps
    drift    what the update changed: the share of the step's first-round rollouts that redraw differently, and
             the KL to the initial teacher after it
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

from sv_soar.config import RunConfig
from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.generation import SamplingParams
from sv_soar.jsonl import atomic_path
from sv_soar.models import load_model
from sv_soar.policy_gradient import group_logprobs, learning_rate_at, policy_gradient_step, reference_logprobs
from sv_soar.student.adapters import lora_config, write_adapter
from sv_soar.student.full_finetune import FULL_WEIGHTS, frozen_copy, full_state_dict, load_full_state, write_full_weights
from sv_soar.tasks import Row
from sv_soar.tasks.teacher import teacher_prompt, validate_batch

TEACHER_ADAPTER = "teacher"
TEACHER_SEED_SALT = 0x7EAC  # teacher sampling draws from another stream than Q_R and the students


@dataclass
class TeacherSample:
    """The valid problems of one step, with the rollouts that wrote them."""

    rows: list[Row]
    token_ids: list[list[int]]
    prompt_token_ids: list[int]
    drawn: int
    rejected: dict[str, int]
    # every rollout of the first sampling round, valid or not, and that round's seed: after the update
    # the same seed redraws them under the same random numbers, so a changed rollout is the update's doing
    first_round: list[list[int]] = field(default_factory=list)
    first_round_seed: int = 0


def teacher_prompt_of(config: RunConfig):
    return teacher_prompt(config.teacher.problem_task(config.data.task), **config.teacher.prompt_options())


class Teacher:
    """The teacher policy: a LoRA adapter on the teacher model, its optimizer, and its checkpoints.

    "The initial teacher" of the KL penalty is the teacher model itself (the adapter disabled). For
    a model too small to follow the teacher prompt, use a format-warm-started one as the teacher
    model, e.g. `smollm2-135m-instruct+e1-teacher-format` (sv_soar/format_warm_start.py).
    With teacher.finetune = "full" the teacher is the model itself, every weight trained, the initial
    teacher a frozen copy made at load (so a resumed run's reference is the initial model too, not the
    checkpoint), and a checkpoint holds the whole model (model.safetensors).
    """

    def __init__(self, config: RunConfig) -> None:
        section = config.teacher
        model, tokenizer = load_model(section.model)
        self.full = section.finetune == "full"
        self.adapter = None if self.full else TEACHER_ADAPTER  # what the engine generates under
        self.reference = frozen_copy(model) if self.full else None  # None: the model with the adapter off
        if self.full:
            self.policy = model.eval()
            self.params = list(model.parameters())
        else:
            lora = lora_config(section.lora_rank, section.lora_alpha, section.lora_target_modules)
            torch.manual_seed(config.run.seed)  # lora_A's init: the same initial teacher on every resume
            self.policy = get_peft_model(model, lora, adapter_name=TEACHER_ADAPTER)
            self.policy.eval()
            self.params = [p for name, p in self.policy.named_parameters() if "lora_" in name]
        for param in self.params:
            param.requires_grad_(False)  # trainable only inside update()
        self.optimizer = torch.optim.AdamW(self.params, lr=section.learning_rate, weight_decay=0.0)
        self.engine = TransformersEngine(self.policy, tokenizer, model_name=section.model,
                                         max_batch_size=max(1, min(64, config.rollouts_per_step)))
        self.config = config

    def save(self, folder: Path) -> None:
        """Checkpoint the adapter (the whole model with teacher.finetune = "full") and the optimizer (AdamW's
        moments: resume continues the same run)."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.full:
            write_full_weights(folder, full_state_dict(self.policy), self.policy.config, atomic=True)
        else:
            state = {k: v.detach().cpu().contiguous() for k, v in
                     get_peft_model_state_dict(self.policy, adapter_name=TEACHER_ADAPTER).items()}
            write_adapter(folder, self.policy.peft_config[TEACHER_ADAPTER], state, atomic=True)
        with atomic_path(folder / "optimizer.pt") as tmp:
            torch.save(self.optimizer.state_dict(), tmp)

    def load(self, folder: Path) -> None:
        if self.full:
            load_full_state(self.policy, load_file(str(folder / FULL_WEIGHTS)), where=str(folder / FULL_WEIGHTS))
        else:
            set_peft_model_state_dict(self.policy, load_file(str(folder / "adapter_model.safetensors")),
                                      adapter_name=TEACHER_ADAPTER)
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))

    def _activate(self) -> None:
        """Make the teacher's adapter the active one (a fully fine-tuned teacher has none)."""
        if not self.full:
            self.policy.set_adapter(TEACHER_ADAPTER)

    def sample(self, task_name: str, hard_set_index, step_seed_: int) -> TeacherSample:
        """Rejection sampling: draw g·n rollouts a round until g·n valid problems (or the round limit)."""
        section = self.config.teacher
        wanted = self.config.rollouts_per_step
        prompt = teacher_prompt(task_name, **section.prompt_options())
        texts: list[str] = []
        token_ids: list[list[int]] = []
        prompt_ids: list[int] = []
        first_round: list[list[int]] = []
        for round_ in range(section.max_sampling_rounds):
            params = SamplingParams(max_new_tokens=section.max_new_tokens, temperature=section.temperature,
                                    n=wanted, seed=step_seed_ + round_, stop_at_json_end=True)
            completions = self.engine.generate([prompt], params, adapters=self.adapter)[0]
            prompt_ids = completions[0].prompt_token_ids
            texts += [c.text for c in completions]
            token_ids += [c.token_ids for c in completions]
            if round_ == 0:
                first_round = [list(c.token_ids) for c in completions]
            validation = validate_batch(texts, hard_set_index, task=task_name, options=section.problem_options())
            if len(validation.valid_indices) >= wanted:
                break
        valid = validation.valid_indices[:wanted]
        return TeacherSample(
            rows=[validation.outcomes[i].to_row() for i in valid],
            token_ids=[token_ids[i] for i in valid],
            prompt_token_ids=prompt_ids,
            drawn=len(texts),
            rejected={str(reason): count for reason, count in validation.rejected.items()},
            first_round=first_round,
            first_round_seed=step_seed_,
        )

    def drift(self, sample: TeacherSample) -> dict[str, float]:
        """How far the update just taken moved the teacher, measured on its own samples:

        - changed_share: the share of the step's first-round rollouts that come out different when
          redrawn with the same seed (the same random numbers) after the update. 0 means the update
          changed nothing the teacher writes, whatever its loss said.
        - kl_after: KL(π‖π_init) per token, estimated on those redrawn (on-policy) rollouts by the mean
          log-ratio log π − log π_init (k1: unbiased on samples of π). The KL the update's loss logs is
          taken before the step, so at step 0 it is 0 by construction.
        """
        section = self.config.teacher
        if not sample.first_round:
            return {}
        params = SamplingParams(max_new_tokens=section.max_new_tokens, temperature=section.temperature,
                                n=len(sample.first_round), seed=sample.first_round_seed, stop_at_json_end=True)
        self._activate()
        redrawn = self.engine.generate([teacher_prompt_of(self.config)], params, adapters=self.adapter)[0]
        after = [list(c.token_ids) for c in redrawn]
        changed = sum(a != b for a, b in zip(after, sample.first_round)) / len(after)
        prompt_ids = redrawn[0].prompt_token_ids
        log_ratio_sum, tokens = 0.0, 0
        micro = section.micro_batch_size
        with torch.no_grad():
            for start in range(0, len(after), micro):
                chunk = [ids for ids in after[start:start + micro] if ids]
                if not chunk:
                    continue
                logprobs = group_logprobs(self.policy, prompt_ids, chunk, section.temperature)
                ref = reference_logprobs(self.policy, self.reference, prompt_ids, chunk, section.temperature)
                log_ratio_sum += float((logprobs - ref).sum())  # padding is 0 in both
                tokens += sum(len(ids) for ids in chunk)
        return {"changed_share": changed, "kl_after": log_ratio_sum / max(1, tokens)}

    def update(self, sample: TeacherSample, advantages: Sequence[float], step: int) -> dict[str, float]:
        """One RLOO step on the teacher adapter (cosine LR with warmup, KL to the initial teacher)."""
        section = self.config.teacher
        lr = learning_rate_at(step, section.learning_rate, section.warmup_steps, self.config.run.outer_steps)
        self._activate()
        for param in self.params:
            param.requires_grad_(True)
        try:
            return policy_gradient_step(
                self.policy, self.params, self.optimizer,
                [(sample.prompt_token_ids, list(zip(sample.token_ids, advantages)))],
                lr=lr, kl_coef=section.kl_coef, temperature=section.temperature,
                max_grad_norm=section.max_grad_norm, micro_batch_size=section.micro_batch_size,
                where=f"teacher update at step {step}", reference=self.reference,
            ) | {"lr": lr}
        finally:
            for param in self.params:
                param.requires_grad_(False)
