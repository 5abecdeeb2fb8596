"""The experiment config: one pydantic model per component, read from TOML (docs/style.md §4, prime-rl).

    [run]        method, seed, outer steps
    [data]       task and the hard set (a `sv-soar hardset` folder)
    [teacher]    the teacher model, g·n rollouts a step, its RLOO update (docs/design.md §4)
    [student]    the student model and its inner-loop RL (sv_soar.student.config.StudentTrainConfig)
    [soar]       r students a dataset, Q_R, promotion (τ, window), grounding
    [evaluation] the final evaluation on D_test
    [compute]    where student runs happen: this process, Ray actors, or a remote student service
    [logging]    optional experiment tracking: W&B (offline works without network) or TensorBoard
    [env]        what only a teacher env has (sv_soar.env_section); not used by `sv-soar train`

Every default is the paper's (arXiv 2601.18778, docs/design.md §4) unless its help says not; `configs/cpu-demo.toml`
scales it down for a 2-core CPU. `load_config(path)` reports every error as `file: section.key: reason`, and
`config_diff(a, b)` names the keys two configs disagree on (resume refuses a different config).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, model_serializer,
                      model_validator)

from sv_soar.env_section import EnvSection
from sv_soar.soar_defaults import DEFAULT_MODEL, FLOOR, TAU, WINDOW
from sv_soar.student.config import (
    LORA_LEARNING_RATE,
    StudentTrainConfig,
    full_fine_tuning_rate,
    refuse_full_finetune,
    unwritten_default_finetune,
)
from sv_soar.task_names import PROBLEM_OPTIONS, PROMPT_OPTIONS, options_set, task_names

MAX_CONFIG_BYTES = 1 << 20  # a config is a page of TOML; anything bigger is not one
METHODS = ("soar", "hard-only", "base-t", "intrinsic-t")
# Paths in a config file are relative to the file; given on the command line (--set), to the cwd.
PATH_KEYS = ("data.hard_set", "evaluation.compute_matched_to", "evaluation.extra_eval")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RunSection(_Section):
    method: Literal["soar", "hard-only", "base-t", "intrinsic-t"] = Field(
        "soar",
        description="soar (grounded teacher reward); hard-only (student RL on D_train alone); base-t "
        "(promoted questions from the untrained teacher); intrinsic-t (teacher rewarded by learnability)",
    )
    seed: int = Field(0, description="seed of everything: Q_R draws, student seeds, teacher sampling")
    outer_steps: int = Field(200, ge=1, description="teacher update steps (SOAR: 200)")
    stop_when_unstuck: bool = Field(
        False,
        description="the seed's two-phase plan, phase 1: end the outer loop after the first step whose "
        "baseline student solves part of Q_R (the hard set is no longer all-fail); phase 2 is the final "
        "evaluation, e.g. with evaluation.estimator = 'maxrl'",
    )


def registered_task(name: str | None) -> str | None:
    """A task name the registry knows (sv_soar.task_names: e1, e2, mechanism and any registered one)."""
    if name is not None and name not in task_names():
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(repr(n) for n in task_names())}")
    return name


TaskName = Annotated[str, AfterValidator(registered_task)]
# Types the run config shares with the teacher envs' config (sv_soar.teacher_env_config): one meaning each.
Grounding = Literal["correctness", "full"]
Floor = Annotated[float, Field(le=0)] | Literal["neutral"]
# E2's teacher options, checked at load: a copy of the types of E2's own model (sv_soar.tasks.e2.options.E2Options,
# which checks them again where a prompt is built), because a config is checked without loading a task;
# tests/test_e2_teacher.py holds the two equal.
Difficulty = Literal["one", "two", "several", "multi-tool"]
SubSkill = Literal["detect", "read-tool-output", "patch"]
Lang = Literal["k8s", "tf"]


class DataSection(_Section):
    task: TaskName = Field(
        "e1", description="task of the hard set: e1 (SV-Bench network-log classification), e2 (config audit), or "
        "a registered one (docs/tasks.md)"
    )
    hard_set: Path = Field(
        ..., description="folder written by `sv-soar hardset` (d_train.jsonl, d_test.jsonl), relative to the config"
    )


class TeacherSection(_Section):
    model: str = Field(DEFAULT_MODEL, description="teacher model (SOAR: the student's own base model)")
    g: int = Field(4, ge=2, description="datasets a step, the teacher's RLOO group (SOAR: 4)")
    n: int = Field(64, ge=1, description="problems a dataset, one a rollout (SOAR: 64)")
    temperature: float = Field(1.0, gt=0, description="teacher sampling temperature (SOAR: 1.0)")
    max_new_tokens: int = Field(384, ge=16, description="tokens a teacher rollout at most (one problem)")
    max_sampling_rounds: int = Field(
        8, ge=1, description="rejection sampling: draw at most this many times g·n rollouts to find g·n valid ones"
    )
    learning_rate: float = Field(
        LORA_LEARNING_RATE, gt=0, description="teacher AdamW learning rate, cosine. Default: 1e-3 with finetune = "
        "'lora', calibrated (benchmarks/results/lr_calibration.json: one update at 1e-3 changed 6 of 8 redrawn "
        "rollouts, at 1e-4 and 1e-5 1 of 8), 1e-5 with 'full' (SOAR's)")
    warmup_steps: int = Field(
        0, ge=0, description="teacher linear warmup (SOAR: 20 of 200 steps; default 0: a warmup over a run of a "
        "few steps makes its first update 1/warmup of the learning rate, i.e. none)")
    kl_coef: float = Field(0.001, ge=0, description="β of the KL to the initial teacher (SOAR: 0.001)")
    measure_drift: bool = Field(
        True, description="after each update, redraw the step's first sampling round with the same seed and log "
        "the share of changed rollouts and KL(π‖π_init) (costs one sampling round a step)")
    max_grad_norm: float = Field(1.0, gt=0, description="teacher gradient-norm clip")
    micro_batch_size: int = Field(8, ge=1, description="sequences a teacher forward/backward")
    finetune: Literal["lora", "full"] = Field(
        "lora", description="lora: the teacher is a LoRA adapter on its model (the lora_* keys), the KL reference "
        "the model with the adapter off; full: every parameter is trained, the KL reference is a frozen copy of "
        "the initial model and checkpoints hold the whole model (model.safetensors), so it costs the model's "
        "weights three more times (reference copy, AdamW's two moments). Meant for GPU runs; CPU works but is slow")
    lora_rank: int = Field(16, ge=1, description="teacher LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="teacher LoRA α")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="linear layers that get the teacher's LoRA weights",
    )
    task: TaskName | None = Field(
        None, description="task of the problems the teacher writes (default: data.task); the seed's experiment E "
        "writes e1 stepping stones for an e2 hard set"
    )
    difficulty: Difficulty | None = Field(
        None, description="E2 teacher prompt: violations a config (seed: 1 -> 2 -> 3 -> multi-tool)"
    )
    sub_skill: SubSkill | None = Field(
        None, description="E2 problems: what the student practises (the question shows a tool's output, or asks "
        "for a patch)"
    )
    lang: Lang | None = Field(
        None, description="E2 teacher prompt: Kubernetes or Terraform configs only"
    )

    _unwritten_default_finetune = model_serializer(mode="wrap")(unwritten_default_finetune)
    _full_fine_tuning_rate = model_validator(mode="after")(full_fine_tuning_rate)

    def problem_task(self, data_task: str) -> str:
        return self.task or data_task

    def prompt_options(self) -> dict[str, str]:
        """teacher_prompt's options (E2 only): the ones set."""
        return options_set(self, PROMPT_OPTIONS)

    def problem_options(self) -> dict[str, str]:
        """parse_teacher_problem's options (E2 only): how a relabelled config becomes a question."""
        return options_set(self, PROBLEM_OPTIONS)


