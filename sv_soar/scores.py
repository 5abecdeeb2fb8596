"""R_kj and R_k as data, and what computes them: one student run's result, one dataset's score (what a
`Scorer` returns, the reward cache stores and the remote student service sends), and the `Scorer` protocol
that the outer step (sv_soar.soar_step) calls. It imports no ML library: the rules of the algorithm read
these types without torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from sv_soar.baseline import Baseline
    from sv_soar.tasks.task import Row


@dataclass
class StudentResult:
    """One student run j on X_k: its Acc on Q_R and R_{k,j}, or why it was left out."""

    seed: int
    accuracy: float | None  # Acc(student_{k,j}, Q_R); None when the run failed
    reward: float | None  # R_{k,j} = accuracy − Acc(baseline, Q_R)
    failure: str | None  # "<ExceptionType>: <message>" when the run was left out of R_k
    seconds_train: float
    log: list[dict]  # the trainer's per-step log (up to the failing step)
    adapter_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # only with keep_adapters
    attempts: int = 1  # tries it took: more than 1 after an out-of-memory retry

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "adapter_state"}


@dataclass
class DatasetScore:
    """R_k of one teacher dataset, with the students behind it."""

    reward: float | None  # R_k: mean R_{k,j} over the students that finished; None when all failed
    baseline_accuracy: float  # Acc(baseline, Q_R)
    students: list[StudentResult]
    error: str | None  # set when every student failed, with the causes
    cached: bool
    key: str  # the reward-cache key
    seconds: dict[str, float]  # train / evaluate / baseline_evaluate / total (shares of a call's shared phases)

    @property
    def student_rewards(self) -> list[float | None]:
        return [s.reward for s in self.students]

    @property
    def student_accuracies(self) -> list[float | None]:
        return [s.accuracy for s in self.students]

    @property
    def n_failed(self) -> int:
        return sum(s.failure is not None for s in self.students)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "baseline_accuracy": self.baseline_accuracy,
            "students": [s.to_dict() for s in self.students],
            "error": self.error,
            "cached": self.cached,
            "key": self.key,
            "seconds": dict(self.seconds),
            "n_failed": self.n_failed,
        }

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> "DatasetScore":
        """Read a `to_dict` entry back (a reward-cache file); ValueError/TypeError/KeyError when it is not one,
        so that a damaged entry is recomputed instead of feeding a string or NaN reward to the outer loop."""
        students = []
        for s in entry["students"]:
            student = StudentResult(seed=_integer(s["seed"], "seed"), accuracy=_finite(s["accuracy"], "accuracy"),
                                    reward=_finite(s["reward"], "reward"), failure=_text(s["failure"], "failure"),
                                    seconds_train=float(s["seconds_train"]), log=list(s["log"]),
                                    attempts=_integer(s.get("attempts", 1), "attempts"))
            if (student.failure is None) != (student.reward is not None and student.accuracy is not None):
                raise ValueError("a student must have either a failure or an accuracy and a reward")
            students.append(student)
        return cls(reward=_finite(entry["reward"], "reward"),
                   baseline_accuracy=_finite(entry["baseline_accuracy"], "baseline_accuracy", optional=False),
                   students=students, error=_text(entry["error"], "error"), cached=bool(entry.get("cached", False)),
                   key=str(entry["key"]), seconds={k: float(v) for k, v in entry["seconds"].items()})



@runtime_checkable
class Scorer(Protocol):
    """What scores an outer step's teacher datasets: R_k of each X_k, r students each trained from `baseline` and
    measured on Q_R (sv_soar.grounded.GroundedScorer in this process, the Ray and remote backends of
    sv_soar.backends.make_scorer elsewhere). `promoted`: students train StudentTrainConfig.steps_for(promoted)
    steps; `keep_adapters`: keep each finished student's weights (the promotion rule takes one)."""

    def score(self, datasets: Sequence[Sequence[Row]], q_r: Sequence[Row], baseline: Baseline, *, seed: int,
              promoted: bool = False, keep_adapters: bool = False) -> list[DatasetScore]: ...

def _finite(value: Any, name: str, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} is {value!r}, not a finite number")
    return float(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} is {value!r}, not an integer")
    return value


def _text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} is {value!r}, not a string")
    return value
