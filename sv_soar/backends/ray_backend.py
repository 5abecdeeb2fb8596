"""Ray fan-out of SOAR's student runs: the g·r student runs of an outer step spread over Ray actors.

A paper-scale outer step trains g·r = 16 students (docs/design.md §4). `RayGroundedScorer` is a
`GroundedScorer` whose two model-bound phases run in Ray actors, one per GPU (or CPU slot), each
holding the base model once as its own local GroundedScorer:

    driver (RayGroundedScorer)                   actors (StudentWorker, one model each)
    cache lookup, de-duplication                 -
    Acc(baseline, Q_R), memoised       ------->  actor 0: GroundedScorer._evaluate_baseline
    runs (key, X_k, seed_j) cut in A parts ---->  actor a: GroundedScorer._run_students(part)
    R_{k,j} = Acc − Acc(baseline), R_k, cache <--  StudentResult (accuracy, adapter_state)

Everything else (cache keys, R_k, failure accounting, the reward cache) is GroundedScorer's own code,
so the two backends give the same R_k: a student's run depends only on (dataset, seed_j, baseline), and
a greedy evaluation row does not depend on which rows share its batch (tests/test_engine.py).

An actor whose process dies (a native abort, the OOM killer, a lost node) is restarted and its part of
the runs is run once more; if it dies again, those students fail with "ActorDied: ..." (no reward, like
any failed student), so the other datasets of the call are still scored.

Ray keeps its own footprint small: no dashboard, no usage stats, worker logs not streamed to the driver,
and a local cluster gets only the CPUs its actors ask for (its workers are not niced: they do the work).

    scorer = RayGroundedScorer("smollm2-135m-instruct", "e1", StudentTrainConfig(), students=4,
                               actors=4, address="auto")          # an existing cluster; None: start one
    scores = scorer.score([x_1, x_2, x_3, x_4], q_r, Baseline("base"), seed=step)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from sv_soar.baseline import Baseline
from sv_soar.grounded import GroundedScorer
from sv_soar.scores import StudentResult
from sv_soar.soar_step import partition
from sv_soar.student.config import refuse_full_finetune
from sv_soar.tasks import Row, Task

log = logging.getLogger(__name__)

RAY_INSTALL = "pip install 'sv-soar[ray]'  (or: pip install 'ray>=2.30')"
LOCAL_OBJECT_STORE_BYTES = 256 << 20  # a local test cluster: adapters and Q_R are megabytes, not gigabytes


def require_ray():
    """The `ray` module, or an ImportError that says how to install it."""
    try:
        import ray  # heavy: ray, an optional extra
    except ImportError as exc:
        raise ImportError(f"backend = \"ray\" needs Ray, which is not installed: {RAY_INSTALL}") from exc
    return ray


def init_ray(address: str | None, num_cpus: float | None = None) -> bool:
    """Connect to the cluster at `address` ("auto", "ray://host:10001"), or start a small local one when
    None; returns whether this call started Ray (so `close` knows whether to shut it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from an experiment
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        # Ray nices its workers to 15 by default; here the actors ARE the work (student runs), and on a shared
        # machine a niced actor starves behind everyone else's processes
        os.environ.setdefault("RAY_worker_niceness", "0")
        options.update(num_cpus=num_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        # the driver's import path, so actors can unpickle tasks defined outside installed packages
        path = os.pathsep.join(p for p in __import__("sys").path if p and os.path.isdir(p))
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
    ray.init(address=address, **options)
    return True


class StudentWorker:
    """A Ray actor's body: one base model, as a local GroundedScorer, that trains and measures students."""

    def __init__(self, model: str, task: str | Task, config: Any, *, threads: int | None, **options: Any) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = options.get("device", "cpu")
        self.scorer = GroundedScorer(model, task, config, students=1, progress=False, **options)

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "device": self.device, "seconds_load": self.scorer.seconds_load}

    def baseline_accuracy(self, baseline: Baseline, q_r: Sequence[Row]) -> float:
        return self.scorer._evaluate_baseline(baseline, q_r)

    def run_students(self, runs: list[tuple[str, list[Row], int]], q_r: Sequence[Row], baseline: Baseline,
                     steps: int, keep_adapters: bool) -> tuple[list[StudentResult], float]:
        return self.scorer._run_students(runs, q_r, baseline, steps=steps, keep_adapters=keep_adapters)


class RayGroundedScorer(GroundedScorer):
    """GroundedScorer whose student runs and evaluations run on `actors` Ray actors (module docstring).

    `model` must be a name or folder every actor can load (`sv_soar.models.load_model`).
    `actors`: default one per GPU of the cluster, else 1. `num_gpus_per_actor`: default 1 when the
    cluster has GPUs, else 0 (CPU actors). `num_cpus_per_actor` also sets each CPU actor's torch threads.
    """

    def __init__(self, model: str, task: str | Task, config: Any, *, actors: int | None = None,
                 address: str | None = None, num_cpus_per_actor: float = 1, num_gpus_per_actor: float | None = None,
                 **kwargs: Any) -> None:
        refuse_full_finetune(config, 'compute.backend = "ray"')
        if actors is not None and actors < 1:
            raise ValueError(f"ray actors must be at least 1, got {actors}")
        if num_cpus_per_actor <= 0:
            raise ValueError(f"num_cpus_per_actor must be > 0, got {num_cpus_per_actor}")
        self._ray_settings = (actors, address, num_cpus_per_actor, num_gpus_per_actor)
        self.actors: list[Any] = []
        self._started_ray = False
        super().__init__(model, task, config, **kwargs)

    def _load(self, model: str | tuple[Any, Any]) -> None:
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError("the Ray backend loads the model in its actors: pass a model name or folder, "
                            "not a model object")
        ray = require_ray()
        actors, address, cpus, gpus = self._ray_settings
        self.model_name = str(model)
        count = actors or 1
        # a local cluster gets the CPUs its actors ask for; with no actor count (one a GPU), all of them
        self._started_ray = init_ray(address, num_cpus=count * cpus if address is None and actors else None)
        if gpus is None:
            cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
            gpus = 1 if cluster_gpus else 0
            count = actors or max(1, cluster_gpus)
        worker = ray.remote(StudentWorker).options(num_cpus=cpus, num_gpus=gpus)
        options = dict(grounding=self.grounding, time_limit_s=self.time_limit_s, eval_batch_size=self.eval_batch_size,
                       q_r_samples=self.eval_params.n, q_r_temperature=self.eval_params.temperature,
                       device="cuda" if gpus else "cpu", engine=self.engine_kind, engine_options=self.engine_options,
                       threads=None if gpus else max(1, int(cpus)))
        self._new_actor = lambda: worker.remote(self.model_name, self.task, self.config, **options)
        self.actors = [self._new_actor() for _ in range(count)]
        self.workers = ray.get([actor.ready.remote() for actor in self.actors])  # a load error surfaces here
        log.info("ray backend: %d actor(s) ready: %s", len(self.actors), self.workers)

    def _restart(self, dead: Sequence[int]) -> None:
        """Replace the actors at these indices with fresh ones (each loads the model) and wait until they are ready."""
        ray = require_ray()
        for a in dead:
            ray.kill(self.actors[a])  # already gone, or hung: either way no longer ours
            self.actors[a] = self._new_actor()
        for a, ready in zip(dead, ray.get([self.actors[a].ready.remote() for a in dead])):
            self.workers[a] = ready

    def _evaluate_baseline(self, baseline: Baseline, q_r: Sequence[Row]) -> float:
        if not q_r:
            raise ValueError("Q_R is empty: nothing to measure accuracy on")
        ray = require_ray()
        try:
            return ray.get(self.actors[0].baseline_accuracy.remote(baseline, list(q_r)))
        except ray.exceptions.RayActorError as exc:
            log.warning("ray backend: actor 0 died (%s); restarted, measuring the baseline once more", _why(exc))
            self._restart([0])
            return ray.get(self.actors[0].baseline_accuracy.remote(baseline, list(q_r)))

    def _run_students(self, runs: Sequence[tuple[str, Sequence[Row], int]], q_r: Sequence[Row], baseline: Baseline,
                      *, steps: int, keep_adapters: bool) -> tuple[list[StudentResult], float]:
        """Cut the runs into one contiguous part per actor, run the parts concurrently, and put the results
        back in run order. A part whose actor died is run once more on a restarted actor (its students count
        two attempts); if that one dies too, its students fail with "ActorDied". Seconds of evaluation: summed
        over actors."""
        ray = require_ray()
        baseline_ref, q_r_ref = ray.put(baseline), ray.put(list(q_r))  # sent once, read by every actor
        # the teacher rubric's partition rule: contiguous parts whose sizes differ by at most one
        parts = dict(enumerate(partition(range(len(runs)), len(self.actors), len(runs))))
        results: list[StudentResult | None] = [None] * len(runs)
        seconds_eval = 0.0
        for attempt in (1, 2):
            refs = {a: self.actors[a].run_students.remote([(runs[i][0], list(runs[i][1]), runs[i][2]) for i in part],
                                                          q_r_ref, baseline_ref, steps, keep_adapters)
                    for a, part in parts.items()}
            died = {}
            for a, ref in refs.items():
                try:
                    part_results, part_seconds = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the actor's process is gone; a Python error is not this
                    died[a] = _why(exc)
                    continue
                for i, result in zip(parts[a], part_results):
                    result.attempts += attempt - 1
                    results[i] = result
                seconds_eval += part_seconds
            for a, why in died.items():
                log.warning("ray backend: actor %d (pid %s) died running %d student run(s) (%s); restarting it%s", a,
                            self.workers[a]["pid"], len(parts[a]), why, ", running them once more" if attempt == 1 else "")
            if not died:
                break
            self._restart(list(died))  # the next call finds live actors as well
            parts = {a: parts[a] for a in died}
        for a, why in died.items():  # died on both attempts: those students failed, the others stand
            for i in parts[a]:
                results[i] = StudentResult(seed=runs[i][2], accuracy=None, reward=None, seconds_train=0.0, log=[],
                                           failure=f"ActorDied: actor {a} died twice running it: {why}", attempts=2)
        return results, seconds_eval

    def close(self) -> None:
        """Stop the actors (and Ray itself when this scorer started it)."""
        if not self.actors:
            return
        ray = require_ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> "RayGroundedScorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _why(exc: Exception) -> str:
    """The first line of Ray's (many-line) actor-death message."""
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
