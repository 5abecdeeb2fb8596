"""The verifiers v1 side of hosted training, run in venvs of their own (verifiers 0.1.x in .venv cannot share
one): on the newest (0.4.0) and the oldest (0.3.1) verifiers on PyPI that the env projects' range
(>=0.3.1.dev62,<0.5, which admits prime-rl's pinned git build) allows, each venv with prime 0.18.0.
`bash scripts/build_v1_venv.sh --verifiers newest|oldest` builds them, `make test` first; these tests and those
of tests/test_hosted_v1_episodes.py skip without them.

Every test that runs verifiers runs on the newest; on the oldest run the tests whose verifiers code differs
between the two (131 files of verifiers/ differ, verifiers/v1 among them; prime_cli is the same 0.18.0 in both):
the prime CLI's checks with the envs' config classes (vf.TasksetConfig), the refusals, pip's dry run, and every
test that runs verifiers' eval CLI or episode machinery (Env.run_episode / run_slot, the null harness, Trace).
Five run on the newest only (NEWEST_ONLY), because on the oldest they would run no verifiers code that an
oldest test does not already run:
- the two tests of tests/hosted_v1/outer_step.py (in tests/test_hosted_v1_episodes.py) call TeacherStep.score,
  which is the core's code (sv_soar via `core`); their only verifiers code is `import verifiers.v1` and
  SoarTeacherConfig(**args), which every oldest episode runs too (SoarTeacherEnv builds the same step,
  open_teacher_step, from the same config class);
- prime 0.18's schema worker: its first half is check_configs on the shipped configs, the very call of the first
  config test; its second half runs prime_cli's training_schema_worker.py (the same file in both venvs) under a
  prime-rl schema venv's python, not the v1 venv's;
- export-vf's config: check_configs again (prime's checks, SoarStudentConfig) on a TOML that sv-soar writes in
  .venv, whatever the verifiers of the v1 venv;
- the v1 teacher env through vf-eval served the bare model: the same eval TOML, eval CLI, null harness and env
  as the warm-started teacher's test, which runs on both; only the served model and the sampling numbers
  differ, and verifiers v1 passes temperature and max_tokens to the server without branching on them (the
  anthropic dialect aside, which these chat-completions runs never use).

- configs/hosted/*.toml (and `sv-soar export-vf --prime-rl`'s output) pass the prime CLI's own client-side
  checks, and their taskset arguments validate against the v1 envs' config classes; configs that prime or the
  env must refuse are refused (the retired shared-LoRA layout, an unforwarded secret, an unknown argument).
- The v1 teacher env runs one whole outer step through verifiers 0.4's own `vf-eval` against a real
  `sv-soar serve-model`: served a tiny teacher warm-started on one problem (greedy, one valid reply and three
  duplicates), a student trains on that dataset and its trace gets R_k; served the bare tiny model (no valid
  problem), every trace gets the neutral floor; either step is committed to the run directory.
- tests/test_hosted_v1_episodes.py: the env's teacher step on hand-written teacher replies, and what a real
  prime-rl run must survive (verifiers' own episode machinery against a model server that refuses requests).
- Installing an env project into either venv changes none of its packages (pip's dry run).
- The v1 student taskset answers through the same `vf-eval`, each reply rewarded with SV-Bench's rubric.
- The hard set travels with the env: `sv-soar package-env` puts it in the env's package data, and a wheel
  built from the env project carries it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from sv_soar.tasks import get_task
from tests.served_model import start_server, stop_server
from tests.teacher_env_inputs import STUDENT
from tests.v1_venvs import NEWEST_ONLY, check_configs, env_copy, harness_toml, package, run_v1, verifiers_version

REPO = Path(__file__).resolve().parents[1]
HOSTED = REPO / "configs" / "hosted"
SERVED = "tiny-teacher"
pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------------ configs


def test_prime_cli_accepts_the_hosted_configs_and_the_envs_accept_their_arguments(v1_python, tmp_path):
    configs = sorted(HOSTED.glob("*.toml"))
    assert {p.name for p in configs} >= {"teacher-e1.toml", "teacher-e2.toml", "student-hard-only-e1.toml"}
    results = check_configs(v1_python, configs, tmp_path)
    for name, result in results.items():
        assert result["ok"], f"{name}: {result['error']}"
    for task in ("e1", "e2"):
        (source,) = results[f"teacher-{task}.toml"]["sources"]
        assert (source["env"], source["taskset_config"]) == ("SoarTeacherEnv", "SoarTeacherConfig")
        assert source["taskset"]["svbench_task"] == task and source["taskset"]["hard_set"] == task
        assert source["taskset"]["floor"] == "neutral" and source["taskset"]["students_url"] is None
    (source,) = results["student-hard-only-e1.toml"]["sources"]
    assert source["taskset_config"] == "SoarStudentConfig" and source["taskset"]["rows"] == "e1"


def test_configs_prime_or_the_env_must_refuse_are_refused(v1_python, tmp_path):
    """The checks can fail: the pre-0.18 layout these configs had, a secret prime does not forward, the reserved
    `task` key and a misspelt argument are each refused, by prime or by the env's config class."""
    teacher = tomllib.loads((HOSTED / "teacher-e1.toml").read_text(encoding="utf-8"))
    old = tmp_path / "old-layout.toml"
    old.write_text('model = "meta-llama/Llama-3.2-3B-Instruct"\nmax_steps = 200\n\n[[env]]\n'
                   'id = "sv-soar/sv-soar-teacher"\nargs = { task = "e1" }\n', encoding="utf-8")
    (tmp_path / "secrets.env").write_text("SV_SOAR_STUDENTS_TOKEN=abc\n", encoding="utf-8")
    text = (HOSTED / "teacher-e1.toml").read_text(encoding="utf-8")
    secret = tmp_path / "secret.toml"
    secret.write_text('env_file = ["secrets.env"]\n' + text, encoding="utf-8")
    reserved = tmp_path / "reserved.toml"
    reserved.write_text(text.replace('svbench_task = "e1"', 'task = "e1"'), encoding="utf-8")
    typo = tmp_path / "typo.toml"
    typo.write_text(text.replace("q_r = 64", "qr = 64"), encoding="utf-8")
    concurrent = tmp_path / "concurrent.toml"
    concurrent.write_text(text.replace("q_r = 64", "q_r = 64\nmax_concurrent_scorings = 2"), encoding="utf-8")
    assert teacher["orchestrator"]["train"]["source"][0]["env"]["taskset"]["q_r"] == 64
    results = check_configs(v1_python, [old, secret, reserved, typo, concurrent], tmp_path)
    assert "shared LoRA" in results["old-layout.toml"]["error"]
    assert "prime refused it" in results["secret.toml"]["error"]
    assert "task" in results["reserved.toml"]["error"]
    assert "qr" in results["typo.toml"]["error"]
    assert "max_concurrent_scorings" in results["concurrent.toml"]["error"]  # at load, not at the first episode
    assert not any(r["ok"] for r in results.values())


