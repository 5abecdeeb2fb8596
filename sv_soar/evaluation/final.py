"""The final evaluation of a run (docs/design.md §4): fresh students trained on the promoted questions mixed
with D_train, scored on the held-out D_test.

For every seed: a new LoRA student starts from the bare base model and runs the inner-loop RL
(`train_student`) on PQ ∪ D_train — shuffled together, or with `curriculum` in promotion order
(each promoted dataset in turn, then D_train; the adapter carries over between phases; with student.finetune
= "full", the student's own copy of the base model instead of an adapter, and its weights carry over). It then
draws `samples` completions (at student.temperature, default 1.0) a D_test problem, and the run reports:

- pass@k, k ∈ {1, 4, 8, 16, 32} up to `samples` (unbiased estimator, Chen et al. 2021);
- the cold-start escape rate: the share of D_test problems with pass@1 > 0, i.e. solved by at least
  one sample (the seed write-up (docs/design.md §1), "Cold-start escape rate");
- for tasks whose answers state a confidence (E1): the expected calibration error (10 equal-width
  bins over the stated confidence, against label correctness) and the abstain rate;
- each metric's mean over seeds with a percentile bootstrap interval over seeds.

An evaluation stopped and run again resumes each student from its checkpoint (`final_evaluation`).
The untrained base student is scored the same way once, as the "before" row. A Hard-only run has no
promoted questions, so its students train on D_train alone; the same code scores every method.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sv_soar.evaluation.pass_at_k import mean_pass_at_k, sample_completions
from sv_soar.jsonl import read_jsonl, write_text_atomic
from sv_soar.models import load_model
from sv_soar.progress import count_done_before, progress_bar
from sv_soar.run_dir import RunDirError, open_run
from sv_soar.tasks import Row, Task, scoring_task

PASS_KS = (1, 4, 8, 16, 32)  # the paper's final pass@k (docs/design.md §4)
ECE_BINS = 10
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class ProblemSetMetrics:
    """How one model does on one problem set, from `samples` completions a problem."""

    problems: int
    samples: int
    pass_at_k: dict[int, float]
    escape_rate: float  # share of problems solved at least once (pass@1 > 0)
    ece: float | None = None  # None for tasks without stated confidences, or when nothing parsed
    abstain_rate: float | None = None
    parsed_rate: float | None = None  # share of samples with a parsable answer
    # successes out of `samples` for each problem, in the set's order: the report's paired bootstrap
    # resamples problems (and seeds) from these
    successes: list[int] = field(default_factory=list)
    # each problem's label, in the set's order, when the task's answers are labels (E1); empty otherwise. A
    # one-class hard set is escaped by a student that flips its label prior; accuracy by label on a balanced
    # set tells that from learning (the report's per-label columns)
    labels: list[str] = field(default_factory=list)
    # tasks with twin pairs (Task.twin_of, docs/design.md §7): each problem's twin is sampled too; its successes in
    # the set's order, and pair accuracy J = mean over pairs of pass@1(x) + pass@1(x') − 1 (0 for any answer that
    # ignores the causal feature, where per-item accuracy can rise by a prior flip)
    twin_successes: list[int] = field(default_factory=list)
    pair_accuracy: float | None = None


@dataclass
class SeedResult:
    seed: int
    train_rows: int
    steps: int
    seconds_train: float
    seconds_evaluate: float
    sets: dict[str, ProblemSetMetrics]  # "d_test" and every extra evaluation set by name
    train_log: list[dict[str, float]] = field(default_factory=list)


def expected_calibration_error(points: Sequence[tuple[float, bool]], bins: int = ECE_BINS) -> float | None:
    """ECE = Σ_b |B_b|/N · |mean correct(B_b) − mean confidence(B_b)| over equal-width confidence bins."""
    if not points:
        return None
    confidence = np.array([c for c, _ in points], dtype=float)
    correct = np.array([k for _, k in points], dtype=float)
    index = np.minimum((confidence * bins).astype(int), bins - 1)  # confidence 1.0 goes in the last bin
    ece = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def bootstrap_interval(values: Sequence[float], *, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value a seed)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_interval: no values")
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(resamples, data.size), replace=True).mean(axis=1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def score_problem_set(engine, task: Task, rows: Sequence[Row], samples: int, *, adapter: str | None, seed: int,
                      max_new_tokens: int, batch_size: int, progress: bool,
                      temperature: float = 1.0) -> ProblemSetMetrics:
    """Sample `samples` completions a row and compute pass@k, the escape rate and calibration (and with twin pairs,
    the twins' successes and J)."""
    twins = [task.twin_of(row) for row in rows] if task.twin_of is not None else []
    texts = sample_completions(engine, task, [*rows, *twins], samples, seed=seed, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, adapter=adapter, progress=progress, temperature=temperature)
    texts, twin_texts = texts[: len(rows)], texts[len(rows):]
    successes = np.array([[bool(task.is_success(t, row)) for t in drawn] for row, drawn in zip(rows, texts)])
    metrics = ProblemSetMetrics(
        problems=len(rows),
        samples=samples,
        pass_at_k={k: mean_pass_at_k(successes, k) for k in PASS_KS if k <= samples},
        escape_rate=float(successes.any(axis=1).mean()),
        successes=[int(count) for count in successes.sum(axis=1)],
        labels=[row["answer"] for row in rows] if all(isinstance(row.get("answer"), str) for row in rows) else [],
    )
    if twins:
        twin_successes = np.array([[bool(task.is_success(t, row)) for t in drawn] for row, drawn in zip(twins, twin_texts)])
        metrics.twin_successes = [int(count) for count in twin_successes.sum(axis=1)]
        metrics.pair_accuracy = float((successes.mean(axis=1) + twin_successes.mean(axis=1) - 1).mean())
    if task.calibration_point is not None:
        points = [task.calibration_point(t, row) for row, drawn in zip(rows, texts) for t in drawn]
        parsed = [p for p in points if p is not None]
        metrics.parsed_rate = len(parsed) / len(points)
        metrics.abstain_rate = sum(abstained for _, _, abstained in parsed) / len(points)
        stated = [(confidence, correct) for confidence, correct, abstained in parsed
                  if confidence is not None and not abstained]
        metrics.ece = expected_calibration_error(stated)
    return metrics


def training_phases(promoted: Sequence[Sequence[Row]], d_train: Sequence[Row], curriculum: bool,
                    train_on: str = "pq+d_train") -> list[list[Row]]:
    """The row sets a fresh student trains on, in order: one mixed set, or PQ in promotion order then D_train.
    With train_on = "pq" D_train is left out (PQ alone; no phases when nothing was promoted)."""
    tail = [list(d_train)] if train_on == "pq+d_train" else []
    if curriculum:
        return [list(dataset) for dataset in promoted if dataset] + tail
    mixed = [row for dataset in promoted for row in dataset] + (tail[0] if tail else [])
    return [mixed] if mixed else []


def final_training_set(config) -> str:
    """The final students' training set, evaluation.train_on, except for Hard-only: it promotes nothing, so its own
    set is D_train whichever the config names ("every method's final student on its own set"; with "pq" it would
    have nothing to train on)."""
    return "pq+d_train" if config.run.method == "hard-only" else config.evaluation.train_on


def final_steps(config, rows: int) -> int:
    """The final students' RL steps: evaluation.steps, else ceil(epochs · rows / batch_prompts)."""
    if config.evaluation.steps is not None:
        return config.evaluation.steps
    return max(1, math.ceil(config.evaluation.epochs * rows / config.student.batch_prompts))


def final_student_steps(config, phases: Sequence[Sequence[Row]], steps: int | None = None) -> int:
    """The RL steps of a run's final students, by precedence: none when there is nothing to train on (train_on =
    "pq" and nothing promoted: the final student is the untrained one); `steps` (`sv-soar evaluate --steps`); a
    compute-matched run's count (evaluation.compute_matched_to, over evaluation.steps: the config's steps are
    every other method's); evaluation.steps; from evaluation.epochs. `steps` with compute_matched_to is refused (with
    something to train)."""
    if not phases:
        return 0
    matched_to = config.evaluation.compute_matched_to
    if steps is not None and matched_to is not None:
        raise RunDirError(f"--steps {steps} and evaluation.compute_matched_to = {str(matched_to)!r} both set the "
                          "final students' steps; a compute-matched student trains the matched count")
    if steps is not None:
        return steps
    if matched_to is not None:
        return compute_matched_steps(matched_to)
    return final_steps(config, sum(map(len, phases)))


def summarise(results: Sequence[SeedResult], set_name: str) -> dict[str, dict[str, float]]:
    """Mean and bootstrap interval over seeds of every metric of one problem set."""
    columns: dict[str, list[float]] = {}
    for result in results:
        metrics = result.sets[set_name]
        for k, value in metrics.pass_at_k.items():
            columns.setdefault(f"pass@{k}", []).append(value)
        for name in ("escape_rate", "ece", "abstain_rate", "pair_accuracy"):
            value = getattr(metrics, name)
            if value is not None:
                columns.setdefault(name, []).append(value)
    summary = {}
    for name, values in columns.items():
        low, high = bootstrap_interval(values)
        summary[name] = {"mean": float(np.mean(values)), "low": low, "high": high, "seeds": len(values)}
    return summary


def final_evaluation(run, *, seeds: Sequence[int], samples: int, steps: int | None, curriculum: bool,
                     extra_sets: dict[str, list[Row]] | None = None, score_base: bool = True,
                     progress: bool = True, checkpoint_every_s: float = 300.0) -> dict[str, Any]:
    """Train and score one fresh student a seed; write RUN_DIR/evaluation/final.json and return it. Each student
    (seed, phase) keeps a checkpoint in RUN_DIR/evaluation/ every `checkpoint_every_s` seconds while it trains
    (sv_soar.student.checkpoint): run again after a stop, the evaluation resumes there; the checkpoints are removed
    once final.json is written."""
    from sv_soar.engines.transformers_engine import (  # delayed: sv_soar.engines.transformers_engine imports torch
        TransformersEngine)
    from sv_soar.student.full_finetune import trainable_copy  # delayed: sv_soar.student.full_finetune imports torch
    from sv_soar.student.checkpoint import StudentCheckpoint  # delayed: sv_soar.student.checkpoint imports torch
    from sv_soar.student.trainer import (  # delayed: sv_soar.student.trainer imports torch
        remove_student_adapter, student_policy, train_student)

    config = run.config
    task = scoring_task(config)
    train_config = config.final_student_config()
    task_rows = {"d_test": run.d_test(), **(extra_sets or {})}
    train_on = final_training_set(config)
    phases = training_phases(run.promoted_datasets(), run.d_train(), curriculum, train_on)
    matched_to = config.evaluation.compute_matched_to
    steps = final_student_steps(config, phases, steps)
    if not phases:  # train_on = "pq" and nothing promoted: what the run teaches by itself is nothing
        print(f"{run.folder}: the run promoted no questions and evaluation.train_on = 'pq': its final students are "
              "the untrained student (0 steps)", file=sys.stderr)
    model, tokenizer = load_model(config.student.model)
    policy = student_policy(model, train_config)
    engine = TransformersEngine(policy, tokenizer, model_name=config.student.model,
                                max_batch_size=config.soar.eval_batch_size)
    # then every student trains, and is scored on, the student copy (an untrained final student needs none)
    full = train_config.finetune == "full" and bool(phases)
    student_engine = engine.over(trainable_copy(policy)) if full else engine
    # D_test is sampled at evaluation.temperature (default: the student's training temperature): the one its hard
    # set was mined at, so that "escape" means the same policy solved it
    score = dict(max_new_tokens=train_config.tokens_for(task), batch_size=config.soar.eval_batch_size, progress=progress,
                 temperature=config.evaluation_temperature())

    base = {}
    if score_base:
        base = {name: asdict(score_problem_set(engine, task, rows, samples, adapter=None, seed=config.run.seed, **score))
                for name, rows in task_rows.items()}
    results: list[SeedResult] = []
    total = sum(map(len, phases))
    phase_steps = [steps if len(phases) == 1 else max(1, round(steps * len(rows) / total)) for rows in phases]
    evaluation = run.folder / "evaluation"
    with progress_bar(len(seeds) * sum(phase_steps), "final students", progress, unit="step", leave=True) as bar:
        for seed in seeds:
            name = f"final-seed{seed}"
            adapter = None if full else name
            state, log, seconds_train = None, [], 0.0
            for phase, (rows, n_steps) in enumerate(zip(phases, phase_steps)):
                # a stopped evaluation resumes each student from its checkpoint (a compute-matched one trains for hours)
                checkpoint = StudentCheckpoint(evaluation / f"seed-{seed}.phase-{phase}.checkpoint", checkpoint_every_s)
                student = train_student(policy, student_engine, task, rows, train_config, adapter_name=name,
                                        init_adapter_state=state, seed=seed * 1000 + phase, steps=n_steps,
                                        log=lambda entry: bar.update(1), checkpoint=checkpoint,
                                        restored=lambda entries: count_done_before(bar, len(entries)))
                state, log, seconds_train = student.adapter_state, log + student.log, seconds_train + student.seconds
                if phase < len(phases) - 1:
                    remove_student_adapter(policy, name)
            started = time.perf_counter()
            if not phases:  # the untrained student, sampled with this seed
                sets = {set_name: score_problem_set(engine, task, set_rows, samples, adapter=None, seed=seed, **score)
                        for set_name, set_rows in task_rows.items()}
                results.append(SeedResult(seed, 0, 0, 0.0, time.perf_counter() - started, sets, []))
                continue
            sets = {set_name: score_problem_set(student_engine, task, set_rows, samples, adapter=adapter, seed=seed,
                                                **score)
                    for set_name, set_rows in task_rows.items()}
            student.save(evaluation / f"seed-{seed}")
            remove_student_adapter(policy, name)
            results.append(SeedResult(seed, total, steps, seconds_train, time.perf_counter() - started, sets, log))

    report = {
        "method": config.run.method,
        "estimator": train_config.estimator,
        "compute_matched_to": str(matched_to) if matched_to is not None else None,
        "model": config.student.model,
        "samples": samples,
        "steps": steps,
        "curriculum": curriculum,
        "train_on": train_on,
        "epochs": config.evaluation.epochs if config.evaluation.steps is None and matched_to is None else None,
        "promoted_questions": sum(len(dataset) for dataset in run.promoted_datasets()),
        "d_train": len(run.d_train()),
        "base": base,
        "seeds": [asdict(result) for result in results],
        "summary": {name: summarise(results, name) for name in task_rows},
    }
    write_text_atomic(run.folder / "evaluation" / "final.json", json.dumps(report, indent=2, default=str))
    # the students' checkpoints: this call's, and any set aside (.stale) or cut mid-write (atomic_path's .tmp)
    for pattern in ("seed-*.phase-*.checkpoint*", ".seed-*.phase-*.checkpoint.*.tmp"):
        for left in evaluation.glob(pattern):
            left.unlink(missing_ok=True)
    return report


LOOP_STUDENT_FILE = "loop-student.json"


def loop_student_evaluation(run, *, samples: int, extra_sets: dict[str, list[Row]] | None = None,
                            score_base: bool = True, progress: bool = True) -> dict[str, Any]:
    """Score the outer loop's own student (the last promoted baseline: what the loop itself taught, trained on
    the teacher's problems only) the way final students are scored; writes RUN_DIR/evaluation/loop-student.json,
    which the report shows as a "<method> (loop student)" row. A run that never promoted has no such student."""
    folder = run.loop_student()
    if folder is None:
        raise RunDirError(f"{run.folder}: the run promoted no student (method {run.config.run.method}), so its "
                          "loop student is the untrained base: the base row of `sv-soar evaluate`")
    return adapter_evaluation(run, folder, samples=samples, extra_sets=extra_sets, score_base=score_base,
                              progress=progress, out=run.folder / "evaluation" / LOOP_STUDENT_FILE,
                              method=f"{run.config.run.method} (loop student)")


def adapter_evaluation(run, adapter: Path, *, samples: int, extra_sets: dict[str, list[Row]] | None = None,
                       score_base: bool = True, progress: bool = True, out: Path | None = None,
                       method: str | None = None) -> dict[str, Any]:
    """Score a LoRA adapter trained elsewhere (vf-train, prime-rl) on D_test the way final students are scored:
    one "seed" row whose sets hold its metrics (seed = the run's seed; no training). A fully fine-tuned
    student's folder (model.safetensors: a final student's under student.finetune = "full") is scored the
    same way, its weights loaded into the base model once the base has been scored. Writes `out` (default
    RUN_DIR/evaluation/adapter-<folder name>.json) and returns the report, with its path."""
    from safetensors.torch import load_file  # heavy: safetensors.torch imports torch

    from sv_soar.engines.transformers_engine import (  # delayed: sv_soar.engines.transformers_engine imports torch
        TransformersEngine)
    from sv_soar.student.full_finetune import (  # delayed: sv_soar.student.full_finetune imports torch
        FULL_WEIGHTS, load_full_state)

    adapter = Path(adapter)
    full = (adapter / FULL_WEIGHTS).is_file()
    if not full and not (adapter / "adapter_config.json").is_file():
        raise ValueError("not a peft adapter folder (no adapter_config.json), nor a fully fine-tuned student's "
                         "(no model.safetensors)")
    config = run.config
    task = scoring_task(config)
    train_config = config.final_student_config()
    task_rows = {"d_test": run.d_test(), **(extra_sets or {})}
    model, tokenizer = load_model(config.student.model)
    engine = TransformersEngine(model, tokenizer, model_name=config.student.model,
                                max_batch_size=config.soar.eval_batch_size)
    score = dict(max_new_tokens=train_config.max_new_tokens, batch_size=config.soar.eval_batch_size, progress=progress,
                 temperature=config.evaluation_temperature())
    base = {}
    if score_base:
        base = {name: asdict(score_problem_set(engine, task, rows, samples, adapter=None, seed=config.run.seed, **score))
                for name, rows in task_rows.items()}
    if full:
        load_full_state(model, load_file(str(adapter / FULL_WEIGHTS)), where=str(adapter / FULL_WEIGHTS))
        evaluated = None
    else:
        engine.load_adapter("evaluated", str(adapter))
        evaluated = "evaluated"
    started = time.perf_counter()
    sets = {name: score_problem_set(engine, task, rows, samples, adapter=evaluated, seed=config.run.seed, **score)
            for name, rows in task_rows.items()}
    result = SeedResult(config.run.seed, 0, 0, 0.0, time.perf_counter() - started, sets)
    report = {
        "method": method or f"adapter {adapter}",
        "adapter": str(adapter.resolve()),
        "model": config.student.model,
        "samples": samples,
        "steps": 0,
        "promoted_questions": 0,
        "d_train": 0,
        "base": base,
        "seeds": [asdict(result)],
        "summary": {name: summarise([result], name) for name in task_rows},
    }
    path = out or run.folder / "evaluation" / f"adapter-{adapter.resolve().name}.json"
    write_text_atomic(path, json.dumps(report, indent=2, default=str))
    return {**report, "path": str(path)}


def read_evaluation(path: Path, rerun: str) -> dict[str, Any] | None:
    """An evaluation file this module wrote (final.json, loop-student.json), or None when there is none; a file that
    is not one is a RunDirError that says how to write it again (`rerun`)."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc}); rerun `{rerun}`") from None
    if not isinstance(report, dict):
        raise RunDirError(f"{path}: not an evaluation report (a JSON {type(report).__name__}); rerun `{rerun}`")
    return report


def compute_matched_steps(folder: Path) -> int:
    """Student RL steps a SOAR run spent: its outer loop's students (steps.jsonl) plus one final student, as its
    evaluation/final.json records it once evaluated (else as its config would train it).

    Only student compute counts: the teacher's sampling and updates have no Hard-only counterpart."""
    soar = open_run(folder)
    steps_path = soar.folder / "steps.jsonl"
    if not steps_path.is_file():
        raise RunDirError(f"evaluation.compute_matched_to = {str(folder)!r}: no steps.jsonl; train that run first")
    entries = read_jsonl(steps_path)
    missing = [e["step"] for e in entries if "student_steps" not in e and not e.get("error")]
    if missing:
        raise RunDirError(f"{steps_path}: steps {missing[:3]} carry no student_steps (written by an older sv-soar)")
    inner = sum(e.get("student_steps", 0) for e in entries)
    final = soar.folder / "evaluation" / "final.json"
    evaluated = read_evaluation(final, f"sv-soar evaluate {folder}")
    if evaluated is not None:  # trained as evaluated (--steps, --curriculum), not as the config says
        steps = evaluated.get("steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise RunDirError(f"{final}: 'steps' is {steps!r}, not a count of student steps")
        return inner + steps
    phases = training_phases(soar.promoted_datasets(), soar.d_train(), soar.config.evaluation.curriculum,
                             final_training_set(soar.config))
    return inner + (final_steps(soar.config, sum(map(len, phases))) if phases else 0)


def render_summary(report: dict[str, Any]) -> str:
    if report.get("adapter"):  # a saved student: nothing was trained
        lines = [f"evaluation: {report['method']}, {report['model']}, {report['samples']} samples a problem, "
                 f"the student saved in {report['adapter']}"]
    else:
        trained_on = (f"{report['promoted_questions']} promoted questions" if report.get("train_on") == "pq" else
                      f"{report['promoted_questions']} promoted + {report['d_train']} D_train questions")
        untrained = not any(seed["train_rows"] for seed in report["seeds"])
        trained = ("the untrained student (nothing promoted to train on)" if untrained else
                   f"{report['steps']} student steps on {trained_on}")
        lines = [f"final evaluation: {report['method']}, {report['model']}, {len(report['seeds'])} seed(s), "
                 f"{report['samples']} samples a problem, {trained}"]
    for set_name, summary in report["summary"].items():
        lines.append(f"  {set_name}:")
        base = report["base"].get(set_name)
        for metric, value in summary.items():
            before = ""
            if base is not None:
                b = base["pass_at_k"].get(int(metric[5:])) if metric.startswith("pass@") else base.get(metric)
                before = f"   (base {b:.3f})" if b is not None else ""
            lines.append(f"    {metric:<13} {value['mean']:.3f}  [{value['low']:.3f}, {value['high']:.3f}]{before}")
    return "\n".join(lines)
