"""The students behind R_k: how the grounded scorer trains r students on each dataset X_k from the baseline
(sv_soar.student.trainer.train_student; in lockstep, sv_soar.student.lockstep) and measures them on Q_R
(sv_soar.q_r_accuracy), leaving a failed one out with its cause (docs/design.md §4 faults).

A student run that raises, diverges (StudentTrainingError) or runs past `time_limit_s` is left out of
R_k and counted with its cause. Faults, and what each ends in:
- out of memory (MemoryError, CUDA OOM): may pass once memory is freed, so the run is retried
  `retries` times with exponential backoff (`retry_backoff_s`, doubling), from the same seed, so a
  retry that passes is the student an undisturbed run trains; `StudentResult.attempts` counts tries;
- past the time limit: stopped after the step that went over (checked between steps); a step still
  running `hang_grace_s` after the limit is hung, and is interrupted in-process (sv_soar.student.watchdog);
- anything else (a verifier bug, divergence): deterministic for a seed, so never retried.

Trained one at a time (not in lockstep) with a reward cache, each finished student is kept in the cache until its
dataset's entry is written (`RewardCache.put_trained`): a run stopped before the step's measurement on Q_R comes
back to the students it had finished, their weights and logs as they were, and trains only the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from sv_soar.baseline import Baseline
from sv_soar.progress import progress_bar
from sv_soar.scores import StudentResult
from sv_soar.student.adapters import adapter_state_dict, add_student_adapter, remove_student_adapter
from sv_soar.student.full_finetune import StoredWeights, full_state_dict
from sv_soar.student.lockstep import LockstepStudent, train_students_lockstep
from sv_soar.student.trainer import train_student
from sv_soar.student.watchdog import _RETRYABLE_NAMES, StudentTimeout, _free_memory, _hard_deadline, _StudentHung
from sv_soar.tasks import Row

log = logging.getLogger("sv_soar.grounded")  # the scorer's log, under the name its lines have always had


class StudentRuns:
    """GroundedScorer's student runs. It reads the scorer's task, config, students, policy, engine, student_engine,
    cache, lockstep, progress, time_limit_s, hang_grace_s, retries and retry_backoff_s, and measures with its
    QRAccuracy methods (`_accuracies`)."""

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
            with progress_bar(len(runs) * steps, "students", self.progress, unit="step") as bar:
                together = self._train_lockstep(runs, baseline, steps, bar) if self.lockstep and len(runs) > 1 else None
                for i, (key, dataset, seed) in enumerate(runs):
                    name = f"grounded-run{i}"
                    result = together[i] if together is not None else self._train_kept(key, name, dataset, baseline,
                                                                                      seed, steps, bar)
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
        with progress_bar(len(runs) * steps, "students", self.progress, unit="step") as bar:
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

    def _train_kept(self, key: str, name: str, dataset: Sequence[Row], baseline: Baseline, seed: int, steps: int,
                    bar: Any) -> StudentResult:
        """`_train`, keeping a finished student in the reward cache until its dataset's entry is written; or, when a
        stopped run had finished this one, its kept weights back on the model as adapter `name`, untrained."""
        if self.cache is None:
            return self._train(name, dataset, baseline, seed, steps, bar)
        kept = self.cache.get_trained(key, seed)
        if kept is not None and len(kept[1]["log"]) == steps:
            state, record = kept
            try:
                add_student_adapter(self.policy, name, self.config, state)
            except ValueError as exc:  # weights of another shape: train it again
                log.warning("dataset %s student (seed %d): its kept weights do not load (%s); training it again",
                            key[:12], seed, exc)
                self.cache.drop_trained(key, seed)
            else:
                bar.update(steps)
                log.info("dataset %s student (seed %d): trained before a stop, its kept weights loaded", key[:12], seed)
                return StudentResult(seed=seed, accuracy=None, reward=None, failure=None,
                                     seconds_train=record["seconds_train"], log=record["log"],
                                     attempts=record.get("attempts", 1))
        result = self._train(name, dataset, baseline, seed, steps, bar)
        if result.failure is None:
            try:
                self.cache.put_trained(key, seed, adapter_state_dict(self.policy, name), {
                    "seconds_train": result.seconds_train, "log": result.log, "attempts": result.attempts})
            except OSError as exc:  # keeping it only saves time after a stop
                log.warning("dataset %s student (seed %d): not kept for a resume (%s)", key[:12], seed, exc)
        return result

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