def schema_venvs() -> list[Path]:
    cache = Path(os.environ.get("SV_SOAR_CACHE_HOME", Path.home() / ".cache" / "sv-soar")) / "prime-rl-schema"
    return sorted(p.parent for p in cache.glob("*/.installed"))


@NEWEST_ONLY
def test_prime_018s_schema_worker_normalises_the_hosted_configs(v1_python, tmp_path):
    """prime 0.18.0's own schema worker (`normalize`, what `prime train validate` runs before anything is sent) on
    each config, against every prime-rl schema venv built here (scripts/build_prime_rl_schema_venv.sh: prime-rl's
    own config package at one commit; main of Aug 2026 when this was written). The shipped configs pass;
    misspelt keys are refused, and so is the newer layout's [orchestrator.train] group_size by main's schema."""
    venvs = schema_venvs()
    if not venvs:
        pytest.skip("no prime-rl schema venv: bash scripts/build_prime_rl_schema_venv.sh PRIME_RL_GIT [REV]")
    results = check_configs(v1_python, sorted(HOSTED.glob("*.toml")), tmp_path)
    inputs = {name: r["schema_input"] for name, r in results.items()}
    teacher = inputs["teacher-e1.toml"]
    newer = json.loads(json.dumps(teacher))
    newer["orchestrator"]["train"]["group_size"] = 1
    typo = json.loads(json.dumps(teacher))
    typo["orchestrator"]["concurrency"]["max_in_flight"] = 1
    source_typo = json.loads(json.dumps(teacher))
    source_typo["orchestrator"]["train"]["source"][0]["groupsize"] = 1
    refused = {"newer-layout": newer, "typo": typo, "source-typo": source_typo}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs | refused), encoding="utf-8")
    (worker,) = v1_python.parent.parent.glob("lib/python3*/site-packages/prime_cli/utils/training_schema_worker.py")
    for venv in venvs:
        done = subprocess.run([str(venv / "bin" / "python"), str(REPO / "tests" / "hosted_v1" / "schema_normalize.py"),
                               str(worker), str(tmp_path / "inputs.json")], capture_output=True, text=True,
                              timeout=300, env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")})
        out = {r["config"]: r for r in map(json.loads, done.stdout.splitlines())}
        assert len(out) == len(inputs) + len(refused), done.stderr[-3000:]
        commit = (venv / "PRIME_RL_COMMIT").read_text().strip()
        for name in inputs:
            assert out[name]["ok"], f"prime-rl {commit}: {name}: {out[name]['error']}"
        if not out["newer-layout"]["ok"]:  # main of Aug 2026; a schema with SourceGroupConfig accepts it
            assert "orchestrator.train.group_size" in out["newer-layout"]["error"]
        assert "max_in_flight" in out["typo"]["error"] and "groupsize" in out["source-typo"]["error"]


@NEWEST_ONLY
def test_export_vf_prime_rl_config_passes_the_same_checks(v1_python, tmp_path, tiny_model_dir):
    from tests.tiny_runs import make_run

    run = make_run(tmp_path, tiny_model_dir)
    done = subprocess.run([sys.executable, "-m", "sv_soar.cli", "export-vf", str(run.folder), "--prime-rl"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    config = run.folder / "export-vf" / "prime-rl.toml"
    (result,) = check_configs(v1_python, [config], tmp_path).values()
    assert result["ok"], result["error"]
    (source,) = result["sources"]
    assert source["taskset_config"] == "SoarStudentConfig"
    assert f"--name {source['taskset']['rows']}" in done.stdout  # the printed package-env command names the set


# ------------------------------------------------------------------------------------------ the envs


def score(trace: dict, name: str) -> float:
    """A reward of a trace record (traces.jsonl: {"score": value, "weight": w})."""
    reward = trace["rewards"][name]
    return reward["score"] if isinstance(reward, dict) else reward


def reply_of(trace: dict) -> str:
    """The last assistant message of a trace record (its message graph's nodes)."""
    replies = [n["message"].get("content") or "" for n in trace["nodes"]
               if isinstance(n.get("message"), dict) and n["message"].get("role") == "assistant"]
    return replies[-1] if replies else ""


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-model") / "server.log"
    server = start_server(tiny_model_dir, log, "--served-model-name", SERVED, "--batch-window-ms", "50")
    try:
        yield server
    finally:
        stop_server(server.proc)


def vf_eval(python: Path, project: Path, port: int, tmp_path: Path, env_toml: str, run: str,
            max_tokens: int = 48, temperature: float = 1.0) -> list[dict]:
    """verifiers' own v1 eval CLI on an eval TOML; returns the episode records of its traces.jsonl."""
    config = tmp_path / f"{run}.toml"
    top = ""
    if verifiers_version(python).startswith("0.3."):  # 0.3.x's EvalConfig has num_tasks, not [select] limit
        limit = re.search(r"\[select\]\nlimit = (\d+)\n", env_toml)
        env_toml, top = env_toml.replace(limit.group(0), ""), f"num_tasks = {limit.group(1)}\n"
    config.write_text(
        f'model = "{SERVED}"\n{top}num_rollouts = 1\npush = false\noutput_dir = "{tmp_path / "outputs"}"\n\n'
        f'[run]\ndir = "{run}"\n\n[client]\nbase_url = "http://127.0.0.1:{port}/v1"\n'
        f'api_key_var = "SV_SOAR_TEST_KEY"\n\n[sampling]\nmax_tokens = {max_tokens}\ntemperature = {temperature}\n\n'
        + env_toml, encoding="utf-8")
    # verifiers 0.3.x names the v1 eval CLI `eval` (its `vf-eval` is the v0 one); 0.4 names it `vf-eval`
    vf_eval_bin = python.parent / ("eval" if verifiers_version(python).startswith("0.3.") else "vf-eval")
    done = run_v1(python, [str(vf_eval_bin), "@", str(config), "--no-rich"], pythonpath=[project, REPO],
                  cwd=tmp_path, env={"SV_SOAR_TEST_KEY": "unused", "SV_SOAR_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    traces = tmp_path / "outputs" / run / "traces.jsonl"
    return [json.loads(line) for line in traces.read_text(encoding="utf-8").splitlines() if line.strip()]


def teacher_episode(python: Path, port: int, hard_set: Path, tiny_model_dir: Path, tmp_path: Path, run: str,
                    **sampling) -> tuple[dict, Path]:
    """One vf-eval episode of the v1 teacher env (g = 2, n = 2, one student, |Q_R| = 4) on the packaged tiny
    hard set: (the episode record, its run directory)."""
    project = env_copy("sv_soar_teacher_v1", tmp_path)
    package(hard_set, project, "tiny-e1")
    run_dir = tmp_path / "run"
    (episode,) = vf_eval(python, project, port, tmp_path, f"""
[select]
limit = 1

[env.taskset]
id = "sv-soar-teacher-v1"
hard_set = "tiny-e1"
model = "{tiny_model_dir}"
preset = "cpu"
student = {json.dumps(STUDENT).replace(":", " =")}
g = 2
n = 2
students = 1
q_r = 4
run_dir = "{run_dir}"
num_prompts = 1

[env.teacher.harness]
id = "null"
{harness_toml(python)}
[env.teacher.runtime]
type = "subprocess"
""", run, **sampling)
    return episode, run_dir  # one task, one rollout: one episode = one outer step


def metrics_of(trace: dict) -> dict[str, float]:
    return {name: m["value"] if isinstance(m, dict) else m for name, m in trace["metrics"].items()}


@pytest.fixture(scope="module")
def served_teacher(tiny_model_dir, tmp_path_factory):
    """The tiny model after a format warm start on ONE teacher reply (300 steps, ~10 s): greedy, it writes that
    valid E1 problem, so an episode has a dataset to score (the bare tiny model writes none)."""
    from sv_soar.format_warm_start import Recipe
    from sv_soar.models import build_format_warm_start

    teacher = tmp_path_factory.mktemp("one-problem-teacher")
    build_format_warm_start(str(tiny_model_dir), Recipe("e1", "teacher", steps=300, learning_rate=1e-2, examples=1,
                                                        lora_rank=4), teacher)
    log = tmp_path_factory.mktemp("serve-teacher") / "server.log"
    server = start_server(teacher, log, "--served-model-name", SERVED, "--batch-window-ms", "50")
    try:
        yield server
    finally:
        stop_server(server.proc)


def test_v1_teacher_env_trains_students_on_a_valid_problem_inside_vf_eval(v1_python, served_teacher, hard_set,
                                                                         tiny_model_dir, tmp_path):
    """The whole outer step through vf-eval: the greedy teacher's g·n = 4 replies are one valid problem and three
    duplicates of it; the valid one becomes a dataset, a student trains on it against the baseline, and its
    trace's reward is that dataset's R_k (the duplicates get the neutral floor, R̂_t)."""
    episode, run_dir = teacher_episode(v1_python, served_teacher.port, hard_set, tiny_model_dir, tmp_path,
                                       "teacher-valid", max_tokens=120, temperature=0.0)
    traces = episode["traces"]
    metrics = [metrics_of(trace) for trace in traces]
    valid = [m for m in metrics if m["valid"] == 1.0]
    assert len(valid) == 1 and sum(m.get("rejected_duplicate_in_batch", 0.0) for m in metrics) == 3, metrics
    (m,) = valid
    assert m["students_failed"] == 0.0 and m["datasets"] == 1.0  # one dataset, its student trained
    (trace,) = [t for t, mt in zip(traces, metrics) if mt["valid"] == 1.0]
    assert score(trace, "grounded_improvement") == pytest.approx(m["dataset_reward"])  # R_k on its trace
    state = json.loads((run_dir / "state.json").read_text())
    (record,) = state["history"]
    assert record["reward_hat"] == pytest.approx(m["dataset_reward"])  # R̂_t = mean_k R_k over the one dataset


@NEWEST_ONLY
def test_v1_teacher_env_runs_one_outer_step_through_vf_eval(v1_python, served, hard_set, tiny_model_dir,
                                                            tmp_path):
    episode, run_dir = teacher_episode(v1_python, served.port, hard_set, tiny_model_dir, tmp_path, "teacher")
    traces = episode["traces"]
    assert len(traces) == 4  # g·n teacher generations in the one episode
    reasons = [f"rejected_{r}" for r in ("empty", "too_long", "not_json", "schema", "bad_label", "question_too_short",
                                         "question_too_long", "injection", "not_e1_style", "duplicate_of_hard_set",
                                         "duplicate_in_batch", "agent_error")]
    for trace in traces:
        assert trace["agent"]["name"] == "teacher"
        metrics = metrics_of(trace)
        reward = score(trace, "grounded_improvement")
        assert metrics["valid"] + sum(metrics.get(r, 0.0) for r in reasons) == 1.0  # valid, or one reason
        if metrics["valid"] == 0.0:
            assert reward == 0.0  # the neutral floor: R̂_t, 0 with nothing scored (never −1)
        assert metrics["outer_step"] == 0.0
    state = json.loads((run_dir / "state.json").read_text())
    assert state["step"] == 1 and len(state["history"]) == 1  # the episode was one outer step, committed


def test_v1_student_taskset_rewards_replies_with_svbench(v1_python, served, hard_set, tmp_path):
    project = env_copy("sv_soar_student_v1", tmp_path)
    package(hard_set / "d_train.jsonl", project, "hard-only")
    episodes = vf_eval(v1_python, project, served.port, tmp_path, """
[select]
limit = 2

[env.taskset]
id = "sv-soar-student-v1"
svbench_task = "e1"
rows = "hard-only"

[env.agent.harness]
id = "null"
""" + harness_toml(v1_python) + """
[env.agent.runtime]
type = "subprocess"
""", "student", max_tokens=24)
    assert len(episodes) == 2
    task = get_task("e1")
    for episode in episodes:
        (trace,) = episode["traces"]
        row = json.loads(episode["task"]["data"]["row"])
        reward = score(trace, "svbench")
        assert reward == pytest.approx(task.score(reply_of(trace), row)["reward"])  # SV-Bench's own E1 reward


def test_installing_an_env_project_beside_either_verifiers_changes_nothing(v1_python, tmp_path):
    """pip's dry run of each env project into a venv that already has verifiers (0.4.0 or 0.3.1) and the rest
    of its dependencies: the project itself is all it would install, so no verifiers, openai or mcp moves."""
    for name in ("sv_soar_teacher_v1", "sv_soar_student_v1"):
        report = tmp_path / f"{name}.json"
        done = subprocess.run([str(v1_python), "-m", "pip", "install", "--dry-run", "--quiet", "--report",
                               str(report), str(REPO / "environments" / name)], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
        assert installs == [name.replace("_", "-")], installs



def test_a_wheel_of_the_env_carries_the_packaged_hard_set(hard_set, tmp_path):
    """What `prime env push` uploads: a wheel built from the env project, the core and the hard set inside."""
    project = tmp_path / "sv_soar_teacher_v1"
    shutil.copytree(REPO / "environments" / "sv_soar_teacher_v1", project, symlinks=False,
                    ignore=shutil.ignore_patterns("data", "__pycache__"))
    package(hard_set, project, "e1")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path / "dist"), str(project)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("sv_soar_teacher_v1-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("d_train.jsonl", "d_test.jsonl", "SOURCE.json"):
        assert f"sv_soar_teacher_v1/data/e1/{name}" in names
    assert "sv_soar/hosted.py" in names and "sv_soar_teacher_v1/taskset.py" in names
    assert not any(n.startswith(("sv_soar_teacher/", "rubrics/")) for n in names)  # no v0 (verifiers 0.1) code
    assert not any("recipe_adapters" in n for n in names)  # nor the demos' 58 MB of recipe adapters
    manifest = json.loads(zipfile.ZipFile(wheel).read("sv_soar_teacher_v1/data/e1/SOURCE.json"))
    assert manifest["d_train_rows"] == len((hard_set / "d_train.jsonl").read_text().splitlines())
    assert str(hard_set) not in json.dumps(manifest)  # no path of this machine travels


def test_package_env_refuses_bad_input_by_name(hard_set, tmp_path):
    project = env_copy("sv_soar_teacher_v1", tmp_path)
    cases = [([str(tmp_path / "nowhere"), "--env", str(project), "--name", "x"], "no such file or folder"),
             ([str(hard_set), "--env", str(tmp_path), "--name", "x"], "no package"),
             ([str(hard_set), "--env", str(project), "--name", "/data/e1"], "--name '/data/e1'")]
    for args, message in cases:
        done = subprocess.run([sys.executable, "-m", "sv_soar.cli", "package-env", *args], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 2 and message in done.stderr, done.stderr
