"""LoRA adapters: the one adapter-folder writer (the one LoRA config builder is sv_soar.student.config.lora_config), the students' adapters on the
shared model, and the baseline student's storage (a peft adapter folder + baseline.json: `save_baseline`,
`load_baseline`; the Baseline itself is sv_soar.baseline's, which imports no ML library)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file

# peft and safetensors.torch are imported inside the functions that use them: peft imports transformers
# (seconds), which a process that only reads baselines' weights or writes adapter folders never needs.
from sv_soar.baseline import Baseline
from sv_soar.student.config import lora_config
from sv_soar.student.full_finetune import FULL_WEIGHTS, write_full_weights, write_safetensors

if TYPE_CHECKING:
    from sv_soar.student.config import StudentTrainConfig

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's file name, read by PeftModel.load_adapter and vLLM


def write_adapter(folder: str | Path, config: Any, state: dict[str, torch.Tensor], *, atomic: bool = False) -> Path:
    """A peft adapter folder: adapter_config.json and the weights (`atomic`: written beside, then renamed)."""
    folder = Path(folder)
    config.save_pretrained(str(folder))
    write_safetensors(folder / ADAPTER_WEIGHTS, state, atomic=atomic)
    return folder


# --- students' adapters on the shared model ---------------------------------------------------------


# peft cannot hold a PeftModel with no adapter at all (its forward looks the active one up), so the
# shared policy always keeps this one: peft's default init (lora_B = 0) computes the base model exactly.
BASE_POLICY_ADAPTER = "sv-soar-base"


def student_policy(model, config: StudentTrainConfig):
    """Wrap the base model ONCE per process into the PeftModel that every student adapter lives on.

    Build the engine from the result (`TransformersEngine(policy, tokenizer)`), so that generation and
    training see the same adapters. Returns `model` unchanged when it already is a PeftModel.
    With config.finetune = "full" no student is an adapter: the bare model, frozen, is the shared one
    (sv_soar.student.full_finetune).
    """
    from peft import PeftModel, get_peft_model  # heavy: peft

    if isinstance(model, PeftModel):
        return model
    if config.finetune == "full":
        for param in model.parameters():
            param.requires_grad_(False)
        return model.eval()
    policy = get_peft_model(model, config.lora_config(), adapter_name=BASE_POLICY_ADAPTER)
    for param in policy.parameters():
        param.requires_grad_(False)
    policy.eval()
    return policy


def adapter_state_dict(policy, adapter_name: str) -> dict[str, torch.Tensor]:
    """The adapter's LoRA weights as detached CPU copies, keyed as peft saves them."""
    from peft import get_peft_model_state_dict  # heavy: peft

    state = get_peft_model_state_dict(policy, adapter_name=adapter_name)
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def add_student_adapter(policy, adapter_name: str, config: StudentTrainConfig, init_adapter_state=None) -> list:
    """Add a LoRA adapter to the shared PeftModel, make it active and the only trainable weights.

    With `init_adapter_state` (e.g. the current baseline student's `adapter_state`) the adapter starts
    from those weights; otherwise from peft's default init (A random, B zero: the base model's policy).
    Returns the adapter's parameters, the ones the optimizer may touch.
    """
    from peft import set_peft_model_state_dict  # heavy: peft

    policy.add_adapter(adapter_name, config.lora_config())
    if init_adapter_state is not None:
        result = set_peft_model_state_dict(policy, init_adapter_state, adapter_name=adapter_name)
        missing = [k for k in result.missing_keys if f".{adapter_name}." in k and "lora_" in k]
        if missing or result.unexpected_keys:
            policy.delete_adapter(adapter_name)
            raise ValueError(
                f"init_adapter_state does not fit a rank-{config.lora_rank} LoRA on "
                f"{config.lora_target_modules}: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
            )
    policy.set_adapter(adapter_name)
    trainable = []
    for name, param in policy.named_parameters():
        mine = "lora_" in name and f".{adapter_name}." in name
        param.requires_grad_(mine)
        if mine:
            trainable.append(param)
    return trainable


def reference_adapter_name(adapter_name: str) -> str:
    """The frozen copy of a student's starting weights that its KL is taken against (`add_reference_adapter`)."""
    return f"{adapter_name}-ref"


