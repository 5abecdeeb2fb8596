"""The run config loads without any ML library or verifiers: the core's config schema is plain pydantic
(a verifiers-v1 environment, or a machine without torch, reads the same TOML); and the rules of the algorithm
(partition, Q_R, the teacher's RLOO, promotion) import and run without torch. The import directions themselves
(the core imports no environment package; the rules and the config import no ML library and none of the machinery)
are import-linter's contracts in pyproject.toml; these tests check what Python actually loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Every import of these fails in the child process, as on a machine where they are not installed.
BLOCKED = ("verifiers", "torch", "transformers", "peft", "datasets", "numpy", "sv_soar_student", "sv_soar_teacher",
           "rubrics")

BLOCKER = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, Blocked())
"""

CHILD = BLOCKER + """
from sv_soar.config import load_config
from sv_soar.student.config import student_config
config = load_config("configs/cpu-demo.toml")
print(config.student.model, config.student_train_config().steps, student_config("cpu", None).group_size)
"""


def test_the_run_config_loads_without_verifiers_torch_or_datasets():
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    model, steps, group_size = done.stdout.split()
    assert model == "smollm2-135m-instruct+e1-format"
    assert int(steps) >= 1 and int(group_size) == 4


def test_importing_the_config_loads_no_ml_library():
    """`import sv_soar.config`, validating a config (its task names against sv_soar.task_names) and mapping it onto
    the teacher env's arguments leave every ML library and verifiers out of sys.modules, installed or not."""
    child = ("import sys, sv_soar.config as c\n"
             "c.load_config('configs/cpu-demo.toml'); c.teacher_env_arguments('configs/cpu-demo.toml')\n"
             f"print(sorted(m for m in {BLOCKED!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


# The ground floor: the rules of the algorithm, their types, and the run config (pyproject.toml's contract names the
# same modules).
RULES = ("sv_soar.soar_step", "sv_soar.promotion", "sv_soar.scores", "sv_soar.baseline", "sv_soar.config",
         "sv_soar.teacher_env_config", "sv_soar.soar_defaults", "sv_soar.task_names", "sv_soar.student.config")

RULES_CHILD = BLOCKER + f"""
import importlib, json
for name in {RULES!r}:
    importlib.import_module(name)
from sv_soar.baseline import Baseline
from sv_soar.promotion import PromotionState, promote
from sv_soar.scores import DatasetScore, Scorer, StudentResult
from sv_soar.soar_step import draw_q_r, partition, rloo_teacher_advantages
rows = [{{"question": str(i), "answer": "Malicious" if i % 4 == 0 else "Benign"}} for i in range(12)]
q_r = draw_q_r(rows, 4, seed=1)
students = [StudentResult(seed=j, accuracy=0.5, reward=0.005, failure=None, seconds_train=0.0, log=[]) for j in range(2)]
score = DatasetScore(reward=0.005, baseline_accuracy=0.5, students=students, error=None, cached=False, key="k",
                     seconds={{}})
decision = promote(PromotionState(task="e1", model="m", window=1), [score], [rows[:3]])  # 0.005 < tau: no promotion
print(json.dumps({{"partition": partition(list(range(7)), 3, 2), "labels": sorted(r["answer"] for r in q_r),
                  "rloo": rloo_teacher_advantages([0.1, None, 0.3]), "promoted": decision.promoted,
                  "base": Baseline("base").id, "scorer": isinstance(object(), Scorer),
                  "loaded": sorted(m for m in ("torch", "sv_soar.grounded", "sv_soar.tasks.e1", "sv_soar.tasks.e2",
                                               "sv_soar.scoring") if m in sys.modules)}}))
"""


def test_the_rules_of_the_algorithm_import_and_run_without_torch():
    """partition, the Q_R draw, the teacher's RLOO and the promotion rule, with their types, import and run in a
    process where torch and every ML library are blocked; none of them loads the scorer or a task (the tasks import
    the SV-Bench scorers)."""
    done = subprocess.run([sys.executable, "-c", RULES_CHILD], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["partition"] == [[0, 1], [2, 3], [4, 5]]  # the first g·n = 6 valid rollouts, in g = 3 datasets
    assert result["labels"] == ["Benign", "Benign", "Malicious", "Malicious"]  # stratified by label
    assert result["rloo"] == pytest.approx([-0.2, 0.0, 0.2])  # A_k = R_k − mean_{j≠k} R_j; a failed dataset: 0
    assert result["promoted"] is False and result["base"] == "base" and result["scorer"] is False
    assert result["loaded"] == []
