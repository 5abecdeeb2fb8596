"""Saved evaluation results read as a success matrix for hard-set mining (sv_soar.evaluation.hardset).

Three formats, one JSON object a line: vf-eval's `results.jsonl` (verifiers 0.1.x, `vf-eval -s`), a
hosted run's `results.jsonl` (columns as JSON strings) and SV-Bench's own `scripts/eval_*.py` output.
`load_eval_results` groups the rollouts by problem; `rectangular` and `per_problem` turn the groups into
what `mine_hard_set` takes (S samples a problem, or each problem with its own K).

A folder may mix tasks: SV-Bench keeps its E1 and E2 runs side by side (`results/runs/<claim>/<run>/`).
Each rollout's task is told by its row's `env_name`, else by the run's metadata.json (its environment
ids), else by which task's success metric it records; rows of another task are skipped and counted per
run (`RunRead`), and a run whose task nothing records is read as the asked task and named with why.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sv_soar.evaluation.hardset import row_hash
from sv_soar.jsonl import read_jsonl
from sv_soar.scoring.completion_text import completion_text, message_text
from sv_soar.tasks import Row, Task, get_task, task_names

# the project's own student env: its `task` argument (env_args) names the task, E1 by default
_OWN_STUDENT_ENV = "sv-soar-student"
# where metadata.json keeps the run's settings: at the top (vf-eval), or under "run" (a hosted run's, SV-Bench's
# results/runs/<claim>/<run>/metadata.json) or "config"
_METADATA_SECTIONS = ("run", "config", "eval_config")


@dataclass
class RunRead:
    """What one results file gave: the run's task, model and K as its files record them, and what was skipped."""

    path: Path  # the results.jsonl
    task: str | None  # the task metadata.json names for the run; None where it names none (or several)
    task_from: str  # where `task` comes from, or why there is none
    model: str | None
    temperature: float | None
    k: int | None  # rollouts a problem the run asked for (metadata.json's rollouts_per_example)
    rollouts: int = 0  # rollouts read as samples of the asked task
    untold: int = 0  # of them, rollouts whose task nothing recorded (read as the asked task)
    other_task: Counter = field(default_factory=Counter)  # task -> rollouts of that task, skipped
    errors: int = 0  # failed rollouts (API error), not counted as samples
    sample_counts: dict[str, int] = field(default_factory=dict)  # problem hash -> samples in this run

    @property
    def name(self) -> str:
        return str(self.path.parent)

    def run_k(self) -> int | None:
        """The run's K: metadata.json's rollouts_per_example, else the sample count most of its problems have
        (ties: the larger); None for a run with no rollout of the asked task."""
        if self.k is not None:
            return self.k
        if not self.sample_counts:
            return None
        counts = Counter(self.sample_counts.values())
        return max(counts, key=lambda c: (counts[c], c))


@dataclass
class EvalResults:
    """Saved rollouts grouped into problems: rows[i] was sampled len(outcomes[i]) times."""

    rows: list[Row]
    outcomes: list[list[bool]]
    models: list[str]  # from metadata.json beside each results file, where there is one
    temperatures: list[float]
    skipped_errors: int = 0  # rollouts that failed (API error), not counted as samples
    success_from: set[str] = field(default_factory=set)  # metric names used, or "task.is_success"
    runs: list[RunRead] = field(default_factory=list)  # one a results file, in the order read

    @property
    def skipped_other_task(self) -> int:
        return sum(sum(run.other_task.values()) for run in self.runs)

    def expected_samples(self) -> list[int]:
        """Each problem's samples as its runs asked for them: the sum of the K of every run it was sampled in."""
        keys = [row_hash(row) for row in self.rows]
        return [sum(run.run_k() or 0 for run in self.runs if key in run.sample_counts) for key in keys]

    def run_notes(self, task: Task) -> list[str]:
        """One line a run that skipped rows of another task or whose task nothing records."""
        notes = []
        for run in self.runs:
            if run.other_task:
                skipped = ", ".join(f"{n} rollouts of {name}" for name, n in sorted(run.other_task.items()))
                told = f" ({run.task_from})" if run.task is not None else ""
                notes.append(f"run {run.name}: skipped {skipped}, not {task.name}{told}; read {run.rollouts} of {task.name}")
            if run.untold:
                notes.append(f"run {run.name}: the task of {run.untold} rollouts is not recorded ({run.task_from}; their "
                             f"rows carry no env_name and no task's success metric): read as {task.name}")
        return notes


