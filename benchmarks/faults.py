"""Inject every fault many times into student runs and the remote student service; write
benchmarks/results/faults.json.

    python benchmarks/faults.py --trials 10          # then: python scripts/reliability.py
    python benchmarks/faults.py --trials 1 --only service --out /tmp/faults.json

Three groups of faults; each trial scores one dataset a fault (students=2 each) on the tiny real model:

- student: the verifier the real trainer calls runs out of memory once, every time, hangs, is slow (past the
  time limit), raises, or returns NaN (tests/injected_faults.py's Faults); hang and slow run in a second scorer
  with a 1 s time limit and a 6 s hang grace.
- service: `sv-soar serve-students` through its client (RemoteScorer): nothing listening; its HTTP front
  down for 0.5 s while the job runs (ServiceWithOutage); a server answering each kind of garbage in
  tests/injected_faults.py's GARBAGE.
- ray: a student run that ends its Ray actor's process (os._exit), once or every time (2 actors).

Every student run is classified: a faulted student must end retried-and-passed (the one-off OOM, the
outage, the actor that died once) or as an explicit failure with its cause and no reward, never as a
number standing in for a failed run. A scoring call that raised counts each student it asked for under
the exception it ended in, which must be a StudentServiceError that names the service's URL.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "faults.json"
# group -> fault -> what each of its student runs must end in
SCENARIOS = {
    "student": {"healthy": "passed", "oom-once": "retried_then_passed", "oom": "failed:MemoryError",
                "hang": "failed:StudentTimeout (hung, interrupted)", "slow": "failed:StudentTimeout",
                "boom": "failed:KeyError", "nan": "failed:StudentTrainingError"},
    "service": {"service-down": "failed:StudentServiceError", "service-outage": "passed (client retried)",
                "service-garbage": "failed:StudentServiceError"},
    "ray": {"actor-dies-once": "retried_then_passed", "actor-dies": "failed:ActorDied"},
}
STUDENTS = 2


def classify(student) -> str:
    if student.failure is None:
        assert student.reward is not None and student.accuracy is not None
        return "retried_then_passed" if student.attempts > 1 else "passed"
    assert student.reward is None and student.accuracy is None, "a failed student with a number"
    kind = student.failure.split(":")[0]
    return f"failed:{kind} (hung, interrupted)" if "hung in step" in student.failure else f"failed:{kind}"


@dataclass
class Dataset:
    """One scored dataset as the caller sees it: each student run's outcome, and whether it got an R_k."""

    outcomes: list[str]
    causes: list[str | None]
    r_k: bool


def scored(score, suffix: str = "") -> Dataset:
    assert score.reward is not None or score.error, "a dataset without R_k and without an error"
    return Dataset([classify(s) + suffix for s in score.students], [s.failure for s in score.students],
                   score.reward is not None)


def raised(exc: Exception, url: str) -> Dataset:
    """A scoring call that raised: each student it asked for ends in the exception, which must name the URL."""
    from sv_soar.backends.remote import StudentServiceError

    named = isinstance(exc, StudentServiceError) and str(exc).startswith(url)
    outcome = f"failed:{type(exc).__name__}" if named else f"crashed:{type(exc).__name__}"
    return Dataset([outcome] * STUDENTS, [str(exc)[:300]] * STUDENTS, r_k=False)


@dataclass(eq=False)  # compared and hashed by identity: `undisturbed` is memoised per instance
class Setup:
    """What every group shares: the tiny model, the fault verifier, the student config, Q_R, an in-process scorer."""

    model: Path
    folder: Path
    faults: Any
    config: Any
    local: Any  # GroundedScorer, students=2, one OOM retry
    q_r: list[dict]

    def rows(self, fault: str) -> list[dict]:
        return [{**row, "answer": "digits" if fault == "healthy" else fault} for row in self.q_r[:2]]

    @functools.cache
    def undisturbed(self, seed: int):
        """The healthy dataset scored in-process: what a retried run must equal."""
        from sv_soar.baseline import Baseline

        return self.local.score([self.rows("healthy")], self.q_r, Baseline("base"), seed=seed)[0]


