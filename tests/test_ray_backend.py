"""The Ray backend on a real local Ray cluster (CPU actors) with the tiny real model: its R_k, logs and kept
student weights equal the local backend's, bit for bit; without Ray, asking for it says how to install it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import ray  # in the dev extra, so CI's `make test` runs these
import torch

from sv_soar.backends import make_scorer
from sv_soar.baseline import Baseline
from sv_soar.grounded import GroundedScorer
from sv_soar.models import load_model
from tests.kind_task import KIND, comparable, flipped, hard_items, kind_config

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.slow
def test_ray_actors_give_the_local_backends_rewards(tiny_model_dir, tmp_path):
    config = kind_config(steps=3)
    local = GroundedScorer(load_model(str(tiny_model_dir)), KIND, config, students=2, progress=False)
    q_r = hard_items(local, n=6)
    datasets = [q_r[:4], flipped(q_r)[:4], q_r[2:]]
    expected = local.score(datasets, q_r, Baseline("base"), seed=5, keep_adapters=True)

    with make_scorer(str(tiny_model_dir), KIND, config, backend="ray", ray_actors=2, students=2, progress=False,
                     cache_dir=tmp_path) as remote:
        assert len({w["pid"] for w in remote.workers}) == 2  # two actor processes, one model each
        got = remote.score(datasets, q_r, Baseline("base"), seed=5, keep_adapters=True)
        assert [comparable(s) for s in got] == [comparable(s) for s in expected]
        assert got[0].reward is not None and got[0].reward > 0  # a real signal, not 0 == 0
        for mine, theirs in zip(got, expected):
            for a, b in zip(mine.students, theirs.students):
                assert a.adapter_state.keys() == b.adapter_state.keys()
                assert all(torch.equal(a.adapter_state[k], b.adapter_state[k]) for k in a.adapter_state)
        # the driver keeps the reward cache: a second call is a hit, computed nowhere
        again = remote.score(datasets[:1], q_r, Baseline("base"), seed=5)
        assert again[0].cached and comparable(again[0]) == comparable(expected[0])
        # a promoted baseline (kept weights) travels to the actors: the same Acc as locally
        promoted = Baseline("promoted", expected[0].students[0].adapter_state)
        assert remote.baseline_accuracy(promoted, q_r) == local.baseline_accuracy(promoted, q_r)
    assert not ray.is_initialized()  # the scorer started Ray, so closing it stopped Ray


def test_ray_backend_refuses_a_model_object(tiny_model_dir):
    with pytest.raises(TypeError, match="model name or folder"):
        make_scorer(load_model(str(tiny_model_dir)), KIND, kind_config(), backend="ray")


def test_without_ray_the_error_says_how_to_install_it(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'sv-soar\[ray\]'"):
        make_scorer(str(tiny_model_dir), KIND, kind_config(), backend="ray")


def test_unknown_backend_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="backend must be one of"):
        make_scorer(str(tiny_model_dir), KIND, kind_config(), backend="dask")


def test_config_compute_section(tmp_path):
    from sv_soar.config import ConfigError, load_config

    path = tmp_path / "exp.toml"
    path.write_text('[data]\nhard_set = "hs"\n[compute]\nbackend = "ray"\nray_address = "auto"\nray_actors = 4\n')
    compute = load_config(path).compute
    assert (compute.backend, compute.ray_address, compute.ray_actors, compute.students_url) == ("ray", "auto", 4, None)
    assert load_config(path, {"compute.backend": "local"}).compute.backend == "local"
    path.write_text('[data]\nhard_set = "hs"\n[compute]\nbackend = "dask"\nray_actors = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}: compute.backend:" in str(caught.value) and f"{path}: compute.ray_actors:" in str(caught.value)


@pytest.mark.slow
def test_cli_score_on_ray_equals_local(tiny_model_dir, tmp_path):
    """`sv-soar score --backend ray` (a real subprocess, a local Ray cluster): the same R_k as --backend local."""
    import json
    import subprocess

    from sv_soar.jsonl import write_jsonl
    from sv_soar.tasks.e1.flows import generate_e1_flows

    rows = generate_e1_flows(10, seed=5)
    write_jsonl(tmp_path / "hard" / "d_train.jsonl", rows[:4])
    write_jsonl(tmp_path / "x1.jsonl", rows[4:])
    outputs = {}
    for backend in ("local", "ray"):
        out = tmp_path / f"{backend}.json"
        done = subprocess.run([sys.executable, "-m", "sv_soar.cli", "score", "--dataset", str(tmp_path / "x1.jsonl"),
                               "--hard-set", str(tmp_path / "hard"), "--model", str(tiny_model_dir), "--preset", "cpu",
                               "--students", "2", "--q-r", "4", "--no-progress", "--backend", backend,
                               "--ray-actors", "2", "--out", str(out)],
                              cwd=REPO, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
        [dataset] = json.loads(out.read_text())["datasets"]
        outputs[backend] = [(s["seed"], s["accuracy"], [e["loss"] for e in s["log"]]) for s in dataset["students"]]
    assert outputs["ray"] == outputs["local"]


@pytest.mark.slow
def test_a_dead_actor_is_restarted_and_its_runs_retried_once(tiny_model_dir, tmp_path, caplog):
    """Student runs that end their actor's process (os._exit inside the verifier: a native abort, the OOM
    killer): a part whose actor dies once is run again on a restarted actor and equals an undisturbed run;
    a part whose actor dies every time fails as "ActorDied" students while the other dataset is scored."""
    import logging

    from tests.injected_faults import Faults, fault_rows, strip

    faults = Faults(exit_marks=tmp_path)
    config = kind_config(steps=2, batch_prompts=2)
    local = GroundedScorer(load_model(str(tiny_model_dir)), faults.task(), config, students=2, progress=False)
    q_r = hard_items(local, n=4)
    [undisturbed] = local.score([q_r[:2]], q_r, Baseline("base"), seed=0)
    with make_scorer(str(tiny_model_dir), faults.task(), config, backend="ray", ray_actors=2, students=2,
                     progress=False) as remote:
        pids = {w["pid"] for w in remote.workers}
        with caplog.at_level(logging.WARNING, logger="sv_soar.backends.ray_backend"):
            # two actors, two datasets of two students: actor 0 runs "exit-once", actor 1 "exit"
            once, always = remote.score([fault_rows(q_r, "exit-once"), fault_rows(q_r, "exit")], q_r,
                                        Baseline("base"), seed=0)
        assert once.n_failed == 0 and [s.attempts for s in once.students] == [2, 2]
        assert strip(once) == strip(undisturbed) and once.reward == undisturbed.reward
        assert always.reward is None and "all 2 students failed" in always.error
        for student in always.students:
            assert student.failure.startswith("ActorDied: actor 1 died twice") and student.reward is None
        assert caplog.text.count("running them once more") == 2 and caplog.text.count("died running") == 3
        # every dead actor was replaced: the scorer goes on scoring
        assert not pids & {w["pid"] for w in remote.workers}
        [fine] = remote.score([q_r[:2]], q_r, Baseline("base"), seed=0)
        assert strip(fine) == strip(undisturbed)
