"""The run config loads without any ML library or verifiers: the core's config schema is plain pydantic
(a verifiers-v1 environment, or a machine without torch, reads the same TOML). The import direction
itself (the core imports no environment package) is import-linter's contract in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Every import of these fails in the child process, as on a machine where they are not installed.
BLOCKED = ("verifiers", "torch", "transformers", "peft", "datasets", "numpy", "sv_soar_student", "sv_soar_teacher",
           "rubrics")

CHILD = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, Blocked())
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
    """`import sv_soar.config`, validating a config (which loads the task registry) and mapping it onto the teacher
    env's arguments leave every ML library and verifiers out of sys.modules, installed or not."""
    child = ("import sys, sv_soar.config as c\n"
             "c.load_config('configs/cpu-demo.toml'); c.teacher_env_arguments('configs/cpu-demo.toml')\n"
             f"print(sorted(m for m in {BLOCKED!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