class StudentFaults:
    """Faults in the verifier the trainer calls (tests/injected_faults.py's Faults), in-process."""

    def __init__(self, setup: Setup) -> None:
        from sv_soar.grounded import GroundedScorer
        from sv_soar.models import load_model

        self.setup, self.retried_equal, self.notes = setup, 0, []
        # the time-limited faults get their own scorer, so that a loaded machine never times out the others;
        # the slow verifier (16 calls a step x 0.1 s) passes the 1 s limit in step 1 and returns long before
        # the hard deadline (limit + 6 s); the hung one never returns
        self.timed = GroundedScorer(load_model(str(setup.model)), setup.faults.task(), setup.config, students=STUDENTS,
                                    time_limit_s=1.0, hang_grace_s=6.0, progress=False)
        setup.faults.slow_s = 0.1

    def trial(self, trial: int) -> dict[str, list[Dataset]]:
        from sv_soar.baseline import Baseline

        setup, names, timed = self.setup, list(SCENARIOS["student"]), ("hang", "slow")
        setup.faults.calls["oom-once"] = 0  # one out-of-memory a trial: student 0 of the oom-once dataset
        untimed = [n for n in names if n not in timed]
        scores = setup.local.score([setup.rows(n) for n in untimed], setup.q_r, Baseline("base"), seed=trial)
        scores += self.timed.score([setup.rows(n) for n in timed], setup.q_r, Baseline("base"), seed=trial)
        by_name = dict(zip(untimed + list(timed), scores))
        # the retried student is the one an undisturbed run trains: the same losses as the healthy dataset's
        healthy, once = by_name["healthy"].students[0], by_name["oom-once"].students[0]
        self.retried_equal += [e["loss"] for e in once.log] == [e["loss"] for e in healthy.log] and \
            once.reward == healthy.reward
        return {name: [scored(by_name[name])] for name in names}

    def close(self) -> None:
        assert self.setup.local.engine.loaded_adapters() == self.timed.engine.loaded_adapters() == ["sv-soar-base"]


class ServiceFaults:
    """`sv-soar serve-students` through RemoteScorer: down, down for a while mid-job, answering garbage."""

    def __init__(self, setup: Setup) -> None:
        from sv_soar.grounded import GroundedScorer
        from sv_soar.models import load_model
        from tests.injected_faults import ServiceWithOutage

        self.setup, self.notes = setup, []
        scorer = GroundedScorer(load_model(str(setup.model)), setup.faults.task(), setup.config, students=STUDENTS,
                                progress=False)
        self.flaky = ServiceWithOutage(scorer, setup.folder / "store", down_s=0.5)

    def call(self, url: str, seed: int, **options: Any) -> tuple[Dataset, Any]:
        from sv_soar.baseline import Baseline
        from sv_soar.backends.remote import RemoteScorer
        from tests.injected_faults import TOKEN

        setup = self.setup
        client = RemoteScorer(url, setup.faults.task(), setup.config, token=TOKEN, students=STUDENTS, poll_s=0.02,
                              timeout_s=120, **options)
        try:
            [score] = client.score([setup.rows("healthy")], setup.q_r, Baseline("base"), seed=seed)
        except Exception as exc:  # noqa: BLE001 - classified: any other kind than StudentServiceError is a finding
            return raised(exc, url), client
        return scored(score, " (client retried)" if client.retried else ""), client

    def trial(self, trial: int) -> dict[str, list[Dataset]]:
        from tests.injected_faults import GARBAGE, garbage_service, nothing_listening, service_info

        setup = self.setup
        down, _ = self.call(nothing_listening(), trial, retries=2, retry_backoff_s=0.05)
        # 0.5 s down: the client's backoff (0.05 s, doubling) reaches past it within 8 retries
        outage, _ = self.call(self.flaky.url, trial, retries=8, retry_backoff_s=0.05)
        if self.flaky.service.trained_jobs != trial + 1:
            self.notes.append(f"trial {trial}: the service has trained {self.flaky.service.trained_jobs} jobs")
        garbage = []
        for kind in sorted(GARBAGE):
            with garbage_service(kind, service_info(setup.faults.task(), setup.config, STUDENTS)) as url:
                garbage.append(self.call(url, trial, retries=1, retry_backoff_s=0.01)[0])
        return {"service-down": [down], "service-outage": [outage], "service-garbage": garbage}

    def close(self) -> None:
        self.flaky.close()