def check_q_r_sampling(samples: int, temperature: float) -> None:
    """Acc on Q_R from `samples` answers a question at `temperature`: greedy needs one (its answers are alike)."""
    if samples < 1 or not temperature >= 0:
        raise ValueError(f"q_r_samples must be >= 1 and q_r_temperature >= 0, got {samples} and {temperature}")
    if samples > 1 and temperature == 0:
        raise ValueError(f"q_r_samples = {samples} at q_r_temperature 0: greedy answers are all alike; set "
                         "q_r_temperature > 0 for a graded Acc, or q_r_samples = 1")


class StudentSection(StudentTrainConfig):
    model: str = Field(DEFAULT_MODEL, description="student base model (SOAR: Llama-3.2-3B-Instruct)")


class SoarSection(_Section):
    students: int = Field(4, ge=1, description="r, students trained a dataset (SOAR: 4)")
    q_r: int = Field(64, ge=1, description="|Q_R|, D_train questions drawn afresh each step (SOAR: 64)")
    tau: float = Field(TAU, description="promotion threshold on the moving average of R̂_t (SOAR: 0.01)")
    window: int = Field(WINDOW, ge=1, description="moving-average window of R̂_t in steps (SOAR: 3)")
    grounding: Grounding = Field(
        "correctness", description="Acc on Q_R: correct label (correctness) or the full rubric's mean (full)"
    )
    floor: Floor = Field(
        FLOOR, description="teacher reward of a rollout that cannot be scored: its dataset's students all failed "
        "(and, in the teacher envs, an invalid rollout; `sv-soar train` resamples those): neutral, no advantage "
        "(train leaves the dataset out of the teacher's RLOO; an env, whose trainer takes one reward a rollout, "
        "gives it R̂_t, the step's mean R_k), or a number <= 0 (e.g. -1.0: the worst R_k, which makes a machine "
        "fault the strongest signal of the step)")
    time_limit_s: float | None = Field(None, gt=0, description="per student run; a run past it is excluded, counted")
    retries: int = Field(1, ge=0, description="extra tries for a student run that ran out of memory (then counted)")
    retry_backoff_s: float = Field(5.0, ge=0, description="wait before the first retry; doubles with each retry")
    eval_batch_size: int = Field(64, ge=1, description="sequences a greedy evaluation batch")
    q_r_samples: int = Field(
        1, ge=1, description="answers a Q_R question for Acc (SOAR: 1, greedy); more, at q_r_temperature > 0, make "
        "Acc graded: on a one-class Q_R a greedy Acc moves only when a student flips whole questions")
    q_r_temperature: float = Field(
        0.0, ge=0, description="temperature of those answers (SOAR: 0, greedy); each question's samples share their "
        "random numbers across the baseline and every student")

    @model_validator(mode="after")
    def _q_r_sampling(self) -> "SoarSection":
        check_q_r_sampling(self.q_r_samples, self.q_r_temperature)
        return self


