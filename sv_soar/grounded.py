"""SOAR's grounded reward: how much a teacher dataset X_k improves a student on real hard problems.

SOAR (arXiv 2601.18778; docs/design.md §4) scores each of the g datasets of an outer step by training r
students on it, each starting from the current baseline student, and measuring them on Q_R, 64
questions drawn afresh from D_train (the fail@K hard set's reward half):

    R_{k,j} = Acc(student_{k,j}, Q_R) − Acc(baseline, Q_R)      greedy decoding, one sample a question
    R_k     = mean_j R_{k,j}                                     over the students that finished

Acc is the mean of task.is_success (grounding="correctness", the paper's binary success) or of the full
SV-Bench rubric (grounding="full"). `q_r_samples` > 1 at `q_r_temperature` > 0 (not the paper's: an option)
makes Acc graded: the mean over that many sampled answers a question, each question's samples drawn from
its own seeded stream, so the baseline and every student answer under the same random numbers. On a Q_R of
one class a greedy Acc moves only when a student flips its answer on whole questions (experiments/soar-t01-e1).
A task with twin pairs (`Task.twin_of`, the mechanism task) answers each Q_R question's twin too, and Acc is
pair accuracy J = mean over Q_R of correct(x) + correct(x') − 1 (docs/design.md §7): a dataset that teaches a
shortcut (a constant, the label prior, a spurious cue) earns nothing.
What makes it cheap enough to run every outer step:
- ONE base model per scorer, wrapped once into the shared PeftModel (`student_policy`); every student is
  a LoRA adapter on it, trained by `sv_soar.student.trainer.train_student`;
- all students of all datasets of a call are evaluated together, in mixed-adapter batches (one prompt
  per (question, student) pair, each row under its own adapter), and the baseline's Acc on a Q_R is
  computed once and memoised;
- every R_k is kept in the reward cache (`sv_soar.reward_cache`), keyed by everything it depends on.
With student.finetune = "full" a student is every weight of the scorer's one student copy of the base
model (sv_soar.student.full_finetune): students train one after another, each measured on Q_R as soon as it
is trained, and only a kept student's weights stay: in its reward-cache file, read back a tensor at a time
(`StoredWeights`), or in memory when the scorer has no cache.

A student run that raises, diverges (StudentTrainingError) or runs past `time_limit_s` is left out of
R_k and counted with its cause (sv_soar.student_runs says which faults are retried); a dataset whose students
all failed gets R_k = None and an error, and the other datasets of the call are still scored.

Three ideas, three modules: measuring Acc on Q_R (sv_soar.q_r_accuracy), training the students
(sv_soar.student_runs), and here the scorer that composes them with the reward cache (`grounded_rewards`: the
formula above).

    scorer = GroundedScorer("smollm2-135m-instruct", "e1", StudentTrainConfig.cpu_small(), students=4)
    scores = scorer.score([x_1, x_2, x_3, x_4], q_r, Baseline("base"), seed=step)
    [s.reward for s in scores]                                    # R_1 .. R_g

`sv-soar score` (sv_soar/commands/score.py) scores JSONL datasets against a hard set from the command line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from sv_soar.baseline import Baseline
from sv_soar.config import check_q_r_sampling
from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.engines.vllm_engine import VLLMEngine
from sv_soar.generation import SamplingParams
from sv_soar.models import load_model
from sv_soar.q_r_accuracy import GROUNDINGS, Grounding, QRAccuracy, rows_hash
from sv_soar.reward_cache import RewardCache, reward_cache_key
from sv_soar.scores import DatasetScore, StudentResult
from sv_soar.student.adapters import student_policy
from sv_soar.student.config import StudentTrainConfig
from sv_soar.student.full_finetune import StoredWeights, trainable_copy
from sv_soar.student_runs import StudentRuns
from sv_soar.tasks import Row, Task, get_task

log = logging.getLogger(__name__)


def student_seed(seed: int, j: int) -> int:
    """Seed of student j: from (seed, j) only, never from the dataset's position k, so the same dataset
    at another position of a later call trains the same students (and hits the reward cache)."""
    digest = hashlib.sha256(f"grounded-student:{seed}:{j}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def grounded_rewards(students: Sequence[StudentResult], baseline_accuracy: float) -> float | None:
    """R_{k,j} = Acc(student_{k,j}, Q_R) − Acc(baseline, Q_R) for each finished student (set on it), and
    R_k = mean_j R_{k,j} over them: None when every student of X_k failed."""
    for student in students:
        if student.accuracy is not None:
            student.reward = student.accuracy - baseline_accuracy  # R_{k,j}
    finished = [s for s in students if s.failure is None]
    return sum(s.reward for s in finished) / len(finished) if finished else None  # R_k


class GroundedScorer(QRAccuracy, StudentRuns):
    """Scores teacher datasets by the grounded improvement of r students trained on each (SOAR's R_k).

    `model`: a name `sv_soar.models.load_model` accepts (embedded name, local folder, HF id), or a
    (model, tokenizer) pair already in memory. It is wrapped once into the shared student policy, so
    a bare model passed in becomes part of this scorer.
    """

    student_engine: Any = None  # student.finetune = "full": the engine over the student copy (`_load`)

    def __init__(
        self,
        model: str | tuple[Any, Any],
        task: str | Task,
        config: StudentTrainConfig,
        *,
        students: int = 4,
        grounding: Grounding = "correctness",
        time_limit_s: float | None = None,
        hang_grace_s: float = 60.0,
        retries: int = 1,
        retry_backoff_s: float = 5.0,
        cache_dir: str | Path | None = None,
        eval_batch_size: int = 64,
        progress: bool = True,
        device: str = "cpu",
        engine: Literal["transformers", "vllm"] = "transformers",
        engine_options: dict[str, Any] | None = None,
        lockstep: bool | None = None,
        q_r_samples: int = 1,
        q_r_temperature: float = 0.0,
    ) -> None:
        if students < 1:
            raise ValueError(f"students must be at least 1, got {students}")
        if grounding not in GROUNDINGS:
            raise ValueError(f"grounding must be one of {GROUNDINGS}, got {grounding!r}")
        if eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be at least 1, got {eval_batch_size}")
        check_q_r_sampling(q_r_samples, q_r_temperature)
        if q_r_temperature > 0 and engine != "transformers":
            raise ValueError(f"a sampled Acc on Q_R (q_r_temperature {q_r_temperature}) draws each question's samples "
                             f"from its own seeded stream, which the transformers engine offers: not engine = {engine!r}")
        if config.finetune == "full" and (engine != "transformers" or lockstep):
            raise ValueError(f'student.finetune = "full" trains each student as its own model, one after another, '
                             f'with the transformers engine: not with engine = {engine!r}, lockstep = {lockstep!r}')
        if time_limit_s is not None and not time_limit_s >= 0:
            raise ValueError(f"time_limit_s must be >= 0 or None, got {time_limit_s}")
        if not hang_grace_s >= 0 or retries < 0 or not retry_backoff_s >= 0:
            raise ValueError(f"hang_grace_s and retry_backoff_s must be >= 0 and retries >= 0, got "
                             f"{hang_grace_s}, {retry_backoff_s}, {retries}")
        self.task = get_task(task) if isinstance(task, str) else task
        self.config = config
        self.students = students  # r (SOAR: 4)
        self.grounding = grounding
        self.time_limit_s = time_limit_s
        self.hang_grace_s = hang_grace_s  # a step running this long past time_limit_s is hung: interrupted
        self.retries = retries  # extra tries for a run that ran out of memory
        self.retry_backoff_s = retry_backoff_s  # wait before the first retry; doubles each retry
        self.eval_batch_size = eval_batch_size
        self.progress = progress
        self.device, self.engine_kind, self.engine_options = device, engine, dict(engine_options or {})
        # The students of a call step in lockstep (one mixed-adapter generate a step, sv_soar.student.lockstep):
        # by default on CUDA, where a step's decode costs about the same for 4x the rows; on CPU the rows cost
        # in proportion, and one student after another keeps its memory low.
        self.lockstep = (torch.device(device).type == "cuda" and engine == "transformers"
                         and config.finetune == "lora") if lockstep is None else lockstep
        self.cache = RewardCache(cache_dir) if cache_dir is not None else None
        # greedy, one sample a question (docs/design.md §4), unless q_r_samples/q_r_temperature say otherwise; the
        # student's completion budget; stop where SV-Bench's parser stops reading (the first balanced JSON object)
        self.eval_params = SamplingParams(max_new_tokens=config.tokens_for(self.task), temperature=q_r_temperature,
                                          n=q_r_samples, stop_at_json_end=True)
        self._baseline_memo: dict[tuple[str, str], float] = {}
        started = time.perf_counter()
        self._load(model)
        self.seconds_load = time.perf_counter() - started

    def _load(self, model: str | tuple[Any, Any]) -> None:
        """Load the base model once and wrap it into the shared student policy and its engine.
        (The Ray backend, sv_soar.backends.ray_backend, loads it in its actors instead.)"""
        # here, not at the top: they import transformers (seconds), which a process that only drives scorers
        # (the Ray backend's driver) never needs
        if isinstance(model, (str, os.PathLike)):
            self.model_name = str(model)
            base, tokenizer = load_model(self.model_name, device=self.device)
        else:
            base, tokenizer = model
            self.model_name = str(getattr(base.config, "_name_or_path", "") or type(base).__name__)
        self.policy = student_policy(base, self.config)  # once per scorer: every student is an adapter on it
        if self.engine_kind == "vllm":  # rollouts and evaluation on vLLM; training stays on `policy` (GPU)

            self.engine = VLLMEngine(self.model_name, tokenizer=tokenizer, policy=self.policy, **self.engine_options)
        elif self.engine_kind == "transformers":
            self.engine = TransformersEngine(self.policy, tokenizer, model_name=self.model_name)
        else:
            raise ValueError(f"engine must be 'transformers' or 'vllm', got {self.engine_kind!r}")
        # full fine-tuning: the one copy of the base model that each student in turn loads and trains
        self.student_engine = self.engine.over(trainable_copy(base)) if self.config.finetune == "full" else None

    # --- R_k ----------------------------------------------------------------------------------------

    def cache_key(self, dataset: Sequence[Row], q_r: Sequence[Row], baseline: Baseline, *, seed: int,
                  promoted: bool = False) -> str:
        return reward_cache_key(task=self.task.name, model=self.model_name, dataset=dataset, baseline_id=baseline.id,
                                q_r=q_r, config=self.config.model_dump(), grounding=self.grounding,
                                students=self.students, seed=seed, promoted=promoted,
                                q_r_sampling=self.q_r_sampling())

    def score(
        self,
        datasets: Sequence[Sequence[Row]],
        q_r: Sequence[Row],
        baseline: Baseline,
        *,
        seed: int,
        promoted: bool = False,
        keep_adapters: bool = False,
    ) -> list[DatasetScore]:
        """R_k for each dataset X_k (in order): r students each, trained from `baseline`, measured on Q_R.

        `promoted`: the baseline has been promoted at least once, so students train
        config.steps_after_promotion steps (SOAR: 15, else 10). `keep_adapters`: keep each finished
        student's LoRA weights in StudentResult.adapter_state (the outer loop promotes one of them).
        """
        if not q_r:
            raise ValueError("Q_R is empty: nothing to measure accuracy on")
        started = time.perf_counter()
        keys = [self.cache_key(dataset, q_r, baseline, seed=seed, promoted=promoted) for dataset in datasets]
        scores: dict[str, DatasetScore] = {}
        for key in keys:
            if key not in scores and (hit := self._cached(key, keep_adapters)) is not None:
                scores[key] = hit
        todo = {key: datasets[k] for k, key in enumerate(keys) if key not in scores}  # one run per distinct key
        if todo:
            scores.update(self._score_uncached(todo, q_r, baseline, seed=seed, promoted=promoted,
                                               keep_adapters=keep_adapters, started=started))
        return [_copy(scores[key]) for key in keys]

    def _cached(self, key: str, keep_adapters: bool) -> DatasetScore | None:
        if self.cache is None or (entry := self.cache.get(key)) is None:
            return None
        try:
            score = DatasetScore.from_dict(entry)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            log.warning("reward cache: ignoring malformed entry %s (%s); it will be recomputed", key[:12], exc)
            return None
        if keep_adapters:  # the weights are stored only when a caller asked to keep them
            for j, student in enumerate(score.students):
                if student.failure is None:
                    student.adapter_state = self._cached_weights(key, j)
                    if student.adapter_state is None:
                        log.info("reward cache: %s has no stored weights for student %d; recomputing", key[:12], j)
                        return None
        score.cached = True
        self.cache.drop_trained(key)  # students kept by a run stopped between writing the entry and dropping them
        return score

    def _cached_weights(self, key: str, j: int) -> Any:
        """A cached student's weights: LoRA weights in memory; a full student's read lazily from the file."""
        if self.student_engine is None:
            return self.cache.get_adapter(key, j)
        try:
            return StoredWeights(self.cache.adapter_path(key, j))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged header
            log.warning("reward cache: ignoring unreadable weights of student %d of %s (%s)", j, key[:12], exc)
            return None

    def _score_uncached(self, todo: dict[str, Sequence[Row]], q_r: Sequence[Row], baseline: Baseline, *,
                        seed: int, promoted: bool, keep_adapters: bool, started: float) -> dict[str, DatasetScore]:
        t0 = time.perf_counter()
        memoised = (baseline.id, rows_hash(q_r)) in self._baseline_memo
        acc_baseline = self.baseline_accuracy(baseline, q_r)
        seconds_baseline = 0.0 if memoised else time.perf_counter() - t0

        steps = self.config.steps_for(promoted)
        runs = [(key, dataset, student_seed(seed, j)) for key, dataset in todo.items() for j in range(self.students)]
        try:
            ran, seconds_eval = self._run_students(runs, q_r, baseline, steps=steps, keep_adapters=keep_adapters)
        except Exception:  # an error, not a stop: the step is recorded as failed and these datasets are not resumed
            if self.cache is not None:
                for key in todo:
                    self.cache.drop_trained(key)
            raise
        students: dict[str, list[StudentResult]] = {key: [] for key in todo}
        for (key, _, _), result in zip(runs, ran, strict=True):
            students[key].append(result)

        finished_total = max(1, sum(r.failure is None for r in ran))
        scores = {}
        for key, results in students.items():
            reward = grounded_rewards(results, acc_baseline)  # R_{k,j} of each student, and R_k
            finished = [r for r in results if r.failure is None]
            seconds = {
                "train": sum(r.seconds_train for r in results),
                "evaluate": seconds_eval * len(finished) / finished_total,  # share of the one evaluation
                "baseline_evaluate": seconds_baseline / len(todo),
            }
            seconds["total"] = sum(seconds.values())
            error = None
            if not finished:
                causes = "; ".join(f"student {j}: {r.failure}" for j, r in enumerate(results))
                error = f"all {len(results)} students failed ({causes})"
                log.error("dataset %s has no R_k: %s", key[:12], error)
            scores[key] = DatasetScore(
                reward=reward,
                baseline_accuracy=acc_baseline, students=results, error=error, cached=False, key=key,
                seconds=seconds,
            )
            self._store(key, scores[key], keep_adapters)
            if self.cache is not None:
                self.cache.drop_trained(key)  # its students kept until now (sv_soar.student_runs)
        log.info("scored %d dataset(s) in %.1fs", len(todo), time.perf_counter() - started)
        return scores

    def _store(self, key: str, score: DatasetScore, keep_adapters: bool) -> None:
        """Cache the entry, unless a failure may not repeat (a timeout or an unexpected exception): only a
        StudentTrainingError (divergence) is a property of the data and the seed."""
        if self.cache is None:
            return
        transient = [s.failure for s in score.students
                     if s.failure is not None and not s.failure.startswith("StudentTrainingError")]
        if transient:
            log.info("reward cache: not storing %s (a failure that may not repeat: %s)", key[:12], transient[0])
            return
        if keep_adapters:
            for j, student in enumerate(score.students):
                written = isinstance(student.adapter_state, StoredWeights) and \
                    student.adapter_state.path == self.cache.adapter_path(key, j)  # a full student's: _kept_weights
                if student.adapter_state is not None and not written:
                    self.cache.put_adapter(key, j, student.adapter_state)
        self.cache.put(key, {**score.to_dict(), "cached": False})


def _copy(score: DatasetScore) -> DatasetScore:
    """A separate object per position, so two positions holding the same dataset can be edited apart."""
    students = [StudentResult(**{**vars(s), "log": list(s.log)}) for s in score.students]
    return DatasetScore(score.reward, score.baseline_accuracy, students, score.error, score.cached, score.key,
                        dict(score.seconds))

