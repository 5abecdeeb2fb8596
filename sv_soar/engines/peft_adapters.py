"""LoRA adapters in TransformersEngine's batches, through peft: loading and unloading them, and running a batch
under one adapter or under several at once (peft's mixed-adapter inference: `adapter_names=`, "__base__" = the
bare model) where peft allows it (not for DoRA or merged adapters); otherwise the engine groups rows by adapter.

When the engine wraps a bare model in a PeftModel (first `load_adapter`), it keeps the adapter layers disabled
outside `generate`, so another holder of the same base model (the student trainer) still computes with the bare
model; unloading the last adapter removes the LoRA layers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

log = logging.getLogger("sv_soar.engines.transformers_engine")  # the engine's log, under the name it has always had

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


class PeftAdapters:
    """TransformersEngine's adapters. It reads and replaces the engine's `model`, and keeps `_wrapped_by_engine`,
    `_enabled_depth` and `_mixed_batches_ok` (set in the engine's __init__)."""

    def load_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel  # heavy: peft, loaded with the first adapter, not with every engine

        if name == BASE_ADAPTER:
            raise ValueError(f"{BASE_ADAPTER!r} is peft's name for the bare model; pick another adapter name")
        was_training = self.model.training  # peft puts the model in eval mode; the owner may be training it
        if not isinstance(self.model, PeftModel):
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)  # frozen, inference only
            self._wrapped_by_engine = True
        else:
            if name in self.model.peft_config:
                raise ValueError(f"adapter {name!r} is already loaded; unload it first")
            self.model.load_adapter(path, adapter_name=name)
        if self._wrapped_by_engine:
            self.model.base_model.disable_adapter_layers()  # see the class docstring
        self.model.train(was_training)
        self._mixed_batches_ok = None

    def unload_adapter(self, name: str) -> None:
        if name not in self.loaded_adapters():
            raise KeyError(f"adapter {name!r} is not loaded; loaded: {self.loaded_adapters()}")
        if self._wrapped_by_engine and self.loaded_adapters() == [name]:
            self.model = self.model.unload()  # removes the LoRA layers from the shared base model
            self._wrapped_by_engine = False
        else:
            self.model.delete_adapter(name)
        self._mixed_batches_ok = None

    @property
    def mixed_adapter_batches(self) -> bool:
        """Whether rows under different adapters share a batch (peft's mixed-adapter inference)."""
        return not self._is_peft() or self._supports_mixed_batches()

    def loaded_adapters(self) -> list[str]:
        return sorted(getattr(self.model, "peft_config", {}) or {})

    def _adapter_per_prompt(
        self, count: int, adapters: Sequence[str | None] | str | None
    ) -> list[str | None]:
        if adapters is None or isinstance(adapters, str):
            per_prompt = [adapters] * count
        else:
            per_prompt = list(adapters)
            if len(per_prompt) != count:
                raise ValueError(f"adapters names {len(per_prompt)} adapters for {count} prompts")
        unknown = {name for name in per_prompt if name is not None} - set(self.loaded_adapters())
        if unknown:
            raise KeyError(f"adapter(s) {sorted(unknown)} not loaded; loaded: {self.loaded_adapters()}")
        return per_prompt

    def _is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def _supports_mixed_batches(self) -> bool:
        """Whether peft accepts `adapter_names=` for the loaded adapters: LoRA only, none merged,
        no DoRA, no LoRA on nn.MultiheadAttention (peft's own checks in lora/layer.py). Decided by
        inspection, not by trying: peft leaves its forward hooks registered when a call raises."""
        if self._mixed_batches_ok is None:
            from peft.tuners.lora import LoraLayer  # heavy: peft, as PeftModel above

            ok = all(config.peft_type == "LORA" for config in self.model.peft_config.values())
            for module in self.model.modules():
                if isinstance(module, LoraLayer) and (
                    module.merged or any(module.use_dora.values()) or type(module).__name__ == "MultiheadAttention"
                ):
                    ok = False
            if not ok:
                log.info("peft cannot mix these adapters in one batch: grouping rows by adapter")
            self._mixed_batches_ok = ok
        return self._mixed_batches_ok

    @contextlib.contextmanager
    def _adapter_layers_enabled(self) -> Iterator[None]:
        """Adapter layers on for the duration (re-entrant); see the class docstring for why."""
        if not self._wrapped_by_engine or self._enabled_depth:
            self._enabled_depth += 1
            try:
                yield
            finally:
                self._enabled_depth -= 1
            return
        self.model.base_model.enable_adapter_layers()
        self._enabled_depth += 1
        try:
            yield
        finally:
            self._enabled_depth -= 1
            self.model.base_model.disable_adapter_layers()

    @contextlib.contextmanager
    def _single_adapter(self, name: str | None) -> Iterator[None]:
        """Run under one adapter (or the bare model) by switching the active adapter; used when every
        row has the same adapter, or peft cannot mix adapters in a batch. Restores the active adapter
        and requires_grad."""
        if name is None:
            with self.model.disable_adapter():
                yield
            return
        previous = list(self.model.base_model.active_adapters)
        requires_grad = {p: p.requires_grad for p in self.model.parameters()}
        self.model.base_model.set_adapter(name)
        try:
            yield
        finally:
            self.model.base_model.set_adapter(previous)
            for param, flag in requires_grad.items():
                param.requires_grad_(flag)