def load_eval_results(
    paths: Sequence[str | Path],
    task: Task,
    *,
    success_metric: str | None = None,
    success_threshold: float | None = None,
    rescore: bool = False,
    known_rows: Sequence[Row] = (),
) -> EvalResults:
    """Read saved evaluation results and group the rollouts by problem.

    Formats (one JSON object a line; bad lines raise file:line errors through read_jsonl):
    - vf-eval (verifiers 0.1.x `-s`): example_id (older: id), prompt and completion as chat
      messages, answer, info, reward, metrics {name: value} and/or the metric names as top-level keys.
    - a hosted run's results.jsonl: the same columns with prompt, completion, metrics and info as JSON
      strings, and a reasoning model's answer in `reasoning_content` where `content` is null.
    - SV-Bench scripts/eval_*.py: index, prompt (the question text), completion (text), answer,
      rewards {name: value}, completion_error on a failed call.
    A rollout is a success when its recorded metric (`success_metric`, default task.success_metrics)
    reaches its threshold (`success_threshold`; default the table's, else 1). A rollout without the
    metric is an error naming the metrics it has, unless `rescore` (then task.is_success scores it).
    Problems are grouped by content (question, answer); the question is the user message's text.
    `known_rows` (the SV-Bench data the eval ran on) restores each problem's full row, meta included.
    Rollouts of another task (their env_name, the run's metadata.json or their metrics say so) are skipped
    and counted in their run's RunRead (`results.runs`), never an error.
    """
    table = dict(task.success_metrics)
    if success_metric:
        metrics = ((success_metric, success_threshold if success_threshold is not None else table.get(success_metric, 1.0)),)
    else:
        metrics = tuple((name, success_threshold if success_threshold is not None else t) for name, t in table.items())
    by_question: dict[str, list[Row]] = {}
    for row in known_rows:
        by_question.setdefault(row["question"], []).append(row)
    problems: dict[str, tuple[Row, list[bool]]] = {}
    result = EvalResults(rows=[], outcomes=[], models=[], temperatures=[])
    covered = _task_names_of(task)

    def parse(record: Any, run: RunRead) -> tuple[Row, bool] | str | None:
        """(row, success); the name of another task for its row (skipped); None for a failed rollout."""
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object (one rollout), got {type(record).__name__}")
        record = _decoded(record)
        told = _task_of_envs(_row_envs(record)) or run.task or _task_of_metrics(record)
        if told is not None and told not in covered:
            return told
        if record.get("error") or record.get("completion_error"):
            return None
        if told is None:
            run.untold += 1
        question = _question_of(record)
        row = _problem_row(record, question, task, by_question)
        value, name, threshold = _metric(record, metrics)
        if value is None:
            if not rescore:
                have = sorted(k for holder in (record.get("metrics"), record.get("rewards"))
                              if isinstance(holder, dict) for k in holder)
                wanted = ", ".join(repr(n) for n, _ in metrics) or "(none for this task: pass --success-metric)"
                raise ValueError(f"no success metric {wanted} in this rollout (it records: {', '.join(have) or 'none'}); "
                                 "pass --success-metric NAME, or --rescore to score the completions again")
            if "completion" not in record:
                raise ValueError("no 'completion' and no success metric to score the rollout by")
            success = bool(task.is_success(completion_text(record.get("completion"), turns="all"), row))
            result.success_from.add("task.is_success")
        else:
            success = value >= threshold - 1e-9
            result.success_from.add(name if threshold == 1.0 else f"{name} >= {threshold:g}")
        return row, success

    for path in paths:
        run = _run_read(Path(path))
        result.runs.append(run)
        for item in read_jsonl(path, validate=lambda record: parse(record, run)):
            if item is None:
                run.errors += 1
                result.skipped_errors += 1
                continue
            if isinstance(item, str):
                run.other_task[item] += 1
                continue
            row, success = item
            key = row_hash(row)
            problems.setdefault(key, (row, []))[1].append(success)
            run.rollouts += 1
            run.sample_counts[key] = run.sample_counts.get(key, 0) + 1
        if not run.rollouts:
            continue  # a run of another task: its model and temperature say nothing about this hard set
        if run.model is not None and run.model not in result.models:
            result.models.append(run.model)
        if run.temperature is not None and run.temperature not in result.temperatures:
            result.temperatures.append(run.temperature)
    for row, outcomes in problems.values():
        result.rows.append(row)
        result.outcomes.append(outcomes)
    return result


_JSON_COLUMNS = ("prompt", "completion", "metrics", "rewards", "info")


def _decoded(record: dict) -> dict:
    """A hosted run's record with its JSON-string columns (prompt, completion, metrics, info) decoded."""
    out = dict(record)
    for key in _JSON_COLUMNS:
        value = out.get(key)
        if not isinstance(value, str) or not value.lstrip().startswith(("[", "{")):
            continue
        try:
            decoded = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            continue
        if key in ("prompt", "completion"):  # only chat messages; a question text may start with "[" too
            if isinstance(decoded, list) and decoded and all(isinstance(m, dict) and "role" in m for m in decoded):
                out[key] = decoded
        elif isinstance(decoded, dict):
            out[key] = decoded
    return out


