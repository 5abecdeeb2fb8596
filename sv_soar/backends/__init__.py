"""Where SOAR's student runs happen: in this process, on Ray actors, or on a remote student service.

    scorer = make_scorer(model, task, config, backend="ray", ray_address="auto", students=4)
    scorer.score(datasets, q_r, baseline, seed=step)        # the same call, whichever backend

- "local": `sv_soar.grounded.GroundedScorer`, one model in this process (the default);
- "ray": `sv_soar.backends.ray_backend.RayGroundedScorer`, student runs spread over Ray actors;
- `students_url`: `sv_soar.backends.remote.RemoteScorer`, datasets sent to `sv-soar
  serve-students` on another machine (docs/design.md §5: an environment server with no GPU).
"""

from __future__ import annotations

from typing import Any, Literal

from sv_soar.backends.remote import RemoteScorer
from sv_soar.scores import Scorer

BACKENDS = ("local", "ray")
Backend = Literal["local", "ray"]


def scorer_for(config: Any, task: Any, **kwargs: Any) -> Scorer:
    """The scorer a run config (sv_soar.config.RunConfig) describes: [student] model and training, [soar] r,
    grounding, time limit and retries, [compute] where students train; kwargs as make_scorer's (cache_dir,
    progress, ...). `sv-soar train` and `sv-soar score` build theirs here."""
    soar, compute = config.soar, config.compute
    return make_scorer(config.student.model, task, config.student_train_config(), backend=compute.backend,
                       ray_address=compute.ray_address, ray_actors=compute.ray_actors,
                       students_url=compute.students_url,
                       students=soar.students, grounding=soar.grounding, time_limit_s=soar.time_limit_s,
                       retries=soar.retries, retry_backoff_s=soar.retry_backoff_s, eval_batch_size=soar.eval_batch_size,
                       q_r_samples=soar.q_r_samples, q_r_temperature=soar.q_r_temperature, **kwargs)


def make_scorer(model: Any, task: Any, config: Any, *, backend: Backend = "local", ray_address: str | None = None,
                ray_actors: int | None = None, students_url: str | None = None, students_token: str | None = None,
                **kwargs: Any) -> Scorer:
    """A scorer with GroundedScorer's `score` for the chosen backend; kwargs go to the scorer (students,
    grounding, time_limit_s, cache_dir, eval_batch_size, progress)."""
    if students_url:
        if kwargs.get("q_r_temperature", 0.0) > 0:
            raise ValueError(f"a sampled Acc on Q_R (q_r_temperature {kwargs['q_r_temperature']}) is scored locally "
                             f"or on Ray: the student service at {students_url} scores greedily")
        return RemoteScorer(students_url, task, config, token=students_token, model=model,
                            students=kwargs.get("students", 4), grounding=kwargs.get("grounding", "correctness"))
    if backend == "local":
        from sv_soar.grounded import GroundedScorer  # delayed: sv_soar.grounded imports torch

        return GroundedScorer(model, task, config, **kwargs)
    if backend == "ray":
        from sv_soar.backends.ray_backend import (  # delayed: sv_soar.backends.ray_backend imports torch and ray
            RayGroundedScorer)

        return RayGroundedScorer(model, task, config, address=ray_address, actors=ray_actors, **kwargs)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
