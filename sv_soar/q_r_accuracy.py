"""Acc(·, Q_R): how the grounded scorer measures a baseline and its students on Q_R (arXiv 2601.18778;
docs/design.md §4), the Acc of R_{k,j} = Acc(student_{k,j}, Q_R) − Acc(baseline, Q_R) (sv_soar.grounded).

Acc is the mean of task.is_success (grounding="correctness", the paper's binary success) or of the full
SV-Bench rubric (grounding="full"), greedy, one answer a question; `q_r_samples` > 1 at `q_r_temperature` > 0
makes it graded (sv_soar.grounded's docstring). A task with twin pairs (`Task.twin_of`) answers each question's
twin too, and Acc is then pair accuracy J (docs/design.md §7). Every adapter is measured in mixed-adapter
batches, and Acc(baseline, Q_R) once per (baseline, Q_R).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from sv_soar.baseline import Baseline
from sv_soar.progress import progress_bar
from sv_soar.reward_cache import problem_content
from sv_soar.student.adapters import add_student_adapter, remove_student_adapter
from sv_soar.student.full_finetune import load_full_state
from sv_soar.tasks import Row

Grounding = Literal["correctness", "full"]
GROUNDINGS = ("correctness", "full")
BASELINE_ADAPTER = "grounded-baseline"  # the baseline's weights while Acc(baseline, Q_R) is measured


def question_seed(row: Row) -> int:
    """The seed of a Q_R question's sampled answers: from its content alone, so the baseline and every student
    (of any step) draw the same random numbers for it."""
    return int(rows_hash([row]), 16) & 0x7FFFFFFF


def rows_hash(rows: Sequence[Row]) -> str:
    text = json.dumps([problem_content(row) for row in rows], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class QRAccuracy:
    """GroundedScorer's Acc on Q_R. It reads the scorer's task, grounding, eval_params, eval_batch_size,
    progress, config, policy, engine and student_engine, and memoises in its _baseline_memo."""

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
            with progress_bar(len(pairs), f"eval {what}", self.progress, unit="answer") as bar:
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
