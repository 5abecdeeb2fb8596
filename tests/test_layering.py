"""The run config loads without any ML library or verifiers: the core's config schema is plain pydantic
(a verifiers-v1 environment, or a machine without torch, reads the same TOML); and the rules of the algorithm
(partition, Q_R, the teacher's RLOO, promotion) import and run without torch. The import directions themselves
(the core imports no environment package; the rules and the config import no ML library and none of the machinery)
are import-linter's contracts in pyproject.toml; these tests check what Python actually loads, and that an import
sits inside a function only where it keeps a heavy package out of its module; and that no Python file of the repository
is over 500 lines."""

from __future__ import annotations

import ast
import json
import os
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


# Imports sit at the top of their module (issue 24) unless the import inside a function keeps a heavy package out of
# a module that does not load it already: one that costs seconds to import (torch, datasets, matplotlib) or is an
# optional extra (vllm, ray, wandb). A delayed import of `json` or of a light project module fails the test below.
# What a module loads is computed from the imports at the top of the modules it imports, transitively (grimp's
# graph, which import-linter reads, counts the imports inside functions too).
HEAVY = ("torch", "transformers", "peft", "safetensors.torch", "vllm", "trl", "ray", "datasets", "verifiers",
         "matplotlib", "wandb", "tensorboard", "uvicorn", "fastapi", "starlette", "httpx", "accelerate")
# what importing a HEAVY name loads (itself otherwise): a module with torch at its top gains nothing by delaying
# safetensors.torch (safetensors itself is light)
HEAVY_LOADS = {"safetensors.torch": {"torch"}, "peft": {"peft", "torch", "transformers"}, "vllm": {"vllm", "torch"},
               "trl": {"trl", "torch", "transformers"}, "fastapi": {"fastapi", "starlette"}}
# (module, what it imports inside a function): the imports that stay there although they load nothing heavy
DELAYED_FOR_ANOTHER_REASON = {
    # the task packages import the registry (a cycle), and a module that imports it for `Task` loads no scorer
    ("sv_soar.tasks", "sv_soar.tasks.e1"): "cycle", ("sv_soar.tasks", "sv_soar.tasks.e2"): "cycle",
    ("sv_soar.tasks", "sv_soar.tasks.mechanism"): "cycle",
    # regopy loaded before torch aborts the process when torch loads: rego.py imports torch first, in the function
    ("sv_soar.tasks.e2.oracle.rego", "regopy"): "order",
}
IMPORT_ROOTS = {"sv_soar": REPO, "sv_soar_teacher": REPO, "sv_soar_student": REPO, "rubrics": REPO,
                **{path.name: path.parent for path in REPO.glob("environments/*_v1/*_v1")}}


def _modules() -> dict[str, Path]:
    """Every module of sv_soar and of the environment packages, by dotted name."""
    found = {}
    for package, root in IMPORT_ROOTS.items():
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(module: str, path: Path) -> list[tuple[list[str], bool, ast.stmt]]:
    """Each import statement of a module: the dotted names it may load, whether it runs when the module is imported
    (not inside a function, not under `if TYPE_CHECKING`), and its node."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.append(([alias.name for alias in child.names], not in_function, child))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found.append(([base] + [f"{base}.{alias.name}" for alias in child.names], not in_function, child))
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(path.read_text()), False)
    return found


def _heavy_named(name: str) -> set[str]:
    """The heavy packages that importing `name`, a third-party module, loads."""
    for heavy in HEAVY:
        if name == heavy or name.startswith(heavy + "."):
            return HEAVY_LOADS.get(heavy, {heavy})
    return set()


def _with_parents(name: str, modules: dict[str, Path]) -> list[str]:
    """The project modules that importing `name` runs: its packages' __init__s, and itself."""
    parts = name.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in modules]


