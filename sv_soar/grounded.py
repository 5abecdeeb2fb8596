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
R_k and counted with its cause; a dataset whose students all failed gets R_k = None and an error, and
the other datasets of the call are still scored. Faults, and what each ends in:
- out of memory (MemoryError, CUDA OOM): may pass once memory is freed, so the run is retried
  `retries` times with exponential backoff (`retry_backoff_s`, doubling), from the same seed, so a
  retry that passes is the student an undisturbed run trains; `StudentResult.attempts` counts tries;
- past the time limit: stopped after the step that went over (checked between steps); a step still
  running `hang_grace_s` after the limit is hung, and is interrupted in-process (`_hard_deadline`);
- anything else (a verifier bug, divergence): deterministic for a seed, so never retried.

    scorer = GroundedScorer("smollm2-135m-instruct", "e1", StudentTrainConfig.cpu_small(), students=4)
    scores = scorer.score([x_1, x_2, x_3, x_4], q_r, Baseline("base"), seed=step)
    [s.reward for s in scores]                                    # R_1 .. R_g

`sv-soar score` (sv_soar/commands/score.py) scores JSONL datasets against a hard set from the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence

from pathlib import Path
from typing import Any, Literal

import torch

from sv_soar.config import check_q_r_sampling
from sv_soar.generation import SamplingParams
from sv_soar.reward_cache import RewardCache, problem_content, reward_cache_key
from sv_soar.tasks import Row, Task, get_task
from sv_soar.scores import DatasetScore, StudentResult  # noqa: F401 - re-exported
from sv_soar.student.adapters import Baseline  # noqa: F401 - re-exported: the scorer's input
from sv_soar.student.full_finetune import StoredWeights, full_state_dict, load_full_state, trainable_copy
from sv_soar.student.watchdog import (  # noqa: F401 - re-exported
    RETRYABLE,
    StudentTimeout,
    _free_memory,
    _hard_deadline,
    _RETRYABLE_NAMES,
    _StudentHung,
)
from sv_soar.student.trainer import (
    StudentTrainConfig,
    add_student_adapter,
    adapter_state_dict,
    remove_student_adapter,
    student_policy,
    train_student,
)

log = logging.getLogger(__name__)

Grounding = Literal["correctness", "full"]
GROUNDINGS = ("correctness", "full")
BASELINE_ADAPTER = "grounded-baseline"  # the baseline's weights while Acc(baseline, Q_R) is measured


