"""Full fine-tuning (student.finetune / teacher.finetune = "full"): every parameter trained, on a copy.

A LoRA student is an adapter on the one shared base model. A fully fine-tuned student needs weights of its
own, so a process keeps the shared base model frozen (the KL reference, and the weights every student
starts from) and ONE trainable copy beside it (`trainable_copy`), which each student run loads and trains
in turn: students of a step never see each other's updates, and the base stays untouched. A full
student's weights are the copy's whole state dict (`full_state_dict`): what StudentRun.adapter_state,
Baseline.adapter_state and the reward cache hold in place of LoRA weights. The two never mix up: peft's
LoRA keys always name lora_A / lora_B, a model's own keys never do (`sv_soar.baseline.is_full_state`).

The teacher's "full" mode trains its model in place and keeps a frozen copy of the initial model as the
KL reference (sv_soar.teacher_policy.Teacher).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sv_soar.jsonl import atomic_path

FULL_WEIGHTS = "model.safetensors"  # transformers' file name: with the config.json beside it, a model folder


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """Every weight of `model` as a detached CPU copy (tied weights become two copies, as safetensors needs)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def frozen_copy(model):
    """A deep copy of `model` in eval mode with no trainable parameter (the teacher's KL reference)."""
    duplicate = copy.deepcopy(model)
    for param in duplicate.parameters():
        param.requires_grad_(False)
    return duplicate.eval()


def trainable_copy(model):
    """A deep copy of `model` in fp32 with every parameter trainable: where full students train (the original
    is not touched). fp32 as the LoRA weights are on a bf16 base (sv_soar.models.default_dtype): a bf16
    weight drops an update below ~1/256 of itself, and AdamW's steps at lr 1e-5 are far below that. Eval
    mode; the trainer switches it to train mode for its updates."""
    duplicate = copy.deepcopy(model).float()
    for param in duplicate.parameters():
        param.requires_grad_(True)
    return duplicate.eval()


def load_full_state(model, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy a full state dict into `model` in place; weights of another model are a ValueError naming `where`."""
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{where}: these weights are not this model's: missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]} (LoRA weights where student.finetune or "
                         "teacher.finetune = \"full\"?)")


def write_full_weights(folder: str | Path, state: dict[str, torch.Tensor], model_config: Any = None, *,
                       atomic: bool = False) -> Path:
    """A folder with model.safetensors (and the model's config.json when given: then transformers loads it as a
    model); `atomic`: the weights are written beside, then renamed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if model_config is not None:
        model_config.save_pretrained(str(folder))
    write_safetensors(folder / FULL_WEIGHTS, state, atomic=atomic)
    return folder


def write_safetensors(path: Path, state: dict[str, torch.Tensor], *, atomic: bool = False) -> None:
    """Tensors to a safetensors file (made contiguous, as it needs); `atomic`: written beside, then renamed."""
    weights = {k: v.contiguous() for k, v in state.items()}
    if atomic:
        with atomic_path(path) as tmp:
            save_file(weights, str(tmp))
    else:
        save_file(weights, str(path))


class StoredWeights(Mapping):
    """Full weights in a safetensors file, read one tensor at a time: a step keeps its r·g students (the
    promotion candidates) until the promotion, and that many whole models do not fit in memory (16 of a 3B
    model are ~190 GB in fp32). The scorer writes each kept student to its reward-cache file and keeps this."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with safe_open(str(self.path), framework="pt") as weights:
            self._keys = list(weights.keys())
        self._known = set(self._keys)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._known:
            raise KeyError(key)
        with safe_open(str(self.path), framework="pt") as weights:
            return weights.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
