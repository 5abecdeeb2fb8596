"""configs/hosted/*.toml are prime-rl RL configs (what Prime's Hosted Training and prime-rl run), with one
episode = one SOAR outer step for the teacher, and nothing in them that a cluster cannot have: no path of
this machine and no secret beyond the two the prime CLI forwards. tests/test_hosted_v1.py runs the prime CLI's
own checks and the v1 envs' config classes on them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

HOSTED = Path(__file__).resolve().parents[1] / "configs" / "hosted"
CONFIGS = sorted(HOSTED.glob("*.toml"))
TEACHERS = [p for p in CONFIGS if p.name.startswith("teacher-")]
SECRET_NAME = re.compile(r"(^|_)(TOKEN|SECRET|PASSWORD|API_KEY|CREDENTIALS?)$", re.IGNORECASE)


def load(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def source_env(config: dict) -> dict:
    (source,) = config["orchestrator"]["train"]["source"]
    return source["env"]


def walk(value, where=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, f"{where}[{i}]")
    else:
        yield where, value


def test_the_hosted_configs():
    assert [p.name for p in CONFIGS] == ["student-hard-only-e1.toml", "teacher-e1.toml", "teacher-e2.toml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_prime_rl_rl_config_without_local_paths_or_unforwarded_secrets(path):
    config = load(path)
    # prime 0.18 refuses a top-level `model = "..."` or [[env]] (the retired shared-LoRA layout) outright
    assert isinstance(config["model"], dict) and "env" not in config
    (source,) = config["orchestrator"]["train"]["source"]
    # group_size on the source: prime-rl's main of Aug 2026 also has [orchestrator] group_size, its newer layout
    # [orchestrator.train] group_size; neither accepts the other's (docs/hosted.md)
    assert "group_size" not in config["orchestrator"] and "group_size" not in config["orchestrator"]["train"]
    assert config["model"]["name"] and config["orchestrator"]["batch_size"] % source["group_size"] == 0
    agent = source["env"].get("teacher") or source["env"]["agent"]
    assert agent["retries"]["max_retries"] >= 1  # a failed generation is run again before it counts as failed
    assert config["orchestrator"]["train"]["sampling"]["temperature"] == 1.0  # SOAR samples at 1.0
    taskset = source_env(config)["taskset"]
    assert taskset["id"].startswith("sv-soar/") and "task" not in taskset  # `task` is the taskset's reserved key
    for key in ("env_file", "env_files"):
        assert key not in config, f"{path.name}: {key} (prime forwards only WANDB_API_KEY and HF_TOKEN)"
    for where, value in walk(config):
        name = where.rsplit(".", 1)[-1]
        assert not SECRET_NAME.search(name), f"{path.name}: {where} looks like a secret"
        if isinstance(value, str):
            assert not value.startswith(("/", "~", "./", "../")) and ":\\" not in value, \
                f"{path.name}: {where} = {value!r} is a path of this machine"


@pytest.mark.parametrize("path", TEACHERS, ids=lambda p: p.stem)
def test_teacher_config_is_one_outer_step_an_episode(path):
    config = load(path)
    env = source_env(config)
    args = env["taskset"]
    (source,) = config["orchestrator"]["train"]["source"]
    assert source["group_size"] == 1  # the g datasets are compared inside one episode
    assert config["orchestrator"]["concurrency"]["max_inflight"] == 1  # one outer step at a time
    assert config["orchestrator"]["batch_size"] == args["g"] * args["n"]  # a trainer step: one step's traces
    assert args["model"] == config["model"]["name"]  # SOAR: teacher and students start from the same model
    assert args["floor"] == "neutral" and args["svbench_task"] == path.stem.split("-")[1]
    assert "students_token" not in args  # the token comes from the env server's environment, never the config
    assert env["teacher"]["harness"]["id"] == "null"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_hosted_lora_trains_at_the_calibrated_rate(path):
    """One learning-rate story: every hosted LoRA config, and `sv-soar export-vf --prime-rl` for a LoRA final
    student (tests/test_export_vf.py), train at the project's calibrated LoRA rate, not SOAR's full-fine-tuning
    1e-5 (sv_soar/student/config.py)."""
    from sv_soar.student.config import LORA_LEARNING_RATE

    config = load(path)
    assert "lora" in config["trainer"]["model"]
    assert config["trainer"]["optim"]["lr"] == LORA_LEARNING_RATE
