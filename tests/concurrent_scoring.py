"""Many teacher groups scored at once through the teacher environment's rubric, with bounded concurrency.

Shared by tests/test_load.py (a few groups) and benchmarks/load.py (32). Each group is one outer step
(docs/design.md §5): its g·n teacher completions are validated, split into g datasets and scored by r students
each, in-process through `GroundedTeacherRubric.grounded_reward` on the tiny real model, with a pool of
`max_concurrent_scorings` scorers. Measured: every group completes with one reward per rollout, each
group gets its own step, no (dataset, student) is trained twice, at most pool-size scorings run at
once, and resident memory after the warm-up stays flat.

With `remote=True` the students train on one student service instead (`sv-soar serve-students`: its real
HTTP server on loopback with a token, in this process so its trainings are counted the same way), and the
rubric's pool holds RemoteScorers (`build_rubric(..., remote=URL)`). The same checks apply; the service
runs one job at a time, and the pool bounds the requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


def teacher_completion(group: int, i: int) -> list[dict]:
    """A valid E1 teacher problem, different for every (group, i), as a chat completion."""
    question = (f"Device unknown-device observed tcp {1024 + 97 * group + i}→{[23, 80, 443, 2323][i % 4]}, "
                f"duration {0.5 + group + i / 10}, bytes {100 + 7 * i}, flags [S]. "
                "Decide: Malicious or Benign (you may Abstain if unsure).")
    problem = {"question": question, "answer": "Malicious" if i % 2 else "Benign"}
    return [{"role": "assistant", "content": json.dumps(problem)}]


@dataclass
class LoadResult:
    groups: int
    pool: int
    seconds: float
    completed: int
    rewards_per_group: list[int]
    steps: list[int]
    trainings: int
    trained_twice: int
    max_concurrent_scorings: int  # scorings training students at once (on the service, when remote)
    scoring_errors: list[str]
    rss_mb: list[float] = field(default_factory=list)  # sampled every 0.2 s
    remote: bool = False
    max_requests_in_flight: int | None = None  # remote: RemoteScorer.score calls at once (the rubric's pool)
    service_jobs: int | None = None  # remote: jobs that reached the service's scorer

    @property
    def rss_growth_after_warmup_mb(self) -> float:
        """Peak RSS in the second half of the run minus peak RSS in the first half."""
        half = len(self.rss_mb) // 2
        if half == 0:
            return 0.0
        return max(self.rss_mb[half:]) - max(self.rss_mb[:half])


TOKEN = "sv-soar-load-token"


STUDENT = dict(steps=1, steps_after_promotion=1, batch_prompts=2, group_size=2, max_new_tokens=8, lora_rank=2,
               lora_alpha=4, lora_target_modules=["q_proj"])


def student_config():
    from sv_soar.student.trainer import StudentTrainConfig

    return StudentTrainConfig(**STUDENT)


def build_rubric(folder: Path, model: Path, *, pool: int, g: int = 2, n: int = 2, students: int = 2,
                 remote: str | None = None):
    """The teacher rubric on the tiny model, its students trained in-process by a pool of GroundedScorers,
    or by the student service at `remote` (a URL) through a pool of RemoteScorers."""
    from sv_soar.grounded import GroundedScorer
    from sv_soar.models import load_model
    from sv_soar.promotion_run import PromotionRun
    from sv_soar.backends.remote import RemoteScorer
    from sv_soar.tasks import get_task
    from sv_soar.tasks.e1.flows import generate_e1_flows
    from sv_soar.teacher.contamination import HardSetIndex
    from sv_soar.backends.pool import ScorerPool
    from sv_soar.hard_set import HardSet
    from sv_soar.teacher_env_config import TeacherEnvConfig
    from sv_soar.teacher_step import TeacherStep
    from sv_soar_teacher.grounded_rubric import GroundedTeacherRubric

    rows = generate_e1_flows(8, seed=3)
    hard_set = HardSet(d_train=rows, index=HardSetIndex(rows), source=folder / "d_train.jsonl", guarded=len(rows))
    config = student_config()
    run = PromotionRun.open(folder / "run", task="e1", model=str(model))

    def build() -> GroundedScorer | RemoteScorer:
        if remote:
            return RemoteScorer(remote, "e1", config, token=TOKEN, model=str(model), students=students, poll_s=0.05)
        return GroundedScorer(load_model(str(model)), get_task("e1"), config, students=students,
                              cache_dir=folder / "run" / "reward_cache", progress=False)

    args = TeacherEnvConfig(svbench_task="e1", student=STUDENT, g=g, n=n, q_r=4, floor=-1.0, seed=0,
                            max_concurrent_scorings=pool)
    return GroundedTeacherRubric(TeacherStep(args, hard_set=hard_set, run=run, scorers=ScorerPool(build, size=pool)))


@contextlib.contextmanager
def student_service(folder: Path, model: Path, *, students: int = 2) -> Iterator[tuple[str, Any]]:
    """`sv-soar serve-students` in this process: its HTTP server on loopback with TOKEN, one GroundedScorer on
    the tiny model. Yields (URL, the StudentService)."""
    from sv_soar.grounded import GroundedScorer
    from tests.running_student_service import RunningStudentService

    scorer = GroundedScorer(str(model), "e1", student_config(), students=students,
                            cache_dir=folder / "service" / "reward_cache", progress=False)
    with RunningStudentService(scorer, folder / "service", token=TOKEN) as running:
        yield running.url, running.service


class Concurrency:
    """How many calls of the wrapped functions run at once, at most."""

    def __init__(self) -> None:
        self.active = self.peak = 0
        self._lock = threading.Lock()

    def counting(self, function: Callable) -> Callable:
        def counted(*args, **kwargs):
            with self._lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            try:
                return function(*args, **kwargs)
            finally:
                with self._lock:
                    self.active -= 1

        return counted


def score_concurrently(folder: Path, model: Path, *, groups: int, pool: int, g: int = 2, n: int = 2,
                       remote: bool = False) -> LoadResult:
    with contextlib.ExitStack() as stack:
        url, service = stack.enter_context(student_service(folder, model)) if remote else (None, None)
        rubric = build_rubric(folder, model, pool=pool, g=g, n=n, remote=url)
        result = _score_groups(rubric, groups=groups, pool=pool, g=g, n=n)
    if remote:
        result.remote, result.service_jobs = True, service.trained_jobs
    return result


def _score_groups(rubric, *, groups: int, pool: int, g: int, n: int) -> LoadResult:
    import sv_soar.student_runs as student_runs
    from sv_soar.backends.remote import RemoteScorer
    from sv_soar.grounded import GroundedScorer

    trained: Counter[tuple[int, int, str]] = Counter()
    lock = threading.Lock()
    scorings, requests = Concurrency(), Concurrency()
    real_train, real_score, real_request = student_runs.train_student, GroundedScorer.score, RemoteScorer.score

    def counting_train(policy, engine, task, rows, config, *, seed, **kwargs):
        key = json.dumps([row["question"] for row in rows])  # one (dataset, student seed) = one training
        with lock:
            trained[(hash(key), seed, kwargs.get("adapter_name", ""))] += 1
        return real_train(policy, engine, task, rows, config, seed=seed, **kwargs)

    process, rss, done = psutil.Process(), [], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            rss.append(process.memory_info().rss / 2**20)

    async def all_groups() -> list[list[float]]:
        calls = []
        for group in range(groups):
            completions = [teacher_completion(group, i) for i in range(g * n)]
            calls.append(rubric.grounded_reward(completions=completions, states=[{} for _ in completions]))
        return await asyncio.gather(*calls)

    student_runs.train_student, GroundedScorer.score = counting_train, scorings.counting(real_score)
    RemoteScorer.score = requests.counting(real_request)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        rewards = asyncio.run(all_groups())
    finally:
        student_runs.train_student, GroundedScorer.score, RemoteScorer.score = real_train, real_score, real_request
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    steps = [record.step for record in rubric.step.run.state.history]
    # the same (dataset, student seed) under two adapter names would also be a second training
    per_dataset = Counter((key, seed) for key, seed, _ in trained.elements())
    return LoadResult(groups=groups, pool=pool, seconds=round(seconds, 1), completed=len(rewards),
                      rewards_per_group=sorted({len(r) for r in rewards}), steps=sorted(steps),
                      trainings=sum(trained.values()), trained_twice=sum(c - 1 for c in per_dataset.values() if c > 1),
                      max_concurrent_scorings=scorings.peak,
                      scoring_errors=[r.error for r in rubric.step.run.state.history if r.error],
                      rss_mb=[round(x, 1) for x in rss], max_requests_in_flight=requests.peak or None)


def summary(result: LoadResult) -> dict[str, Any]:
    return {"remote": result.remote, "groups": result.groups, "pool": result.pool, "seconds": result.seconds,
            "completed": result.completed,
            "rewards_per_group": result.rewards_per_group, "distinct_steps": len(set(result.steps)),
            "trainings": result.trainings, "trained_twice": result.trained_twice,
            "max_concurrent_scorings": result.max_concurrent_scorings,
            "max_requests_in_flight": result.max_requests_in_flight, "service_jobs": result.service_jobs,
            "scoring_errors": len(result.scoring_errors), "first_scoring_error": (result.scoring_errors or [None])[0],
            "rss_mb_peak": max(result.rss_mb, default=0.0),
            "rss_growth_after_warmup_mb": round(result.rss_growth_after_warmup_mb, 1)}