class RayFaults:
    """A student run that ends its Ray actor's process, on 2 CPU actors: part 0 dies once, part 1 every time."""

    def __init__(self, setup: Setup) -> None:
        from sv_soar.backends.ray_backend import RayGroundedScorer

        self.setup, self.retried_equal, self.notes = setup, 0, []
        self.marks = setup.faults.exit_marks = setup.folder / "exits"  # set before the actors get the task
        self.marks.mkdir()
        self.scorer = RayGroundedScorer(str(setup.model), setup.faults.task(), setup.config, actors=2,
                                        students=STUDENTS, progress=False)

    def trial(self, trial: int) -> dict[str, list[Dataset]]:
        from sv_soar.baseline import Baseline

        setup = self.setup
        (self.marks / "exited-once").unlink(missing_ok=True)
        once, always = self.scorer.score([setup.rows("exit-once"), setup.rows("exit")], setup.q_r, Baseline("base"),
                                         seed=trial)
        reference = setup.undisturbed(trial)
        self.retried_equal += [[e["loss"] for e in s.log] for s in once.students] == \
            [[e["loss"] for e in s.log] for s in reference.students] and once.reward == reference.reward
        return {"actor-dies-once": [scored(once)], "actor-dies": [scored(always)]}

    def close(self) -> None:
        self.scorer.close()


GROUPS = {"student": StudentFaults, "service": ServiceFaults, "ray": RayFaults}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--only", choices=GROUPS, action="append",
                        help="run only this group of faults (repeatable; default: all three)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.disable(logging.ERROR)

    import torch

    from sv_soar.grounded import GroundedScorer
    from sv_soar.models import load_model
    from tests.injected_faults import GARBAGE, Faults
    from tests.kind_task import hard_items, kind_config
    from tests.tiny_llama import build_tiny_llama

    torch.set_num_threads(1)
    groups = [g for g in GROUPS if g in (args.only or GROUPS)]
    expected = {name: outcome for g in groups for name, outcome in SCENARIOS[g].items()}
    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_llama(Path(folder) / "model")
        faults, config = Faults(), kind_config(steps=2, batch_prompts=2)
        local = GroundedScorer(load_model(str(model)), faults.task(), config, students=STUDENTS, retries=1,
                               retry_backoff_s=0.05, progress=False)
        setup = Setup(model, Path(folder), faults, config, local, hard_items(local, n=4))
        runners = {g: GROUPS[g](setup) for g in groups}
        outcomes = {name: Counter() for name in expected}
        unexpected, datasets_without_r_k = [], Counter()
        started = time.perf_counter()
        try:
            for trial in range(args.trials):
                for runner in runners.values():
                    for name, datasets in runner.trial(trial).items():
                        for dataset in datasets:
                            for j, (outcome, cause) in enumerate(zip(dataset.outcomes, dataset.causes)):
                                outcomes[name][outcome] += 1
                                if outcome != expected[name] and not (name == "oom-once" and j > 0 and outcome == "passed"):
                                    unexpected.append(f"trial {trial} {name} student {j}: {outcome} ({cause})")
                            datasets_without_r_k[name] += not dataset.r_k
                print(f"trial {trial}: {sum(sum(c.values()) for c in outcomes.values())} student runs, "
                      f"{len(unexpected)} unexpected", flush=True)
        finally:
            for runner in runners.values():
                runner.close()
        seconds = round(time.perf_counter() - started, 1)
    unexpected += [note for runner in runners.values() for note in runner.notes]
    retried_equal = {g: runners[g].retried_equal if g in runners else None for g in ("student", "ray")}
    result = {"command": "python " + " ".join(sys.argv), "trials": args.trials, "students_per_dataset": STUDENTS,
              "groups": groups, "garbage_kinds": sorted(GARBAGE),
              "outcomes": {name: dict(counter) for name, counter in outcomes.items()}, "expected": expected,
              "datasets_without_r_k": dict(datasets_without_r_k),
              "retried_equal_to_undisturbed": retried_equal["student"],
              "actor_retried_equal_to_undisturbed": retried_equal["ray"],
              "unexpected": unexpected, "seconds": seconds,
              "passed": not unexpected and all(n in (None, args.trials) for n in retried_equal.values())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
