"""A long student run's checkpoint: its weights, optimizer state and log every few minutes, so that a run stopped
partway (a session's hard end, a crash) comes back to the step it had reached instead of to step 1.

The final evaluation's students are the long ones: a compute-matched Hard-only student trains for thousands of
steps, hours on a CPU (experiments/mechanism/run-comparison.sh). What a resumed run needs to take the same steps
as one never stopped is small: the trained weights, the optimizer's moments, the step it reached and its log. The
rest is a function of the step: the batches come from `random.Random(seed)` (replayed), the rollouts from seeded
row streams (`seed * 100_003 + step`), the learning rate from the schedule; torch's global generator (dropout) is
saved with the weights. So on one machine a resumed run's weights equal an unstopped run's exactly
(tests/test_student_checkpoint.py; a GPU's non-deterministic kernels aside).

A checkpoint names the run it belongs to by a fingerprint of what decides its steps (model, task, seed, steps, the
student config, the rows, the starting weights), and its weights by their parameter names: a file left by another
run, or one that does not fit this one, is set aside as `<path>.stale` with a warning, never resumed. The last
step's checkpoint leaves the optimizer out (a finished run takes no more steps): a fully fine-tuned student's AdamW
moments are twice its weights.
It is written atomically (a stop while writing leaves the previous one) and read with `torch.load(weights_only=True)`,
which builds tensors and plain values only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from sv_soar.baseline import Baseline
from sv_soar.jsonl import atomic_path

log = logging.getLogger("sv_soar.student")

FORMAT = 1  # the checkpoint's layout; a file of another layout is set aside, not read


def run_fingerprint(*, model: str, task: str, seed: int, steps: int, config: Any, rows: Sequence[Any],
                    init_state: Any) -> str:
    """What decides a student run's steps, hashed: two runs with one fingerprint take the same steps."""
    described = json.dumps({"model": model, "task": task, "seed": seed, "steps": steps,
                            "config": config.model_dump(mode="json"), "rows": rows,
                            "init": Baseline("init", init_state).id}, sort_keys=True, default=str)
    return hashlib.sha256(described.encode()).hexdigest()[:16]


@dataclass
class StudentCheckpoint:
    """Where a student run keeps its state (`path`, a torch file), written every `every_s` seconds of training and
    after its last step. `train_student(checkpoint=...)` resumes from it; the caller removes it (`remove`) once the
    run's result is kept elsewhere."""

    path: Path
    every_s: float = 300.0
    _saved_at: float = field(default=0.0, init=False, repr=False)

    def restore(self, fingerprint: str, params: Sequence[tuple[str, torch.Tensor]], optimizer: Any,
                steps: int) -> tuple[int, float, list[dict[str, float]]] | None:
        """Put the run's saved weights (into `params`, (name, parameter) pairs), optimizer state and torch's
        generator back, and return (steps taken, seconds spent, their log); None when there is nothing to resume: no
        file, or one of another run, layout or shape, or one that does not load (set aside as `<path>.stale`, with a
        warning). Nothing is changed unless everything fits."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise ValueError(f"not a format-{FORMAT} student checkpoint")
            if state.get("fingerprint") != fingerprint:
                raise ValueError(f"its run {state.get('fingerprint')!r} is not this one ({fingerprint!r}: another "
                                 "model, task, seed, step count, config, problem set or starting point)")
            step, saved, history = state.get("step"), state.get("params"), state.get("log")
            if not (isinstance(step, int) and 0 <= step <= steps and isinstance(history, list) and len(history) == step
                    and isinstance(state.get("seconds"), float) and isinstance(state.get("rng"), torch.Tensor)):
                raise ValueError(f"its step ({step!r} of {steps}), log, seconds or generator state do not fit")
            if state.get("names") != [name for name, _ in params] or not isinstance(saved, list) or any(
                    not isinstance(value, torch.Tensor) or value.shape != param.shape
                    for value, (_, param) in zip(saved, params, strict=True)):
                raise ValueError("its weights are not this student's parameters (names or shapes differ)")
            if step < steps:  # load_state_dict checks the groups before it changes anything
                optimizer.load_state_dict(state["optimizer"])
        except Exception as exc:  # noqa: BLE001 - any file that does not fit: start over, keep it for a look
            stale = self.path.with_name(self.path.name + ".stale")
            self.path.replace(stale)
            log.warning("student checkpoint %s not resumed (%s: %s); moved to %s, training from step 1",
                        self.path, type(exc).__name__, exc, stale.name)
            return None
        with torch.no_grad():
            for (_, param), value in zip(params, saved):
                param.copy_(value)
        torch.set_rng_state(state["rng"])
        return step, state["seconds"], history

    def due(self) -> bool:
        """Whether `every_s` seconds have passed since the last save (or since `start_clock`)."""
        return time.perf_counter() - self._saved_at >= self.every_s

    def start_clock(self) -> None:
        self._saved_at = time.perf_counter()

    def save(self, fingerprint: str, *, step: int, steps: int, params: Sequence[tuple[str, torch.Tensor]],
             optimizer: Any, history: list[dict[str, float]], seconds: float) -> None:
        """Write the run's state after `step` of `steps` steps (atomically: a stop while writing leaves the previous
        file); after the last step without the optimizer's state, which no step needs any more."""
        state = {"format": FORMAT, "fingerprint": fingerprint, "step": step, "seconds": float(seconds),
                 "names": [name for name, _ in params], "params": [param.detach().cpu() for _, param in params],
                 "optimizer": optimizer.state_dict() if step < steps else None, "rng": torch.get_rng_state(),
                 "log": history}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self._saved_at = time.perf_counter()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