class EvaluationSection(_Section):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, description="fresh students, one a seed")
    samples: int = Field(32, ge=1, description="samples a D_test problem for pass@k (SOAR: 32)")
    epochs: float = Field(
        2.0, gt=0, description="the final students' budget in passes over their training set (PQ ∪ D_train, or PQ "
        "alone): ceil(epochs · rows / student.batch_prompts) RL steps, the same rule for every method. Not the "
        "inner loop's 10 steps, which see less than one pass and leave every method's final student where "
        "D_train alone puts it")
    steps: int | None = Field(
        None, ge=1, description="final student RL steps, overriding epochs (default: from epochs); a compute-matched "
        "student (compute_matched_to) trains that run's count whatever this says"
    )
    train_on: Literal["pq+d_train", "pq"] = Field(
        "pq+d_train", description="the final students' training set: the promoted questions mixed with D_train "
        "(SOAR), or the promoted questions alone (what the teacher's problems teach by themselves)")
    curriculum: bool = Field(False, description="train on promoted questions in promotion order, then D_train")
    temperature: float | None = Field(
        None, gt=0, description="sampling temperature of the D_test samples (default: student.temperature). The "
        "training temperature is student.temperature (SOAR: 1.0, where groups vary); set this to the temperature "
        "the hard set was mined at, so that \"escape\" is measured on the policy that failed it")
    extra_eval: list[Path] = Field(default_factory=list, description="more E1 JSONL sets to report on")
    estimator: Literal["rloo", "grpo", "maxrl"] | None = Field(
        None, description="the final students' estimator (default: the student's); maxrl needs reward = 'correctness'"
    )
    reward: Literal["full", "correctness"] | None = Field(None, description="the final students' reward (default: the student's)")
    compute_matched_to: Path | None = Field(
        None,
        description="a SOAR run folder: the final students train as many RL steps as that run's students did in "
        "its outer loop plus its final students (student compute only; a compute-matched Hard-only)",
    )


class ComputeSection(_Section):
    backend: Literal["local", "ray"] = Field(
        "local", description="where student runs happen: local (this process) or ray (one Ray actor a GPU)"
    )
    ray_address: str | None = Field(None, description='backend "ray": the cluster ("auto", "ray://host:10001"); '
                                    "unset: start a local one")
    ray_actors: int | None = Field(None, ge=1, description='backend "ray": actors (default: one per GPU, else 1)')
    students_url: str | None = Field(
        None, description="train students on `sv-soar serve-students` at this URL instead (token: "
        "$SV_SOAR_STUDENTS_TOKEN)"
    )


class LoggingSection(_Section):
    backend: Literal["none", "wandb", "tensorboard"] = Field(
        "none", description="send the outer loop's and the student runs' metrics to W&B or TensorBoard "
        "(sv_soar.tracking; the tracking extra); none: steps.jsonl only"
    )
    project: str = Field("sv-soar", description="W&B project")
    name: str | None = Field(None, description="W&B run name (default: the run folder's name)")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline", description="W&B offline: written under RUN_DIR/wandb, uploaded later by `wandb sync`"
    )


