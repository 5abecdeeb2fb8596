"""Load: teacher groups scored concurrently through the teacher rubric with a bounded scorer pool, in-process
or through one student service (tests/concurrent_scoring.py). A few groups here; benchmarks/load.py runs 32
for RELIABILITY.md."""

from __future__ import annotations

import os

import pytest

from tests.concurrent_scoring import score_concurrently

GROUPS = int(os.environ.get("SV_SOAR_LOAD_GROUPS", "6"))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_concurrent_groups_all_complete_none_trained_twice_within_the_pool(tmp_path, tiny_model_dir):
    result = score_concurrently(tmp_path, tiny_model_dir, groups=GROUPS, pool=2)
    assert result.completed == GROUPS and result.rewards_per_group == [4]  # g·n = 4 rewards a group
    assert result.scoring_errors == []  # every group really scored (a failed one would get the floor)
    assert result.steps == list(range(GROUPS))  # each group its own outer step, none lost or repeated
    assert result.trainings == GROUPS * 2 * 2 and result.trained_twice == 0  # g datasets × r students each
    assert result.max_concurrent_scorings <= 2  # the pool bounds concurrency


def test_concurrent_groups_through_one_student_service(tmp_path, tiny_model_dir):
    result = score_concurrently(tmp_path, tiny_model_dir, groups=GROUPS, pool=2, remote=True)
    assert result.completed == GROUPS and result.rewards_per_group == [4] and result.scoring_errors == []
    assert result.steps == list(range(GROUPS))
    assert result.trainings == GROUPS * 2 * 2 and result.trained_twice == 0  # counted where the service trains
    assert result.service_jobs == GROUPS  # one job a group: no request was run twice
    assert result.max_concurrent_scorings == 1  # the service runs one job at a time
    assert 1 <= result.max_requests_in_flight <= 2  # the rubric's pool bounds the requests in flight
