"""A student run's hyperparameters (SOAR's inner loop) and their presets; imports no ML library, so a
run config loads without torch (sv_soar.config)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

if TYPE_CHECKING:
    from sv_soar.tasks import Task

# Llama-family projections (Llama 3.2, SmolLM2): every linear layer of attention and MLP.
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# What verifiers' own trainer needs (verifiers 0.1.9.post3, `pip install 'verifiers[rl]==0.1.9.post3'`): its RL
# extra's packages, a CUDA GPU for the trainer, and a `vf-vllm` inference server on another. In verifiers 0.1.14
# the trainer moved to a separate verifiers-rl package that is not on PyPI.
VERIFIERS_TRAINER_PACKAGES = ("deepspeed", "vllm", "flash_attn", "liger_kernel", "accelerate", "wandb")


def verifiers_trainer_requirements() -> str:
    """Why student.trainer = "verifiers" cannot run here, naming what it needs and what is missing."""
    missing = []
    try:
        version = importlib.metadata.version("verifiers")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None or not version.startswith("0.1.9"):
        missing.append(f"verifiers==0.1.9.post3 (installed: {version or 'none'}; later versions have no RLTrainer)")
    missing += [name for name in VERIFIERS_TRAINER_PACKAGES if importlib.util.find_spec(name) is None]
    import torch  # heavy: torch; the run config loads without it

    if not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    return ("student.trainer = 'verifiers' needs verifiers==0.1.9.post3 with its rl extra (RLTrainer: deepspeed, "
            "vllm, flash-attn, liger-kernel, accelerate, wandb), a CUDA GPU and a `vf-vllm` server; missing here: "
            f"{', '.join(missing) or 'nothing, but this backend is not wired into the outer loop (untested)'}. "
            "Train the final student with verifiers instead: `sv-soar export-vf RUN_DIR` writes its training set "
            "and a vf-train config, and `sv-soar evaluate RUN_DIR --adapter DIR` scores the result")


# Default learning rates, by what trains (issue 14: SOAR's 1e-5 is a full-fine-tuning rate; on a LoRA adapter,
# whose B starts at 0, one Adam step at 1e-5 moves no sampled token). benchmarks/lr_calibration.py measures them.
LORA_LEARNING_RATE = 1e-3
FULL_LEARNING_RATE = 1e-5


def full_fine_tuning_rate(self):
    """A student's or teacher's learning rate left unset is SOAR's 1e-5 when it fully fine-tunes (the field's
    default is LoRA's calibrated rate)."""
    if self.finetune == "full" and "learning_rate" not in self.model_fields_set:
        self.learning_rate = FULL_LEARNING_RATE
    return self


