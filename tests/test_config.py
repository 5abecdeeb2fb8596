"""The TOML experiment config: paper defaults, errors that name file and key, and resume's diff."""

from __future__ import annotations

import re
import tomllib

import pytest

from sv_soar.config import ConfigError, config_diff, dump_toml, load_config, parse_config


def write(tmp_path, text: str):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_papers(tmp_path):
    config = load_config(write(tmp_path, '[data]\nhard_set = "hs"\n'))
    assert (config.teacher.g, config.teacher.n, config.soar.students, config.soar.q_r) == (4, 64, 4, 64)
    assert (config.soar.tau, config.soar.window, config.soar.grounding) == (0.01, 3, "correctness")
    assert (config.student.steps, config.student.batch_prompts, config.student.group_size) == (10, 8, 32)
    # warmup 0, not SOAR's 20: a short run's first update would be 1/20 of the rate (tests/test_soar_defaults.py);
    # the learning rates are LoRA's calibrated 1e-3, SOAR's 1e-5 with full fine-tuning (test_soar_defaults.py)
    assert config.student.learning_rate == 1e-3 and config.teacher.warmup_steps == 0
    assert config.rollouts_per_step == 256
    assert config.data.hard_set == (tmp_path / "hs").resolve()  # relative to the config file


def test_errors_name_the_file_and_every_bad_key(tmp_path):
    path = write(tmp_path, '[data]\nhard_set = "hs"\n[soar]\nq_r = 0\ntua = 0.1\n[student]\nestimator = "ppo"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}: soar.q_r: Input should be greater than or equal to 1" in message
    assert f"{path}: soar.tua: unknown key" in message
    assert f"{path}: student.estimator:" in message


def test_missing_section_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="data: Field required"):
        load_config(write(tmp_path, "[run]\nseed = 1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[run\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_student_section_keeps_the_trainers_own_checks(tmp_path):
    with pytest.raises(ConfigError, match="maxrl"):
        load_config(write(tmp_path, '[data]\nhard_set = "hs"\n[student]\nestimator = "maxrl"\nreward = "full"\n'))


def test_resolved_config_round_trips_through_toml_and_diffs_by_key(tmp_path):
    config = load_config(write(tmp_path, '[data]\nhard_set = "hs"\n[soar]\nq_r = 8\n'))
    text = dump_toml(config.resolved())
    again = parse_config(tomllib.loads(text))
    assert again.resolved() == config.resolved()
    changed = load_config(write(tmp_path, '[data]\nhard_set = "hs"\n[soar]\nq_r = 16\n'), {"run.seed": 3})
    assert config_diff(config.resolved(), changed.resolved()) == ["run.seed: 0 != 3", "soar.q_r: 8 != 16"]
    assert changed.student_train_config().steps == 10


def test_score_flags_build_the_run_config_train_reads(tmp_path):
    """`sv-soar score`'s flags are keys of the same RunConfig (and --preset the student section's presets)."""
    import argparse

    from sv_soar.commands import score
    from sv_soar.config import RunConfig
    from sv_soar.tasks import scoring_task
    from sv_soar.student.config import StudentTrainConfig

    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    flags = ["--dataset", "x.jsonl", "--hard-set", str(tmp_path), "--preset", "cpu", "--q-r", "8", "--students", "2",
             "--seed", "3", "--grounding", "full", "--model", "tiny"]
    config = score.run_config(parser.parse_args([*flags, "--task", "e1+e2"]))
    assert isinstance(config, RunConfig) and scoring_task(config).name == "e1+e2"
    assert (config.data.task, config.teacher.task, config.data.hard_set) == ("e2", "e1", tmp_path.resolve())
    assert (config.soar.q_r, config.soar.students, config.soar.grounding, config.run.seed) == (8, 2, "full", 3)
    assert config.student.model == "tiny" and config.student_train_config() == StudentTrainConfig.cpu_small()
    assert score.run_config(parser.parse_args(flags)).teacher.task is None  # --task e1: teacher.task defaults
    with pytest.raises(ConfigError, match="data.task: .*unknown task 'e3'"):
        score.run_config(parser.parse_args([*flags, "--task", "e3"]))


def test_teacher_env_arguments_are_the_keys_a_config_sets(tmp_path):
    from sv_soar.config import teacher_env_arguments

    path = write(tmp_path, '[data]\ntask = "e2"\nhard_set = "hs"\n[teacher]\ng = 3\nlearning_rate = 1e-3\n'
                           '[student]\nmodel = "m"\nsteps = 2\n[soar]\nfloor = "neutral"\n[evaluation]\nsamples = 4\n')
    assert teacher_env_arguments(path) == {
        "hard_set": str((tmp_path / "hs").resolve()), "hard_set_task": "e2", "svbench_task": "e2", "g": 3, "model": "m",
        "floor": "neutral", "student": {"steps": 2}}  # the teacher's optimiser and [evaluation]: not the env's
    arguments = teacher_env_arguments({"teacher": {"task": "e1"}, "data": {"task": "e2", "hard_set": "/h"}})
    assert arguments["svbench_task"] == "e1"
    assert teacher_env_arguments({}) == {}
    with pytest.raises(ConfigError, match=r"config: teacher\.gg: unknown key"):
        teacher_env_arguments({"teacher": {"gg": 3}})
    with pytest.raises(ConfigError, match=r"config: soar\.q_r: .*greater than or equal to 1"):
        teacher_env_arguments({"soar": {"q_r": 0}})


def test_the_teacher_env_config_takes_its_defaults_from_the_run_config():
    """One default each: every run-config key a teacher env reads has the run config's default in TeacherEnvConfig
    (both teacher envs' config), and num_prompts is run.outer_steps."""
    from sv_soar.config import TEACHER_ENV_ARGUMENTS
    from sv_soar.teacher_env_config import TeacherEnvConfig

    env, run = TeacherEnvConfig(), parse_config({"data": {"hard_set": "hs"}})
    # data.hard_set is required of a run config (the env's is a folder or a packaged name); data.task and teacher.task
    # are the env's hard_set_task and svbench_task, whose defaults mean "the other one"
    for dotted in set(TEACHER_ENV_ARGUMENTS) - {"data.hard_set", "data.task", "teacher.task"}:
        section, key = dotted.split(".")
        assert getattr(env, TEACHER_ENV_ARGUMENTS[dotted]) == getattr(getattr(run, section), key), dotted
    assert (env.svbench_task, env.hard_set_task, run.data.task, run.teacher.task) == ("e1", None, "e1", None)
    assert env.num_prompts == run.run.outer_steps == 200


def test_an_env_section_describes_the_rest_of_a_teacher_env(tmp_path):
    """[env]: what only a teacher env has, in the run config's own file. One `sv-soar train` TOML then describes a
    teacher env whole: TeacherEnvConfig gets [env]'s keys (paths relative to the file, env.hard_set a packaged name
    over data.hard_set), run.outer_steps as num_prompts, and the [student] keys over env.preset."""
    from sv_soar.teacher_env_config import teacher_env_config

    path = write(tmp_path, '[data]\nhard_set = "hs"\n[run]\nouter_steps = 5\n[student]\nsteps = 2\n[env]\n'
                           'preset = "cpu"\nrun_dir = "run"\nreward_cache = "cache"\nmax_concurrent_scorings = 2\n')
    env = teacher_env_config(str(path))
    assert (env.preset, env.run_dir, env.reward_cache) == ("cpu", str(tmp_path / "run"), str(tmp_path / "cache"))
    assert (env.max_concurrent_scorings, env.num_prompts, env.hard_set) == (2, 5, str(tmp_path / "hs"))
    assert env.student_train_config().steps == 2 and env.student_train_config().group_size == 4  # cpu's, overridden
    path.write_text(path.read_text() + 'hard_set = "e1-t01"\n')
    assert teacher_env_config(str(path)).hard_set == "e1-t01"  # the v1 env's packaged name, never resolved
    assert teacher_env_config(str(path), preset="paper").preset == "paper"  # keyword arguments still win
    # `sv-soar train` checks the section and runs without it: the run folder's config.toml is the run's
    config = load_config(path)
    assert config.env.preset == "cpu" and "env" not in config.resolved()
    with pytest.raises(ConfigError, match=r"exp\.toml: env\.presets: unknown key"):
        load_config(write(tmp_path, '[data]\nhard_set = "hs"\n[env]\npresets = "cpu"\n'))
    with pytest.raises(ConfigError, match=r"config: env\.max_concurrent_scorings: .*greater than or equal to 1"):
        teacher_env_config({"env": {"max_concurrent_scorings": 0}})


def test_a_config_without_an_env_section_dumps_as_before(tmp_path):
    """[env] is new: a config without it resolves to the same sections, in the same order, as before it was added
    (run folders' config.toml, resume's diff and the tracker's config are unchanged), and so does one with it."""
    config = load_config(write(tmp_path, '[data]\nhard_set = "hs"\n'))
    sections = ["run", "data", "teacher", "student", "soar", "evaluation", "compute", "logging"]
    assert list(config.resolved()) == sections
    assert re.findall(r"(?m)^\[(\w+)\]$", dump_toml(config.resolved())) == sections
    with_env = load_config(write(tmp_path, '[data]\nhard_set = "hs"\n[env]\npreset = "cpu"\n'))
    assert with_env.resolved() == config.resolved() and not config_diff(config.resolved(), with_env.resolved())


def test_the_env_only_defaults_are_defined_once():
    """TeacherEnvConfig's env-only fields take their defaults from [env] (sv_soar.env_section), as its other fields
    take theirs from the other sections: every [env] key maps to the TeacherEnvConfig field of the same name."""
    from sv_soar.config import TEACHER_ENV_ARGUMENTS
    from sv_soar.env_section import EnvSection
    from sv_soar.teacher_env_config import TeacherEnvConfig

    env, section = TeacherEnvConfig(), EnvSection()
    assert {f"env.{key}" for key in EnvSection.model_fields} <= set(TEACHER_ENV_ARGUMENTS)
    for key in EnvSection.model_fields:
        assert TEACHER_ENV_ARGUMENTS[f"env.{key}"] == key and getattr(env, key) == getattr(section, key), key
    # every TeacherEnvConfig field is set by a run-config key ([student]'s keys are `student`)
    assert set(TeacherEnvConfig.model_fields) == set(TEACHER_ENV_ARGUMENTS.values()) | {"student"}


def test_finetune_is_lora_or_full_and_full_students_train_locally(tmp_path):
    """student.finetune / teacher.finetune: "lora" by default, "full" allowed, anything else names the key; full
    students are whole models, which the Ray backend and the student service do not move."""
    config = load_config(write(tmp_path, '[data]\nhard_set = "hs"\n'))
    assert (config.student.finetune, config.teacher.finetune) == ("lora", "lora")
    full = load_config(write(tmp_path, '[data]\nhard_set = "hs"\n[student]\nfinetune = "full"\n'
                                       '[teacher]\nfinetune = "full"\n'))
    assert full.student_train_config().finetune == "full" and full.final_student_config().finetune == "full"
    # the default is not written (run configs and reward-cache keys stay those of runs made before the option);
    # "full" is, and reads back
    assert "finetune" not in config.resolved()["student"] and "finetune" not in config.resolved()["teacher"]
    assert parse_config(tomllib.loads(dump_toml(full.resolved()))).resolved() == full.resolved()
    assert (full.resolved()["student"]["finetune"], full.resolved()["teacher"]["finetune"]) == ("full", "full")
    path = write(tmp_path, '[data]\nhard_set = "hs"\n[student]\nfinetune = "qlora"\n[teacher]\nfinetune = "ful"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}: student.finetune: Input should be 'lora' or 'full'" in str(caught.value)
    assert f"{path}: teacher.finetune: Input should be 'lora' or 'full'" in str(caught.value)
    with pytest.raises(ConfigError, match='student.finetune = "full" is not supported with compute.backend = "ray"'):
        load_config(write(tmp_path, '[data]\nhard_set = "hs"\n[student]\nfinetune = "full"\n[compute]\nbackend = "ray"\n'))
    with pytest.raises(ConfigError, match='student.finetune = "full" is not supported with compute.students_url'):
        load_config(write(tmp_path, '[data]\nhard_set = "hs"\n[student]\nfinetune = "full"\n'
                                    '[compute]\nstudents_url = "http://127.0.0.1:1"\n'))


def test_a_sampled_acc_on_q_r_is_checked_and_named():
    """soar.q_r_samples / q_r_temperature: greedy by default (SOAR's Acc); several samples need a temperature, and
    the student service (which scores greedily) is refused rather than silently scoring another Acc."""
    from sv_soar.config import teacher_env_arguments

    hard_set = {"data": {"hard_set": "hs"}}
    config = parse_config({**hard_set, "soar": {"q_r_samples": 8, "q_r_temperature": 1.0}})
    assert (config.soar.q_r_samples, config.soar.q_r_temperature) == (8, 1.0)
    assert (parse_config(hard_set).soar.q_r_samples, parse_config(hard_set).soar.q_r_temperature) == (1, 0.0)  # SOAR: greedy
    with pytest.raises(ConfigError, match="soar.*greedy answers are all alike"):
        parse_config({**hard_set, "soar": {"q_r_samples": 8}}, origin="run.toml")
    with pytest.raises(ConfigError, match="soar.q_r_temperature = 1.0.*compute.students_url"):
        parse_config({**hard_set, "soar": {"q_r_samples": 8, "q_r_temperature": 1.0},
                      "compute": {"students_url": "http://127.0.0.1:9"}})
    with pytest.raises(ConfigError, match="the teacher env scores Q_R greedily"):  # never a silently greedy env
        teacher_env_arguments({"soar": {"q_r_samples": 8, "q_r_temperature": 1.0}})


def test_every_shipped_run_config_loads_and_its_hard_set_exists():
    """configs/*.toml and the experiments' config.toml: `sv-soar train --config` accepts each, and the hard set
    it names ships with the repository or is built by the experiment's run.sh (runs/...)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    paths = sorted(repo.glob("configs/*.toml")) + sorted(repo.glob("experiments/*/config*.toml"))
    assert repo / "configs/cpu-demo-mechanism.toml" in paths
    for path in paths:
        config = load_config(path)
        hard_set = Path(config.data.hard_set)
        assert hard_set.exists() or "runs" in hard_set.parts, f"{path}: no hard set at {hard_set}"