def _question_of(record: dict) -> str:
    if isinstance(record.get("question"), str):
        return record["question"]
    prompt = record.get("prompt")
    if isinstance(prompt, str):  # SV-Bench scripts save the question text as the prompt
        return prompt
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, dict) and message.get("role") == "user":
                return message_text(message.get("content"))
        raise ValueError("prompt has no user message to take the question from")
    raise ValueError("no 'prompt' (chat messages or text) and no 'question'")


def _problem_row(record: dict, question: str, task: Task, by_question: dict[str, list[Row]]) -> Row:
    answer = record.get("answer")
    candidates = by_question.get(question, [])
    if candidates:
        matching = [row for row in candidates if answer in (None, "") or row.get("answer") == answer]
        if not matching:
            raise ValueError(
                f"answer {_describe(answer)} differs from the data file's {_describe(candidates[0].get('answer'))} "
                "for this question"
            )
        return matching[0]
    row: dict[str, Any] = {"question": question}
    if answer not in (None, ""):
        row["answer"] = answer
    info = record.get("info")
    if isinstance(info, dict) and info:
        meta = info.get("meta")
        if isinstance(meta, dict):
            row["meta"] = meta
        rest = {k: v for k, v in info.items() if k != "meta"}
        if rest:
            row["info"] = rest
    row.setdefault("meta", {})
    return task.validate_row(row)


def _metric(record: dict, metrics: Sequence[tuple[str, float]]) -> tuple[float | None, str, float]:
    for name, threshold in metrics:
        for holder in (record.get("metrics"), record.get("rewards"), record):
            if isinstance(holder, dict) and name in holder and holder[name] is not None:
                value = holder[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"metric {name!r} is {_describe(value)}, not a number")
                return float(value), name, threshold
    return None, "", 1.0