def unwritten_default_finetune(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
    """A config's dump without `finetune` at its default "lora", `optimizer` at "adamw" and `batching` at "shuffled":
    what runs wrote before the options existed, so their config.toml, reward-cache keys and the student service's
    settings check stay as they were."""
    values = handler(self)
    if self.finetune == "lora":
        values.pop("finetune", None)
    for key, default in (("optimizer", "adamw"), ("batching", "shuffled")):
        if getattr(self, key, default) == default:
            values.pop(key, None)
    return values


class StudentTrainConfig(BaseModel):
    """Hyperparameters of one student run. Defaults are SOAR's inner loop (arXiv 2601.18778, docs/design.md §4)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: int = Field(10, ge=1, description="RL steps per student (SOAR: 10)")
    steps_after_promotion: int = Field(15, ge=1, description="RL steps once a baseline was promoted (SOAR: 15)")
    batch_prompts: int = Field(8, ge=1, description="prompts per step (SOAR: 8)")
    group_size: int = Field(32, ge=2, description="completions per prompt, the RLOO group (SOAR: 32)")
    learning_rate: float = Field(
        LORA_LEARNING_RATE, gt=0, description="peak AdamW learning rate. Default: 1e-3 with finetune = 'lora', "
        "calibrated (benchmarks/results/lr_calibration.json: of 1e-5..1e-3 only 1e-3 raised the training reward in "
        "10 steps), 1e-5 with 'full' (SOAR's full-fine-tuning rate, which does not move a LoRA adapter)")
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="adamw (SOAR's): each weight's step ≈ lr whatever the gradient's size, so a fresh "
        "student's first steps move as far on noise as on signal; sgd: the step is lr × the gradient, so it grows "
        "with the signal a dataset carries (issue 27; benchmarks/results/mechanism_signal.json)")
    batching: Literal["shuffled", "balanced"] = Field(
        "shuffled", description="shuffled (SOAR's): each batch drawn without replacement from the dataset; balanced: "
        "drawn in turn from each answer's problems, so a binary task's batch holds both labels equally and the "
        "gradient along the answer prior cancels within a batch instead of drifting to a constant answer (issue 27)")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="decay after warmup (SOAR: cosine to 0)")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps (SOAR's student: none)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the trained weights (LoRA's, or all)")
    kl_coef: float = Field(0.001, ge=0, description="β of the per-token KL to the student's starting point: the "
                           "base model, or the promoted baseline it was copied from (SOAR: 0.001)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the rollouts (SOAR: 1.0)")
    max_new_tokens: int | None = Field(
        None, ge=1, description="completion budget (default: the task's answer length, E1 96, E2 384: the budget "
        "the hard set is mined with, so that a student is never scored with fewer or more tokens than the "
        "hard set's failures had; a truncated answer fails like a wrong one)")
    max_grad_norm: float = Field(1.0, gt=0, description="global gradient-norm clip")
    estimator: Literal["rloo", "grpo", "maxrl"] = Field(
        "rloo", description="advantage estimator: rloo (SOAR), grpo (SV-Bench's hosted recipe), maxrl (2602.02710)"
    )
    grpo_eps: float = Field(1e-4, gt=0, description="std floor of the GRPO estimator (TRL's value)")
    reward: Literal["full", "correctness"] = Field(
        "full",
        description="full: the task's SV-Bench rubric total (the student always trains on it, per the seed "
        "write-up); correctness: 1.0 when task.is_success else 0.0",
    )
    micro_batch_size: int = Field(16, ge=1, description="sequences per forward/backward; bounds activation memory")
    gradient_checkpointing: bool = Field(
        False,
        description="recompute each layer's activations in the backward pass: about a third more compute for "
        "activation memory of one layer instead of all (GPU, long completions); off: measured faster on CPU",
    )
    finetune: Literal["lora", "full"] = Field(
        "lora",
        description="lora: each student is a LoRA adapter on the one shared base model (the lora_* keys); full: "
        "each student run trains every parameter of its own copy of the base model. That costs one fp32 copy "
        "of the weights beside the base, with its gradients and AdamW's two moments (4x the fp32 weights), and "
        "every kept student (the r·g promotion candidates of a step) holds its whole fp32 state dict in CPU "
        "memory until the step's promotion, and on disk in the reward cache. Meant for GPU runs; CPU works but "
        "is slow. Students then train one after another (no lockstep), on the local backend only",
    )
    lora_rank: int = Field(16, ge=1, description="LoRA rank r (project choice: students are adapters on one base)")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling α (α/r = 2)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout (0: rollouts and updates see one policy)")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(ALL_LINEAR), description="linear layers that get LoRA weights"
    )
    trainer: Literal["sv-soar", "verifiers"] = Field(
        "sv-soar",
        description="sv-soar: this loop (on-policy RLOO/GRPO/MaxRL, k3 KL); verifiers: verifiers 0.1.9.post3's "
        "RLTrainer, a different objective (mean-centred advantages, no KL, asynchronous off-policy with ratio "
        "masking) that needs a GPU stack; untested, and refused with what it needs (use `sv-soar export-vf`)",
    )

    _unwritten_default_finetune = model_serializer(mode="wrap")(unwritten_default_finetune)

    _full_fine_tuning_rate = model_validator(mode="after")(full_fine_tuning_rate)

    @model_validator(mode="after")
    def _verifiers_trainer_is_not_available(self) -> "StudentTrainConfig":
        if self.trainer == "verifiers":
            raise ValueError(verifiers_trainer_requirements())
        return self

    @model_validator(mode="after")
    def _maxrl_needs_non_negative_rewards(self) -> "StudentTrainConfig":
        if self.estimator == "maxrl" and self.reward == "full":
            raise ValueError(
                "estimator='maxrl' divides by the group's mean reward, which the full SV-Bench rubric can drive "
                "to zero or below (E1 asymmetric cost −1, E2 invalid JSON −0.25): use reward='correctness'"
            )
        return self

    @classmethod
    def cpu_small(cls, **overrides: Any) -> "StudentTrainConfig":
        """The "cpu" preset (PRESETS) with `overrides` on top."""
        return cls(**{**PRESETS["cpu"], **overrides})

    def make_optimizer(self, params):
        """The student's optimizer over `params` (`optimizer`, `learning_rate`, `weight_decay`)."""
        import torch  # heavy: torch; the run config loads without it

        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)

    def tokens_for(self, task: Task) -> int:
        """The completion budget with `task`: max_new_tokens, else the task's answer length."""
        return self.max_new_tokens if self.max_new_tokens is not None else task.answer_tokens

    def steps_for(self, promoted: bool) -> int:
        """SOAR trains students longer once the baseline has been promoted at least once."""
        return self.steps_after_promotion if promoted else self.steps

    def lora_config(self):
        return lora_config(self.lora_rank, self.lora_alpha, self.lora_target_modules, self.lora_dropout)


def lora_config(rank: int, alpha: float, target_modules: Sequence[str], dropout: float = 0.0):
    """The one LoRA config builder: peft's LoraConfig of every adapter this project makes (students, the
    teacher, the format warm start). peft is imported here, so this module loads without it."""
    from peft import LoraConfig  # heavy: peft; the run config loads without it

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                      bias="none", task_type="CAUSAL_LM")


def refuse_full_finetune(config: StudentTrainConfig, where: str) -> None:
    """Fully fine-tuned students train in the scoring process only: a ValueError naming `where` (a config key
    and value) when `config` asks for them elsewhere."""
    if config.finetune == "full":
        raise ValueError(f'student.finetune = "full" is not supported with {where}: a fully fine-tuned student is '
                         'a whole model, trained and measured in the process that scores (compute.backend = '
                         '"local", no compute.students_url); use student.finetune = "lora" there')


# The student presets, as data: each is the fields it sets over StudentTrainConfig's defaults (which are SOAR's inner
# loop). "cpu" finishes in minutes on a 2-core CPU with the 135M model, not the paper's setting; its learning rate is
# the calibrated LoRA default (1e-3: at 1e-4, 10 steps of 8 completions did not raise the training reward;
# benchmarks/results/lr_calibration.json). `--preset` choices and the envs' `preset` annotations are PRESET_NAMES.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"steps": 3, "steps_after_promotion": 4, "batch_prompts": 2, "group_size": 4, "max_new_tokens": 48,
            "micro_batch_size": 8, "lora_rank": 8, "lora_alpha": 16, "lora_target_modules": ["q_proj", "v_proj"]},
}
PRESET_NAMES = tuple(PRESETS)


def student_config(preset: str, overrides: dict[str, Any] | None) -> StudentTrainConfig:
    """A preset's student config (PRESETS), with `overrides` on top."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(repr(p) for p in PRESETS)}, got {preset!r}")
    return StudentTrainConfig(**{**PRESETS[preset], **(overrides or {})})