def add_reference_adapter(policy, adapter_name: str, config: StudentTrainConfig, init_adapter_state) -> str:
    """A frozen adapter beside student `adapter_name` holding the weights it starts from (the promoted baseline's),
    so that its KL is taken against where it started, not against the base model (docs/design.md §4: a student
    copied from a promoted baseline has zero KL at its first step). Never trainable, never active for sampling;
    `remove_student_adapter(policy, adapter_name)` removes it too. Returns its name."""
    from peft import set_peft_model_state_dict  # heavy: peft

    name = reference_adapter_name(adapter_name)
    policy.add_adapter(name, config.lora_config())
    set_peft_model_state_dict(policy, init_adapter_state, adapter_name=name)
    for param_name, param in policy.named_parameters():
        if f".{name}." in param_name:
            param.requires_grad_(False)
    return name


def remove_student_adapter(policy, adapter_name: str) -> None:
    """Delete a student's adapter (and its reference adapter, if any) from the shared model (its `StudentRun`
    keeps the weights); nothing to do on a bare model (student.finetune = "full")."""
    reference = reference_adapter_name(adapter_name)
    if reference in getattr(policy, "peft_config", {}) and reference not in policy.active_adapters:
        policy.delete_adapter(reference)
    if adapter_name not in getattr(policy, "peft_config", {}):
        return
    if adapter_name in policy.active_adapters:  # hand "active" back first, or peft warns and picks one
        others = [name for name in policy.peft_config if name != adapter_name]
        if others:
            policy.set_adapter(BASE_POLICY_ADAPTER if BASE_POLICY_ADAPTER in others else others[0], inference_mode=True)
    policy.delete_adapter(adapter_name)


@contextlib.contextmanager
def student_adapter(policy, adapter_name: str) -> Iterator[str]:
    """`with student_adapter(policy, name): run = train_student(..., adapter_name=name)` removes it afterwards."""
    try:
        yield adapter_name
    finally:
        remove_student_adapter(policy, adapter_name)


# --- the baseline student ------------------------------------------------------------------------------


def load_baseline(folder: str | Path) -> Baseline:
    """Read a folder written by `save_baseline` (or any peft LoRA adapter folder, e.g. `StudentRun.save`, or a
    fully fine-tuned student's model.safetensors)."""
    from peft import LoraConfig  # heavy: peft

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such baseline folder")
    info: dict[str, Any] = {}
    if (folder / "baseline.json").is_file():
        info = json.loads((folder / "baseline.json").read_text(encoding="utf-8"))
    name = str(info.get("name") or folder.name)
    if (folder / FULL_WEIGHTS).is_file():
        return Baseline(name, load_file(str(folder / FULL_WEIGHTS)))
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        if info.get("id") == "base":
            return Baseline(name)
        raise FileNotFoundError(f"{folder}: no adapter_model.safetensors (not a peft adapter folder)")
    lora_config = LoraConfig.from_pretrained(str(folder)) if (folder / "adapter_config.json").is_file() else None
    return Baseline(name, load_file(str(weights)), lora_config=lora_config)


def save_baseline(baseline: Baseline, folder: str | Path, *, config: StudentTrainConfig | None = None) -> Path:
    """Write a peft adapter folder (adapter_config.json + adapter_model.safetensors) and baseline.json;
    full weights go to model.safetensors instead.

    The folder appears whole or not at all (written beside, then renamed over any old one). The LoRA
    config is `baseline.lora_config`, else `config.lora_config()`, else read off the weights: rank from
    lora_A, target modules from the keys, alpha = 2·rank (the project's α/r = 2, StudentTrainConfig).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        if baseline.full_weights:
            write_full_weights(tmp, baseline.adapter_state)
        elif baseline.adapter_state is not None:
            lora_config = baseline.lora_config or (
                config.lora_config() if config else _lora_config_of(baseline.adapter_state))
            write_adapter(tmp, lora_config, baseline.adapter_state)
        (tmp / "baseline.json").write_text(json.dumps({"name": baseline.name, "id": baseline.id}, indent=1))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(folder, old)
        os.rename(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _lora_config_of(state: dict[str, torch.Tensor]):
    ranks = {v.shape[0] for k, v in state.items() if "lora_A" in k}
    modules = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state if ".lora_" in k})
    if len(ranks) != 1 or not modules:
        raise ValueError("cannot read a LoRA config off these weights: pass config= to save_baseline")
    rank = ranks.pop()
    return lora_config(rank, 2 * rank, modules)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
