"""Kill `sv-soar train` (a real subprocess) with SIGKILL at random moments, resume it each time, and end
in the state of an uninterrupted run: the same step log, promotion state, promoted questions, baseline
and teacher weights, and no temporary or orphaned file anywhere in the run folder.

A few kills here (make test); benchmarks/kill_resume.py runs many for RELIABILITY.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.killed_runs import REPO, killed_run, leftovers, run_state, shared_models, timing, train, write_config

pytestmark = pytest.mark.slow
KILLS = int(os.environ.get("SV_SOAR_KILLS", "3"))
OUTER_STEPS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill-resume")
    model, teacher = shared_models(tmp_path_factory)
    config = write_config(folder, model, teacher, outer_steps=OUTER_STEPS)
    seconds = train(config, folder / "uninterrupted")
    return {"folder": folder, "config": config, "seconds": seconds, "state": run_state(folder / "uninterrupted")}


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(setup):
    out = setup["folder"] / "killed"
    _, step_s = timing(setup["folder"] / "uninterrupted", setup["seconds"])
    result = killed_run(setup["config"], out, kills=KILLS, step_s=step_s, total_steps=OUTER_STEPS, seed=7)
    assert any(kill.exit_code == -9 for kill in result.kills), result.kills  # at least one kill landed
    state = run_state(out)
    assert state["state"]["step"] == OUTER_STEPS and state["state"]["promotions"] >= 2  # something to lose
    assert state["steps"] == setup["state"]["steps"]
    assert state["state"] == setup["state"]["state"]
    assert state["promoted_questions"] == setup["state"]["promoted_questions"]
    assert state["files"] == setup["state"]["files"]  # baseline, teacher checkpoint, promoted files, hard set
    assert leftovers(out) == []


def test_what_a_kill_leaves_behind_is_cleaned_on_resume(setup):
    """A kill inside an atomic write leaves its temporary file; a kill between state.json and the clean-up
    after it leaves the previous baseline folder and teacher checkpoint. Planted here (a random kill
    rarely lands in those microseconds), then resumed."""
    out = setup["folder"] / "planted"
    done = subprocess.run([sys.executable, "-m", "sv_soar.cli", "train", "--config", str(setup["config"]), "--out",
                           str(out), "--max-steps", "2", "--no-progress"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    baseline = next((out / "baseline").iterdir())
    shutil.copytree(baseline, out / "baseline" / "0001-step-000000")  # the baseline before the last promotion
    shutil.copytree(out / "teacher" / "step-000002", out / "teacher" / "step-000001")  # the checkpoint before
    shutil.copytree(baseline, out / "baseline" / ".0003-step-000002.tmp-k1ll3d")  # save_baseline's temp folder
    shutil.copytree(baseline, out / "baseline" / ".0001-step-000000.old-123-456")  # and its renamed-away old one
    for temp in (".state.json.a1b2c3.tmp", "teacher/step-000002/.optimizer.pt.x9y8.tmp", ".steps.jsonl.q.tmp"):
        (out / temp).write_bytes(b"half a fil")
    cache_entry = next((out / "reward_cache").rglob("*.json"))
    (cache_entry.parent / f".{cache_entry.name}.zz.tmp").write_text('{"rew')
    assert len(leftovers(out)) == 6

    train(setup["config"], out, resume=True)
    state = run_state(out)
    assert leftovers(out) == []
    assert state == setup["state"]  # the orphans are gone too: the same files as an uninterrupted run


def test_a_second_train_in_the_same_folder_is_refused(setup):
    from sv_soar.run_dir import exclusive_run

    out = setup["folder"] / "uninterrupted"
    with exclusive_run(out):  # as a running `sv-soar train` holds it
        done = subprocess.run([sys.executable, "-m", "sv_soar.cli", "train", "--resume", str(out), "--no-progress"],
                              cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert "another `sv-soar train` is running in" in done.stdout
