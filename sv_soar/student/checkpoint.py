"""A long student run's checkpoint: its weights, optimizer state and log every few minutes, so that a run stopped
partway (a session's hard end, a crash) comes back to the step it had reached instead of to step 1.

The final evaluation's students are the long ones: a compute-matched Hard-only student trains for thousands of
steps, hours on a CPU (experiments/mechanism/run-comparison.sh). What a resumed run needs to take the same steps
as one never stopped is small: the trained weights, the optimizer's moments, the step it reached and its log. The
rest is a function of the step: the batches come from `random.Random(seed)` (replayed), the rollouts from seeded
row streams (`seed * 100_003 + step`), the learning rate from the schedule. So a resumed run's weights equal an
unstopped run's exactly (tests/test_student_checkpoint.py).

A checkpoint names the run it belongs to by a fingerprint of what decides its steps (seed, steps, the student
config, the rows, the starting weights): a file left by another run is set aside with a warning, never resumed.
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


def run_fingerprint(*, seed: int, steps: int, config: Any, rows: Sequence[Any], init_state: Any) -> str:
    """What decides a student run's steps, hashed: two runs with one fingerprint take the same steps."""
    described = json.dumps({"seed": seed, "steps": steps, "config": config.model_dump(mode="json"), "rows": rows,
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

    def load(self, fingerprint: str) -> dict[str, Any] | None:
        """The saved state of the run named `fingerprint`, or None: no file, or one of another run or layout (set
        aside as `<path>.stale`, with a warning), or one that does not load (the same)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise ValueError(f"not a format-{FORMAT} student checkpoint")
            if state.get("fingerprint") != fingerprint:
                raise ValueError(f"its run {state.get('fingerprint')!r} is not this one ({fingerprint!r}: another "
                                 "seed, step count, config, problem set or starting point)")
            for key, kind in (("step", int), ("params", list), ("optimizer", dict), ("log", list), ("seconds", float)):
                if not isinstance(state.get(key), kind):
                    raise ValueError(f"its {key!r} is missing or not a {kind.__name__}")
        except Exception as exc:  # noqa: BLE001 - any unreadable file: start over, keep it for a look
            stale = self.path.with_name(self.path.name + ".stale")
            self.path.replace(stale)
            log.warning("student checkpoint %s not resumed (%s: %s); moved to %s, training from step 1",
                        self.path, type(exc).__name__, exc, stale.name)
            return None
        return state

    def due(self) -> bool:
        """Whether `every_s` seconds have passed since the last save (or since the run started)."""
        return time.perf_counter() - self._saved_at >= self.every_s

    def start_clock(self) -> None:
        self._saved_at = time.perf_counter()

    def save(self, fingerprint: str, *, step: int, params: Sequence[torch.Tensor], optimizer: Any,
             history: list[dict[str, float]], seconds: float) -> None:
        """Write the run's state after `step` steps (atomically: a stop while writing leaves the previous file)."""
        state = {"format": FORMAT, "fingerprint": fingerprint, "step": step, "seconds": float(seconds),
                 "params": [p.detach().to("cpu").clone() for p in params], "optimizer": optimizer.state_dict(),
                 "log": history}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self._saved_at = time.perf_counter()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