class RunConfig(_Section):
    run: RunSection = Field(default_factory=RunSection)
    data: DataSection
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    student: StudentSection = Field(default_factory=StudentSection)
    soar: SoarSection = Field(default_factory=SoarSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    compute: ComputeSection = Field(default_factory=ComputeSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    env: EnvSection = Field(default_factory=EnvSection)

    @property
    def rollouts_per_step(self) -> int:
        """g·n: one hosted-trainer group is one outer step (docs/design.md §5)."""
        return self.teacher.g * self.teacher.n

    def student_train_config(self) -> StudentTrainConfig:
        return StudentTrainConfig(**self.student.model_dump(exclude={"model"}))

    def final_student_config(self) -> StudentTrainConfig:
        """The student config of the final evaluation: the student's, with [evaluation]'s overrides."""
        overrides = {key: value for key, value in (("estimator", self.evaluation.estimator),
                                                   ("reward", self.evaluation.reward)) if value is not None}
        return StudentTrainConfig(**{**self.student.model_dump(exclude={"model"}), **overrides})

    def evaluation_temperature(self) -> float:
        """The temperature D_test is sampled at: evaluation.temperature, else the student's training temperature."""
        return self.evaluation.temperature if self.evaluation.temperature is not None else self.student.temperature

    @model_validator(mode="after")
    def _final_student_is_valid(self) -> "RunConfig":
        try:
            self.final_student_config()
        except ValidationError as exc:
            raise ValueError(f"evaluation.estimator / evaluation.reward: {exc.errors()[0]['msg']}") from None
        return self

    @model_validator(mode="after")
    def _sampled_acc_is_scored_here(self) -> "RunConfig":
        url = self.compute.students_url
        if url and self.soar.q_r_temperature > 0:
            raise ValueError(f"soar.q_r_temperature = {self.soar.q_r_temperature}: a sampled Acc on Q_R is scored "
                             f"in this process or on Ray, not by the student service at compute.students_url "
                             f"({url!r}), which scores greedily")
        return self

    @model_validator(mode="after")
    def _full_students_train_locally(self) -> "RunConfig":
        compute = self.compute
        if compute.students_url:
            refuse_full_finetune(self.student, f"compute.students_url = {compute.students_url!r}")
        if compute.backend != "local":
            refuse_full_finetune(self.student, f'compute.backend = "{compute.backend}"')
        return self

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in, as written to RUN_DIR/config.toml: the run's, so not [env]."""
        return self.model_dump(mode="json", exclude={"env"})


def parse_config(values: dict[str, Any], *, origin: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Validate a config mapping; relative paths resolve against `base_dir` (the config's folder)."""
    try:
        config = RunConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
    if base_dir is not None:
        try:
            config.data.hard_set = _resolve(config.data.hard_set, base_dir)
            config.evaluation.extra_eval = [_resolve(path, base_dir) for path in config.evaluation.extra_eval]
            if config.evaluation.compute_matched_to is not None:
                config.evaluation.compute_matched_to = _resolve(config.evaluation.compute_matched_to, base_dir)
        except (ValueError, OSError) as exc:  # a NUL byte in a path: pathlib raises ValueError on resolve()
            raise ConfigError(f"{origin}: a path in data.hard_set, evaluation.extra_eval or "
                              f"evaluation.compute_matched_to is unusable: {exc}") from None
    return config


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a TOML config; `overrides` ({"soar.q_r": 8}) replace keys before validation."""
    path = Path(path)
    values = read_toml(path)
    try:
        overrides = {key: _from_cwd(value) if key in PATH_KEYS else value for key, value in (overrides or {}).items()}
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--set: a path is unusable: {exc}") from None
    return parse_config(apply_overrides(values, overrides), origin=str(path), base_dir=path.parent)


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's TOML as a dict; a missing, oversized or malformed file is a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size} bytes; a config is at most {MAX_CONFIG_BYTES} bytes")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once a nesting level: "a = [[[[..." fits in a small file
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    return values


# Any sections of a RunConfig, each validated as in a full one: what the teacher env's `config=` takes.
RunConfigSections = create_model(
    "RunConfigSections", __base__=_Section,
    **{name: (field.annotation | None, None) for name, field in RunConfig.model_fields.items()})

# The run-config keys the teacher envs read, and the TeacherEnvConfig field (sv_soar.teacher_env_config) each sets.
# The others (the teacher's sampling and optimiser, [evaluation], [logging], ...) are validated and not used there:
# in the env, the hosted trainer samples and updates the teacher.
TEACHER_ENV_ARGUMENTS = {
    "data.task": "hard_set_task", "data.hard_set": "hard_set", "teacher.task": "svbench_task", "teacher.g": "g",
    "teacher.n": "n", "teacher.difficulty": "difficulty", "teacher.sub_skill": "sub_skill", "teacher.lang": "lang",
    "student.model": "model", "soar.students": "students", "soar.q_r": "q_r", "soar.grounding": "grounding",
    "soar.floor": "floor", "soar.time_limit_s": "time_limit_s", "soar.tau": "tau", "soar.window": "window",
    "run.seed": "seed", "compute.backend": "backend", "compute.ray_address": "ray_address",
    "compute.ray_actors": "ray_actors", "compute.students_url": "students_url", "run.outer_steps": "num_prompts",
    "env.hard_set": "hard_set", "env.preset": "preset", "env.run_dir": "run_dir", "env.reward_cache": "reward_cache",
    "env.max_concurrent_scorings": "max_concurrent_scorings",
}
# Paths, relative to the config's folder. env.hard_set, a packaged name, comes after data.hard_set and wins over it.
TEACHER_ENV_PATHS = ("data.hard_set", "env.run_dir", "env.reward_cache")


def teacher_env_arguments(config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The teacher env config's fields that a run config sets: `config` is a TOML path (`sv-soar train`'s
    configs; relative paths resolve against its folder) or a dict of RunConfig sections ({"soar": {"q_r": 8}}).

    Only the keys the config sets are returned (TEACHER_ENV_ARGUMENTS, [env]'s too; the [student] keys but model
    are `student` overrides of env.preset), so TeacherEnvConfig's defaults hold for the rest and the keyword arguments
    given with `config` override it. data.task is the hard set's task and, unless teacher.task says otherwise, the
    task the teacher writes, as in `sv-soar train`. An unknown section or key is a ConfigError naming it."""
    if isinstance(config, (str, Path)):
        values, origin, base_dir = read_toml(Path(config)), str(config), Path(config).parent
    elif isinstance(config, dict):
        values, origin, base_dir = config, "config", Path.cwd()
    else:
        raise ConfigError(f"config must be a TOML path or a dict of RunConfig sections, got {type(config).__name__}")
    try:
        sections = RunConfigSections.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
    if sections.soar is not None and sections.soar.q_r_temperature > 0:
        raise ConfigError(f"{origin}: soar.q_r_samples / soar.q_r_temperature: the teacher env scores Q_R greedily "
                          "(SOAR's Acc); a sampled Acc is an option of `sv-soar train`")
    arguments: dict[str, Any] = {}
    for dotted, argument in TEACHER_ENV_ARGUMENTS.items():
        name, key = dotted.split(".")
        section = getattr(sections, name)
        if section is not None and key in section.model_fields_set:
            value = getattr(section, key)
            arguments[argument] = str(_resolve(value, base_dir)) if dotted in TEACHER_ENV_PATHS and value is not None \
                else value
    if "hard_set_task" in arguments:
        arguments.setdefault("svbench_task", arguments["hard_set_task"])
    student = sections.student.model_dump(include=sections.student.model_fields_set - {"model"}) \
        if sections.student is not None else {}
    return {**arguments, **({"student": student} if student else {})}


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `values` with dotted keys replaced: {"soar.q_r": 8} sets values["soar"]["q_r"]."""
    values = copy.deepcopy(values)
    for dotted, value in overrides.items():
        _set_dotted(values, dotted, value)
    return values


def dump_toml(values: dict[str, Any]) -> str:
    """A resolved config as TOML (sections of scalars and lists; None values are left out)."""
    lines: list[str] = []
    for section, body in values.items():
        lines.append(f"[{section}]")
        for key, value in body.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs, with both values."""
    differing: list[str] = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            differing += config_diff(left, right, prefix=f"{name}.")
        elif left != right:
            differing.append(f"{name}: {left!r} != {right!r}")
    return differing


def _describe(exc: ValidationError, origin: str) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        reason = error["msg"]
        if error["type"] == "extra_forbidden":
            reason = "unknown key (a typo? see the section's fields in sv_soar/config.py, [env]'s in env_section.py)"
        problems.append(f"{origin}: {key}: {reason}")
    return "\n".join(problems)


def _from_cwd(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_cwd(item) for item in value]
    return str(Path(value).expanduser().resolve()) if isinstance(value, (str, Path)) else value


def _resolve(path: Path, base_dir: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, key = dotted.split(".")
    node = values
    for section in sections:
        child = node.setdefault(section, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {section!r} is not a section")
        node = child
    node[key] = value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