def _heavy_at_import() -> tuple[dict[str, Path], dict[str, set[str]]]:
    """For each module, the heavy packages that importing it loads, through the imports at the top of the modules it
    imports, transitively."""
    modules = _modules()
    direct, edges = {}, {}
    for module, path in modules.items():
        names = [n for names, top, _ in _imports(module, path) if top for n in names] + [module]
        direct[module] = set().union(*(_heavy_named(n) for n in names if not _with_parents(n, modules)))
        edges[module] = {m for n in names for m in _with_parents(n, modules)}
    heavy = {}
    for module in modules:
        seen, todo = {module}, [module]
        while todo:
            for nxt in edges[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        heavy[module] = set().union(*(direct[m] for m in seen))
    return modules, heavy


def needless_delayed_imports() -> list[str]:
    """`path:line: import` for each import inside a function that loads no heavy package its module does not load
    already, and that DELAYED_FOR_ANOTHER_REASON does not name; and each such import that stays without a trailing
    comment that says why."""
    modules, heavy = _heavy_at_import()
    found = []
    for module, path in sorted(modules.items()):
        lines = path.read_text().splitlines()
        for names, top, node in _imports(module, path):
            if top:
                continue
            loads = set().union(*(heavy[m] for n in names for m in _with_parents(n, modules)),
                                *(_heavy_named(n) for n in names if not _with_parents(n, modules)))
            where = f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}"
            if not loads - heavy[module] and (module, names[0]) not in DELAYED_FOR_ANOTHER_REASON:
                found.append(where)
            elif "#" not in " ".join(lines[node.lineno - 1:node.end_lineno]):
                found.append(where + "  (no comment says why)")
    return found


def test_imports_sit_at_the_top_unless_they_delay_a_heavy_package():
    """Every import inside a function in sv_soar and the environment packages keeps a HEAVY package (torch, vllm,
    matplotlib...) out of a module that does not load it at import, or is named in DELAYED_FOR_ANOTHER_REASON (an
    import cycle, an import order); and its line's comment says which."""
    assert needless_delayed_imports() == []
    modules = _modules()
    delayed = {(m, names[0]) for m, path in modules.items() for names, top, _ in _imports(m, path) if not top}
    assert set(DELAYED_FOR_ANOTHER_REASON) <= delayed  # no stale entry


# No Python module over 500 lines (issue 24): a longer one is split by theme, as tests/fuzz_targets/ is.
MAX_MODULE_LINES = 500
# where a tree without git metadata (an unpacked sdist) keeps no module of its own: venvs, build outputs, caches
NOT_THE_PROJECTS = {"build", "dist", "node_modules", "__pycache__", "site-packages"}


def python_files(root: Path = REPO) -> list[Path]:
    """Every Python file git tracks under `root`; without git (or outside a checkout), every .py file under it but
    those in hidden folders (.git, .venv, .venv-trl...), NOT_THE_PROJECTS and *.egg-info, symlinks not followed."""
    try:
        done = subprocess.run(["git", "ls-files", "-z", "--", "*.py"], cwd=root, capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is not None and done.returncode == 0:
        return [root / name for name in done.stdout.split("\0") if name]
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in NOT_THE_PROJECTS
                         and not d.endswith(".egg-info")]
        found += [Path(folder) / name for name in files if name.endswith(".py")]
    return sorted(found)


def long_modules(root: Path = REPO) -> list[str]:
    """`path: N lines` for each Python file under `root` over MAX_MODULE_LINES lines."""
    found = []
    for path in python_files(root):
        if path.is_file() and not path.is_symlink():  # a tracked file deleted in the working tree is no module
            lines = len(path.read_text(encoding="utf-8", errors="replace").splitlines())
            if lines > MAX_MODULE_LINES:
                found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def test_no_python_module_is_over_500_lines():
    """Every Python file of the repository (git's tracked files) is at most MAX_MODULE_LINES lines long: a longer
    module is split by theme into a package or into files beside it, a test file into test files by theme."""
    long = long_modules()
    assert not long, (f"{len(long)} Python file(s) over {MAX_MODULE_LINES} lines; split each by theme:\n  "
                      + "\n  ".join(long))


def imports_of_test_files(root: Path = REPO) -> list[str]:
    """'tests/x.py:LINE imports tests.test_y' for each test file that imports another test file."""
    found = []
    for path in sorted((root / "tests").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for names, _, node in _imports(module, path):  # every statement, inside functions too; relative ones resolved
            tests = [name for name in names if any(part.startswith("test_") for part in name.split(".")[:3])]
            found += [f"{path.relative_to(root)}:{node.lineno} imports {tests[0]}"] if tests else []
    return found


def test_no_test_file_imports_another():
    """Helpers that tests share live in tests/conftest.py or a helpers module (tests/tiny_llama.py,
    tests/v1_venvs.py...), not in a test file: importing a test file runs its module fixtures and collects its
    tests twice."""
    found = imports_of_test_files()
    assert not found, "move the shared helpers to tests/conftest.py or a helpers module:\n  " + "\n  ".join(found)