def student_seed(seed: int, j: int) -> int:
    """Seed of student j: from (seed, j) only, never from the dataset's position k, so the same dataset
    at another position of a later call trains the same students (and hits the reward cache)."""
    digest = hashlib.sha256(f"grounded-student:{seed}:{j}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def question_seed(row: Row) -> int:
    """The seed of a Q_R question's sampled answers: from its content alone, so the baseline and every student
    (of any step) draw the same random numbers for it."""
    return int(rows_hash([row]), 16) & 0x7FFFFFFF


def rows_hash(rows: Sequence[Row]) -> str:
    text = json.dumps([problem_content(row) for row in rows], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the scorer ------------------------------------------------------------------------------------------


class GroundedScorer:
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
        from sv_soar.engines.transformers_engine import TransformersEngine
        from sv_soar.models import load_model

        if isinstance(model, (str, os.PathLike)):
            self.model_name = str(model)
            base, tokenizer = load_model(self.model_name, device=self.device)
        else:
            base, tokenizer = model
            self.model_name = str(getattr(base.config, "_name_or_path", "") or type(base).__name__)
        self.policy = student_policy(base, self.config)  # once per scorer: every student is an adapter on it
        if self.engine_kind == "vllm":  # rollouts and evaluation on vLLM; training stays on `policy` (GPU)
            from sv_soar.engines.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(self.model_name, tokenizer=tokenizer, policy=self.policy, **self.engine_options)
        elif self.engine_kind == "transformers":
            self.engine = TransformersEngine(self.policy, tokenizer, model_name=self.model_name)
        else:
            raise ValueError(f"engine must be 'transformers' or 'vllm', got {self.engine_kind!r}")
        # full fine-tuning: the one copy of the base model that each student in turn loads and trains
        self.student_engine = self.engine.over(trainable_copy(base)) if self.config.finetune == "full" else None

    # --- Acc ----------------------------------------------------------------------------------------

    def baseline_accuracy(self, baseline: Baseline, q_r: Sequence[Row]) -> float:
        """Acc(baseline, Q_R), computed once per (baseline.id, Q_R) and memoised."""
        memo_key = (baseline.id, rows_hash(q_r))
        if memo_key not in self._baseline_memo:
            self._baseline_memo[memo_key] = self._evaluate_baseline(baseline, q_r)
        return self._baseline_memo[memo_key]

    def _evaluate_baseline(self, baseline: Baseline, q_r: Sequence[Row]) -> float:
        if not q_r:
            raise ValueError("Q_R is empty: nothing to measure accuracy on")
        with self.baseline_engine(baseline) as (engine, adapter):
            return self._accuracies([adapter], q_r, "baseline", engine)[0]

    @contextlib.contextmanager
    def baseline_engine(self, baseline: Baseline, adapter_name: str = BASELINE_ADAPTER) -> Iterator[tuple[Any, str | None]]:
        """(engine, adapter) that generate as `baseline` inside the block: the bare model; its LoRA weights as
        adapter `adapter_name` on the shared policy (removed afterwards); or its full weights loaded into the
        student copy (student.finetune = "full")."""
        if baseline.adapter_state is None:
            yield self.engine, None
        elif self.student_engine is not None:
            load_full_state(self.student_engine.model, baseline.adapter_state, where=f"baseline {baseline.name}")
            yield self.student_engine, None
        else:
            add_student_adapter(self.policy, adapter_name, self.config, baseline.adapter_state)
            try:
                yield self.engine, adapter_name
            finally:
                remove_student_adapter(self.policy, adapter_name)

    def _accuracies(self, adapters: Sequence[str | None], q_r: Sequence[Row], what: str,
                    engine: Any = None) -> list[float]:
        """Acc of each adapter (None = the bare model) on Q_R, all in mixed-adapter batches of
        eval_batch_size (question, adapter) rows; question-major, so a batch mixes adapters.
        `engine`: default the shared policy's (a full student's is the student copy's)."""
        engine = engine or self.engine
        questions = list(q_r)
        if self.task.twin_of is not None:  # twin pairs: each question's twin is answered too (Acc is then J)
            questions += [self.task.twin_of(row) for row in q_r]
        pairs = [(a, q) for q in range(len(questions)) for a in range(len(adapters))]
        prompts = [self.task.prompt(row) for row in questions]
        totals = [0.0] * len(adapters)
        max_batch = engine.max_batch_size
        engine.max_batch_size = self.eval_batch_size
        try:
            with _progress(len(pairs), f"eval {what}", self.progress, unit="answer") as bar:
                for start in range(0, len(pairs), self.eval_batch_size):
                    chunk = pairs[start : start + self.eval_batch_size]
                    answers = self._answers(engine, chunk, prompts, questions, adapters)
                    for (a, q), samples in zip(chunk, answers, strict=True):
                        totals[a] += sum(self._grounded_score(s.text, questions[q]) for s in samples) / len(samples)
                    bar.update(len(chunk))
        finally:
            engine.max_batch_size = max_batch
        if self.task.twin_of is not None:  # J = mean over pairs of correct(x) + correct(x') − 1
            return [total / len(q_r) - 1.0 for total in totals]
        return [total / len(q_r) for total in totals]

    def _answers(self, engine: Any, chunk: Sequence[tuple[int, int]], prompts: Sequence[Any], q_r: Sequence[Row],
                 adapters: Sequence[str | None]) -> list[list[Any]]:
        """The answers of each (adapter, question) pair of the chunk: greedy, one a pair; sampled, one request a
        pair, seeded by the question's content, so every adapter's samples of a question share their uniforms."""
        if self.eval_params.temperature == 0:
            return engine.generate([prompts[q] for _, q in chunk], self.eval_params,
                                   adapters=[adapters[a] for a, _ in chunk])
        requests = [([prompts[q]], dataclasses.replace(self.eval_params, seed=question_seed(q_r[q])), adapters[a])
                    for a, q in chunk]
        return [outputs[0] for outputs in engine.generate_many(requests)]

    def q_r_sampling(self) -> dict[str, Any] | None:
        """How Acc samples Q_R, for the reward cache's key: None when greedy (the paper's; old keys unchanged)."""
        if self.eval_params.temperature == 0:
            return None
        return {"samples": self.eval_params.n, "temperature": self.eval_params.temperature}

    def _grounded_score(self, text: str, row: Row) -> float:
        if self.grounding == "correctness":
            return float(bool(self.task.is_success(text, row)))
        return float(self.task.score(text, row)["reward"])

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
        ran, seconds_eval = self._run_students(runs, q_r, baseline, steps=steps, keep_adapters=keep_adapters)
        students: dict[str, list[StudentResult]] = {key: [] for key in todo}
        for (key, _, _), result in zip(runs, ran, strict=True):
            if result.accuracy is not None:
                result.reward = result.accuracy - acc_baseline  # R_{k,j}
            students[key].append(result)

        finished_total = max(1, sum(r.failure is None for r in ran))
        scores = {}
        for key, results in students.items():
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
                reward=sum(r.reward for r in finished) / len(finished) if finished else None,  # R_k
                baseline_accuracy=acc_baseline, students=results, error=error, cached=False, key=key,
                seconds=seconds,
            )
            self._store(key, scores[key], keep_adapters)
        log.info("scored %d dataset(s) in %.1fs", len(todo), time.perf_counter() - started)
        return scores

    def _run_students(self, runs: Sequence[tuple[str, Sequence[Row], int]], q_r: Sequence[Row], baseline: Baseline,
                      *, steps: int, keep_adapters: bool) -> tuple[list[StudentResult], float]:
        """Train one student per (key, dataset, seed) run from `baseline`, then measure every finished one on
        Q_R together (mixed-adapter batches). Returns the results in run order, with `accuracy` (and
        `adapter_state` with keep_adapters) filled in but not `reward`, and the evaluation's seconds."""
        if self.student_engine is not None:
            return self._run_full_students(runs, q_r, baseline, steps=steps, keep_adapters=keep_adapters)
        results: list[StudentResult] = []
        adapters: dict[int, str] = {}  # run index -> adapter name of a finished student
        try:
            with _progress(len(runs) * steps, "students", self.progress, unit="step") as bar:
                together = self._train_lockstep(runs, baseline, steps, bar) if self.lockstep and len(runs) > 1 else None
                for i, (key, dataset, seed) in enumerate(runs):
                    name = f"grounded-run{i}"
                    result = together[i] if together is not None else self._train(name, dataset, baseline, seed,
                                                                                 steps, bar)
                    results.append(result)
                    if result.failure is None:
                        adapters[i] = name
                    else:
                        log.warning("dataset %s student (seed %d) left out of R_k: %s", key[:12], seed,
                                    result.failure)
            t_eval = time.perf_counter()
            names = list(adapters.values())
            accuracies = dict(zip(names, self._accuracies(names, q_r, "students"))) if names else {}
            seconds_eval = time.perf_counter() - t_eval
            for i, name in adapters.items():
                results[i].accuracy = accuracies[name]
                if keep_adapters:
                    results[i].adapter_state = adapter_state_dict(self.policy, name)
        finally:
            for name in adapters.values():
                remove_student_adapter(self.policy, name)
        return results, seconds_eval

    def _run_full_students(self, runs: Sequence[tuple[str, Sequence[Row], int]], q_r: Sequence[Row],
                           baseline: Baseline, *, steps: int, keep_adapters: bool) -> tuple[list[StudentResult], float]:
        """_run_students with student.finetune = "full": each student trains the one student copy and is
        measured on Q_R right after (its weights are no adapter to batch with the others'); with
        keep_adapters its weights are copied out before the next student loads the copy."""
        results: list[StudentResult] = []
        seconds_eval = 0.0
        with _progress(len(runs) * steps, "students", self.progress, unit="step") as bar:
            for i, (key, dataset, seed) in enumerate(runs):
                result = self._train(f"grounded-run{i}", dataset, baseline, seed, steps, bar)
                results.append(result)
                if result.failure is not None:
                    log.warning("dataset %s student (seed %d) left out of R_k: %s", key[:12], seed, result.failure)
                    continue
                t_eval = time.perf_counter()
                result.accuracy = self._accuracies([None], q_r, "student", self.student_engine)[0]
                seconds_eval += time.perf_counter() - t_eval
                if keep_adapters:
                    result.adapter_state = self._kept_weights(key, i % self.students)
        return results, seconds_eval

    def _kept_weights(self, key: str, j: int) -> Any:
        """The student copy's weights, kept for promotion: written to student j's reward-cache file at once and
        read back from it when needed (StoredWeights), so that a step's r·g whole models are not all in memory;
        without a cache, in memory."""
        state = full_state_dict(self.student_engine.model)
        if self.cache is None:
            return state
        return StoredWeights(self.cache.put_adapter(key, j, state))

    def _train_lockstep(self, runs: Sequence[tuple[str, Sequence[Row], int]], baseline: Baseline, steps: int,
                        bar: Any) -> list[StudentResult] | None:
        """Train every run's student together (sv_soar.student.lockstep), adapters named grounded-run{i} as the
        sequential path names them. A student's time limit applies to its share of the wall time. None when
        the shared generation failed (out of memory): the caller then trains them one by one, with retries."""
        from sv_soar.student.lockstep import LockstepStudent, train_students_lockstep

        histories: list[list[dict]] = [[] for _ in runs]
        spent = [0.0] * len(runs)
        limit = self.time_limit_s

        def on_step(i: int):
            def log(entry: dict) -> None:
                histories[i].append(entry)
                bar.update(1)
                spent[i] += entry["seconds_generation"] + entry["seconds_forward_backward"] + entry["seconds_other"]
                if limit is not None and spent[i] > limit:
                    raise StudentTimeout(f"exceeded the {limit:g}s time limit after step {entry['step']}/{steps} "
                                         f"({spent[i]:.1f}s, its share of the lockstep wall time)")
            return log

        students = [LockstepStudent(f"grounded-run{i}", dataset, seed, baseline.adapter_state, log=on_step(i))
                    for i, (_, dataset, seed) in enumerate(runs)]
        started = time.perf_counter()
        try:
            deadline = None if limit is None else (limit + self.hang_grace_s) * len(runs)
            with _hard_deadline(deadline):
                outcomes = train_students_lockstep(self.policy, self.engine, self.task, students, self.config,
                                                   steps=steps)
        except Exception as exc:  # noqa: BLE001 - the shared generation failed: fall back to one at a time
            for student in students:
                remove_student_adapter(self.policy, student.adapter_name)
            _free_memory()
            log.warning("students in lockstep failed (%s: %s); training them one at a time", type(exc).__name__, exc)
            bar.reset(total=len(runs) * steps)
            return None
        wall = time.perf_counter() - started
        results = []
        for i, outcome in enumerate(outcomes):
            seconds = wall / len(runs)  # each student's share, so a dataset's "train" seconds add up to the wall
            if isinstance(outcome, BaseException):
                remove_student_adapter(self.policy, students[i].adapter_name)
                bar.update(steps - len(histories[i]))
                results.append(StudentResult(seed=runs[i][2], accuracy=None, reward=None,
                                             failure=f"{type(outcome).__name__}: {outcome}", seconds_train=seconds,
                                             log=histories[i]))
            else:
                results.append(StudentResult(seed=runs[i][2], accuracy=None, reward=None, failure=None,
                                             seconds_train=seconds, log=histories[i]))
        return results

    def _train(self, name: str, dataset: Sequence[Row], baseline: Baseline, seed: int, steps: int,
               bar: Any) -> StudentResult:
        """Train one student, retrying a run that ran out of memory (see the module docstring)."""
        attempt = 1
        while True:
            result = self._train_once(name, dataset, baseline, seed, steps, bar)
            result.attempts = attempt
            if result.failure is None or not result.failure.startswith(_RETRYABLE_NAMES) or attempt > self.retries:
                return result
            wait = self.retry_backoff_s * 2 ** (attempt - 1)
            log.warning("student %s (seed %d) attempt %d failed: %s; retrying in %.1fs", name, seed, attempt,
                        result.failure, wait)
            _free_memory()
            time.sleep(wait)
            attempt += 1

    def _train_once(self, name: str, dataset: Sequence[Row], baseline: Baseline, seed: int, steps: int,
                    bar: Any) -> StudentResult:
        """Train one student; any Exception leaves it out with its cause (the adapter is removed)."""
        history: list[dict] = []
        started = time.perf_counter()
        limit = self.time_limit_s

        def on_step(entry: dict) -> None:
            history.append(entry)
            bar.update(1)
            bar.set_postfix(reward=f"{entry['mean_reward']:+.3f}", refresh=False)
            elapsed = time.perf_counter() - started
            # Cooperative: checked between steps; a step that hangs is interrupted by _hard_deadline.
            if limit is not None and elapsed > limit:
                raise StudentTimeout(f"exceeded the {limit:g}s time limit after step {entry['step']}/{steps} "
                                     f"({elapsed:.1f}s)")

        try:
            with _hard_deadline(None if limit is None else limit + self.hang_grace_s):
                train_student(self.policy, self.student_engine or self.engine, self.task, dataset, self.config,
                              adapter_name=name,
                              init_adapter_state=baseline.adapter_state, seed=seed, steps=steps, log=on_step)
        except Exception as exc:  # noqa: BLE001 - a failed student is counted, never fatal (docs/design.md §4 faults)
            remove_student_adapter(self.policy, name)
            bar.update(steps - len(history))
            failure = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, _StudentHung):
                failure = (f"StudentTimeout: hung in step {len(history) + 1}/{steps}: still running "
                           f"{time.perf_counter() - started:.1f}s after its start, {self.hang_grace_s:g}s past the "
                           f"{limit:g}s time limit; interrupted")
            return StudentResult(seed=seed, accuracy=None, reward=None, failure=failure,
                                 seconds_train=time.perf_counter() - started, log=history)
        return StudentResult(seed=seed, accuracy=None, reward=None, failure=None,
                             seconds_train=time.perf_counter() - started, log=history)

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


def _progress(total: int, desc: str, enabled: bool, unit: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False)
