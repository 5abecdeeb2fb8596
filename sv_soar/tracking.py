"""Experiment tracking, as RL users expect it: the outer loop's and the student runs' metrics sent to Weights &
Biases (SV-Bench's tracker; offline mode works without network, `wandb sync` uploads later) or TensorBoard.
Off by default (`[logging] backend = "none"`); steps.jsonl stays the record either way.

One point per outer step t (x-axis = t, from 1):
    outer/...     every number of the step's steps.jsonl entry: valid_rate, R_hat, moving_average, R_k/1..g,
                  baseline_accuracy, promoted (0/1), teacher_update/*, diversity/*, seconds/*, ...
    student/...   the step's student runs (g·r of them, cached ones included), each metric of the trainer's
                  per-step log (mean_reward, pass_rate, kl, loss, grad_norm, tokens_per_s, seconds_*) averaged
                  over every inner step of every run, plus final_mean_reward (mean of each run's last step)
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any, Sequence

from sv_soar.scores import Scorer

STUDENT_METRICS = ("mean_reward", "pass_rate", "kl", "loss", "grad_norm", "tokens_per_s", "generation_tokens_per_s",
                   "seconds_generation", "seconds_forward_backward", "seconds_other")


def flatten(entry: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested entry under slash-joined keys; lists become key/1, key/2, ..."""
    metrics: dict[str, float] = {}
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            metrics[name] = float(value)
        elif isinstance(value, (int, float)):
            if math.isfinite(value):
                metrics[name] = float(value)
        elif isinstance(value, dict):
            metrics |= flatten(value, f"{name}/")
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) or v is None for v in value):
            metrics |= flatten({str(i + 1): v for i, v in enumerate(value) if v is not None}, f"{name}/")
    return metrics


def student_metrics(scores: Sequence[Any]) -> dict[str, float]:
    """Averages over the student runs behind a step's DatasetScores (sv_soar.grounded)."""
    logs = [student.log for score in scores for student in score.students if student.log]
    entries = [entry for log in logs for entry in log]
    metrics = {"student/runs": float(len(logs))}
    if not entries:
        return metrics
    for key in STUDENT_METRICS:
        values = [entry[key] for entry in entries if isinstance(entry.get(key), (int, float))]
        if values:
            metrics[f"student/{key}"] = sum(values) / len(values)
    metrics["student/final_mean_reward"] = sum(log[-1]["mean_reward"] for log in logs) / len(logs)
    return metrics


class Tracker:
    """One run's tracker: `log(metrics, step)` then `close()`. backend "wandb" or "tensorboard"."""

    def __init__(self, backend: str, run_dir: Path, *, project: str, name: str, wandb_mode: str,
                 config: dict[str, Any] | None = None) -> None:
        self.backend = backend
        if backend == "wandb":
            try:
                import wandb  # heavy: wandb, an optional extra
            except ImportError:
                raise ImportError("[logging] backend = 'wandb' needs wandb: pip install 'sv-soar[tracking]'") from None
            # one W&B run per run folder, so that --resume continues it
            run_id = f"{name}-{hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]}"
            self._run = wandb.init(project=project, name=name, dir=str(run_dir), mode=wandb_mode, config=config,
                                   resume="allow", id=re.sub(r"[^A-Za-z0-9_.-]", "-", run_id))
            self._run.define_metric("outer_step")
            self._run.define_metric("*", step_metric="outer_step")
        elif backend == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter  # heavy: torch; tensorboard is an optional extra
            except ImportError:
                raise ImportError("[logging] backend = 'tensorboard' needs tensorboard: "
                                  "pip install 'sv-soar[tracking]'") from None
            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        else:
            raise ValueError(f"unknown tracking backend {backend!r}: wandb or tensorboard")

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.backend == "wandb":
            self._run.log({**metrics, "outer_step": step})
        else:
            for key, value in metrics.items():
                self._writer.add_scalar(key, value, global_step=step)
            self._writer.flush()

    def close(self) -> None:
        if self.backend == "wandb":
            self._run.finish()
        else:
            self._writer.close()


def open_tracker(section, run_dir: Path, config: dict[str, Any]) -> Tracker | None:
    """The tracker a config's [logging] section asks for, or None (backend "none")."""
    if section.backend == "none":
        return None
    run_dir = Path(run_dir)
    return Tracker(section.backend, run_dir, project=section.project, name=section.name or run_dir.resolve().name,
                   wandb_mode=section.wandb_mode, config=config)


class TrackedScorer:
    """A scorer (local, Ray or remote) that keeps the student metrics of its last `score` call for the tracker."""

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer
        self.last_student_metrics: dict[str, float] = {}

    def score(self, *args: Any, **kwargs: Any):
        scores = self._scorer.score(*args, **kwargs)
        self.last_student_metrics = student_metrics(scores)
        return scores

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)