def _describe(value: Any) -> str:
    """A value as an error quotes it: its repr, cut to 60 characters (never a whole input echoed back)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _run_read(results: Path, levels: int = 3) -> RunRead:
    """The run a results file belongs to, from the metadata.json nearest it (vf-eval, a hosted run, SV-Bench):
    the results' folder, else up to `levels` folders above it."""
    folder = results.parent
    meta: Any = None
    for candidate in [folder, *list(folder.parents)[:levels]]:
        try:
            meta = json.loads((candidate / "metadata.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(meta, dict):
            break
    else:
        return RunRead(results, None, "no metadata.json", None, None, None)
    sections = [meta, *(meta[k] for k in _METADATA_SECTIONS if isinstance(meta.get(k), dict))]
    envs = [env for section in sections for env in _metadata_envs(section)]
    tasks = {name for name in (_task_of_envs([env]) for env in envs) if name is not None}
    if len(tasks) == 1:
        task_name = tasks.pop()
        task_from = f"metadata.json: environment {_describe(next(e for e in envs if _task_of_envs([e]) == task_name)[0])}"
    else:
        task_name = None
        task_from = ("metadata.json names environments of several tasks" if tasks
                     else "metadata.json names no environment of a known task")
    model = next((m for section in sections if (m := _model_of(section)) is not None), None)
    temperature = next((t for section in sections if (t := _temperature_of(section)) is not None), None)
    k = next((v for section in sections if isinstance(v := section.get("rollouts_per_example"), int)
              and not isinstance(v, bool) and v >= 1), None)
    return RunRead(results, task_name, task_from, model, temperature, k)


def _model_of(section: dict) -> str | None:
    """The model a metadata section names: model / model_name / model_id / base_model, or {"model": {"name"}}."""
    for key in ("model", "model_name", "model_id", "base_model"):
        if isinstance(section.get(key), str) and section[key].strip():
            return section[key]
    nested = section.get("model")
    if isinstance(nested, dict):
        return next((v for k, v in nested.items() if k in ("name", "id") and isinstance(v, str) and v.strip()), None)
    return None


def _temperature_of(section: dict) -> float | None:
    sampling = section.get("sampling_args") if isinstance(section.get("sampling_args"), dict) else {}
    value = sampling.get("temperature", section.get("temperature"))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def _metadata_envs(section: dict) -> list[tuple[str, dict]]:
    """(environment id, its arguments) a metadata section names: vf-eval's env_id / env and env_args, a hosted
    run's environments[{id, args}]."""
    found = []
    args = section.get("env_args") if isinstance(section.get("env_args"), dict) else {}
    for key in ("env_id", "env", "env_name", "environment"):
        if isinstance(section.get(key), str):
            found.append((section[key], args))
    for env in section.get("environments") or [] if isinstance(section.get("environments"), list) else []:
        if isinstance(env, str):
            found.append((env, {}))
        elif isinstance(env, dict):
            name = env.get("id") or env.get("name")
            if isinstance(name, str):
                found.append((name, env.get("args") if isinstance(env.get("args"), dict) else {}))
    return found


def _row_envs(record: dict) -> list[tuple[str, dict]]:
    """The environment a rollout names itself (a hosted run's env_name)."""
    return [(record[k], {}) for k in ("env_name", "env_id") if isinstance(record.get(k), str)]


def _task_of_envs(envs: Sequence[tuple[str, dict]]) -> str | None:
    """The task the environment ids name (SV-Bench's, by Task.svbench_envs; the project's student env by its
    `task` argument), where they name exactly one."""
    found = set()
    for env_id, args in envs:
        normal = env_id.lower().replace("_", "-")
        if _OWN_STUDENT_ENV in normal:
            name = args.get("task", "e1")
            found.add(name if isinstance(name, str) and name in task_names() else None)  # "e1+e2": rows tell
            continue
        for name in task_names():
            if any(svbench in normal for svbench in get_task(name).svbench_envs):
                found.add(name)
    return found.pop() if len(found) == 1 else None


def _task_of_metrics(record: dict) -> str | None:
    """The task whose success metric a rollout records, where exactly one task's is there."""
    recorded = set()
    for holder in (record.get("metrics"), record.get("rewards"), record):
        if isinstance(holder, dict):
            recorded.update(k for k in holder if isinstance(k, str))
    found = {name for name in task_names() if any(m in recorded for m, _ in get_task(name).success_metrics)}
    return found.pop() if len(found) == 1 else None


def _task_names_of(task: Task) -> set[str]:
    """The task names whose rows `task` reads: its own, and a mixed task's parts (sv_soar.tasks.mixed)."""
    return {task.name, *(part.name for part in getattr(task, "parts", ()))}


def rectangular(results: EvalResults, samples: int | None) -> tuple[list[Row], np.ndarray, list[str]]:
    """Keep S samples a problem (S = `samples`, or the fewest any problem has); say what was cut."""
    if not results.rows:
        raise ValueError("the results hold no rollouts")
    counts = [len(o) for o in results.outcomes]
    s = samples if samples is not None else min(counts)
    notes = []
    keep = [i for i, c in enumerate(counts) if c >= s]
    if len(keep) < len(counts):
        notes.append(f"{len(counts) - len(keep)} problems have fewer than {s} samples and were left out")
    if any(counts[i] > s for i in keep):
        notes.append(f"problems with more than {s} samples (up to {max(counts)}) count only their first {s}")
    if not keep:
        raise ValueError(f"no problem has {s} samples (most: {max(counts)})")
    matrix = np.array([results.outcomes[i][:s] for i in keep], dtype=bool)
    return [results.rows[i] for i in keep], matrix, notes


def per_problem(results: EvalResults, min_samples: int | None = None
                ) -> tuple[list[Row], list[np.ndarray], list[str], str]:
    """Every problem with its own K (its sample count); notes say what was left out and why, and the last
    value states the rule that chose them (the report's "min samples").

    `min_samples` None (the default): a problem needs the samples its runs asked for (each run's K, summed
    over the runs it was sampled in), so a problem whose rollouts were cut short (failed calls, a run
    stopped early) is left out rather than counted fail@K on fewer samples next to those with all K.
    A number keeps every problem with at least that many samples, whatever its run's K.
    """
    if not results.rows:
        raise ValueError("the results hold no rollouts")
    counts = [len(o) for o in results.outcomes]
    if min_samples is None:
        needed = results.expected_samples()
        rule = "each problem's run K (the default; --min-samples N keeps every problem with N or more)"
        why = "fewer samples than their run's K"
    else:
        needed = [min_samples] * len(counts)
        rule = f"--min-samples {min_samples} (given), whatever the run's K"
        why = f"fewer than --min-samples {min_samples} samples"
    keep = [i for i, c in enumerate(counts) if c >= needed[i]]
    notes = []
    if len(keep) < len(counts):
        kept_set = set(keep)
        left = [i for i in range(len(counts)) if i not in kept_set]
        thin = ", ".join(f"{counts[i]} of {needed[i]}" for i in left[:5]) + (", ..." if len(left) > 5 else "")
        notes.append(f"{len(left)} problems have {why} and were left out (samples of K: {thin})")
    if not keep:
        raise ValueError(f"no problem has the samples it needs ({why}; most: {max(counts)}): "
                         "pass --min-samples N to mine problems with fewer")
    return [results.rows[i] for i in keep], [np.asarray(results.outcomes[i], dtype=bool) for i in keep], notes, rule
