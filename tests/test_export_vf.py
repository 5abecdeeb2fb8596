"""`sv-soar export-vf` and `sv-soar evaluate --adapter`: the final students' training set and a trainer config
for verifiers' own trainer, read back by the real student environment and by verifiers 0.1.9.post3's RLConfig."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import sv_soar_student
from sv_soar.export_vf import export
from sv_soar.jsonl import read_jsonl
from sv_soar.student.config import LORA_LEARNING_RATE, StudentTrainConfig
from sv_soar.tasks.e1.flows import generate_e1_flows
from tests.tiny_runs import make_run

VF_019 = "verifiers-0.1.9.post3-py3-none-any.whl"


def wheel_folder() -> Path:
    return Path(os.environ.get("SV_SOAR_WHEELS", Path.home() / ".cache" / "sv-soar" / "wheels"))


def rl_config_class(tmp_path: Path):
    """verifiers 0.1.9.post3's RLConfig, loaded from its wheel's verifiers/rl/trainer/config.py alone: that file
    needs only peft and transformers, but its package __init__ imports the trainer (deepspeed, wandb, a GPU
    stack), so neither `import verifiers.rl.trainer` nor an isolated venv without those would load it."""
    wheel = wheel_folder() / VF_019
    if not wheel.is_file():
        pytest.skip(f"{wheel} not found (no network in tests): fetch it once with "
                    f"`pip download --no-deps verifiers==0.1.9.post3 -d {wheel_folder()}`")
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("verifiers/rl/trainer/config.py")
    path = tmp_path / "vf019_rl_config.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("vf019_rl_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RLConfig


def test_export_is_pq_and_d_train_and_vf_trains_own_config_loads_it(tmp_path, tiny_model_dir):
    promoted = generate_e1_flows(3, seed=7)
    run = make_run(tmp_path, tiny_model_dir, promoted=promoted)
    written = export(run, tmp_path / "out")
    rows = read_jsonl(written["train"])
    assert [r["question"] for r in rows] == [r["question"] for r in promoted + run.d_train()]  # PQ ∪ D_train

    config = tomllib.loads(written["config"].read_text(encoding="utf-8"))
    student = run.config.final_student_config()
    args = config["trainer"]["args"]
    assert config["model"] == str(tiny_model_dir)
    assert (args["lora_rank"], args["lora_alpha"], args["lora_target_modules"]) == (2, 4, ["q_proj"])
    assert args["rollouts_per_example"] == student.group_size
    assert args["batch_size"] == student.batch_prompts * student.group_size
    assert args["max_tokens"] == student.max_new_tokens and args["learning_rate"] == student.learning_rate

    env = sv_soar_student.load_environment(**config["env"]["args"])  # the real student env reads the export
    assert config["env"]["id"] == "sv-soar-student" and len(env.dataset) == len(rows)

    # use_cpu: RLConfig defaults to bf16 and refuses it on a machine without a GPU; the export targets a GPU
    rl_config = rl_config_class(tmp_path)(**{**args, "output_dir": str(tmp_path / "vf"), "use_cpu": True})
    assert rl_config.lora_config.r == 2 and rl_config.lora_config.lora_alpha == 4
    assert set(rl_config.lora_config.target_modules) == {"q_proj"}
    assert rl_config.batch_size == args["batch_size"] and rl_config.max_steps == args["max_steps"]
    assert rl_config.sampling_args["max_tokens"] == student.max_new_tokens


def test_a_fully_fine_tuned_run_exports_trainer_configs_without_lora(tmp_path, tiny_model_dir):
    from sv_soar.export_vf import prime_rl_config, vf_train_config

    lora, full = make_run(tmp_path / "lora", tiny_model_dir), make_run(tmp_path / "full", tiny_model_dir, finetune="full")
    assert vf_train_config(lora, tmp_path / "t.jsonl", "m")["trainer"]["args"]["use_lora"] is True
    assert vf_train_config(full, tmp_path / "t.jsonl", "m")["trainer"]["args"]["use_lora"] is False
    assert prime_rl_config(lora, "rows", "m")["trainer"]["model"]["lora"]["rank"] == 2
    assert "model" not in prime_rl_config(full, "rows", "m")["trainer"]


def test_hard_only_exports_d_train_alone_and_prime_rl_layout(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir)
    assert run.config.run.method == "hard-only"
    result = subprocess.run([sys.executable, "-m", "sv_soar.cli", "export-vf", str(run.folder), "--prime-rl"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = run.folder / "export-vf"
    assert len(read_jsonl(out / "train.jsonl")) == len(run.d_train())
    config = tomllib.loads((out / "prime-rl.toml").read_text(encoding="utf-8"))
    # prime 0.18 refuses the old layout (top-level model, [[env]]); the v1 student taskset names packaged rows
    assert config["model"]["name"] and "env" not in config
    [source] = config["orchestrator"]["train"]["source"]
    taskset = source["env"]["taskset"]
    assert taskset["id"] == "sv-soar/sv-soar-student-v1" and taskset["svbench_task"] == "e1"
    assert not taskset["rows"].startswith("/")  # a name packaged into the env, never a path of this machine
    assert "group_size" not in config["orchestrator"]  # on the source: both live prime-rl layouts accept it there
    assert config["orchestrator"]["batch_size"] % source["group_size"] == 0
    assert source["env"]["agent"]["retries"]["max_retries"] >= 1
    # the same LoRA rate as configs/hosted/student-hard-only-e1.toml: a hosted Hard-only baseline and a SOAR
    # final student train alike (the run's student learning_rate, by default the calibrated LoRA rate)
    hard_only = tomllib.loads((Path(__file__).resolve().parents[1] / "configs" / "hosted" /
                               "student-hard-only-e1.toml").read_text(encoding="utf-8"))
    assert config["trainer"]["optim"]["lr"] == run.config.final_student_config().learning_rate
    assert hard_only["trainer"]["optim"]["lr"] == LORA_LEARNING_RATE == StudentTrainConfig().learning_rate
    assert config["orchestrator"]["train"]["sampling"]["temperature"] == 1.0
    assert f"package-env {out / 'train.jsonl'}" in result.stdout and f"--name {taskset['rows']}" in result.stdout
    assert "prime train" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "sv_soar.cli", "export-vf", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no such run folder" in bad.stderr


@pytest.mark.slow
def test_evaluate_adapter_scores_a_trained_adapter(tmp_path, tiny_model_dir):
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.models import load_model
    from sv_soar.tasks import get_task
    from sv_soar.student.trainer import student_policy, train_student

    run = make_run(tmp_path, tiny_model_dir)
    config = run.config.final_student_config()
    model, tokenizer = load_model(str(tiny_model_dir))
    policy = student_policy(model, config)
    student = train_student(policy, TransformersEngine(policy, tokenizer), get_task("e1"), run.d_train(), config,
                            adapter_name="elsewhere", seed=0, log=lambda entry: None)
    adapter = student.save(tmp_path / "trained-elsewhere")
    result = subprocess.run([sys.executable, "-m", "sv_soar.cli", "evaluate", str(run.folder), "--adapter",
                             str(adapter), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run.folder / "evaluation" / "adapter-trained-elsewhere.json").read_text())
    assert report["seeds"][0]["sets"]["d_test"]["problems"] == len(run.d_test())
    assert "pass@1" in report["summary"]["d_test"] and "d_test" in report["base"]
    missing = subprocess.run([sys.executable, "-m", "sv_soar.cli", "evaluate", str(run.folder), "--adapter",
                              str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "not a peft adapter folder" in missing.stdout


def test_the_verifiers_trainer_option_names_what_it_needs(tmp_path):
    from sv_soar.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as error:
        parse_config({"data": {"hard_set": str(tmp_path)}, "student": {"trainer": "verifiers"}}, origin="run.toml")
    message = str(error.value)
    assert message.startswith("run.toml: student:")
    assert "verifiers==0.1.9.post3" in message and "deepspeed" in message and "a CUDA GPU" in message
    assert "sv-soar export-vf" in message
    assert parse_config({"data": {"hard_set": str(tmp_path)}}).student.trainer == "sv-soar"


def test_options_the_trainers_there_lack_are_named_in_the_exported_config(tmp_path, tiny_model_dir):
    """student.optimizer and student.batching have no counterpart in vf-train or prime-rl: a run that sets them gets
    a config that says they were not carried over; a run at the defaults gets no such line."""
    plain = export(make_run(tmp_path / "plain", tiny_model_dir), tmp_path / "out-plain")["config"].read_text()
    assert "NOT carried over" not in plain
    run = make_run(tmp_path / "balanced", tiny_model_dir, batching="balanced", optimizer="sgd")
    text = export(run, tmp_path / "out-balanced", prime_rl=True)["config"].read_text()
    assert '# NOT carried over (no such option there): student.optimizer = "sgd", student.batching = "balanced"' in text
    tomllib.loads(text)  # still a valid TOML
