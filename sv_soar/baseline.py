"""The baseline student, as the rules of the algorithm see it: a name, and the weights every X_k's students
start from. Its storage (a peft adapter folder + baseline.json) is sv_soar.student.adapters'
`save_baseline` / `load_baseline`; this module imports no ML library, so the promotion rule that makes a
student the baseline (sv_soar.promotion) loads without torch."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def is_full_state(state: Any) -> bool:
    """Whether a student's weights are a whole model's (full fine-tuning) rather than a LoRA adapter's: peft's LoRA
    keys always name lora_A / lora_B, a model's own keys never do (sv_soar.student.full_finetune)."""
    return state is not None and not any("lora_" in key for key in state)


@dataclass
class Baseline:
    """The student every X_k's students start from: the bare model (adapter_state None), a LoRA adapter, or
    (student.finetune = "full") a whole model's weights (`full_weights`).

    SOAR promotes the median-reward student of the best dataset to baseline (docs/design.md §4); its weights
    are the `adapter_state` that `GroundedScorer.score(..., keep_adapters=True)` returns.
    """

    name: str
    adapter_state: dict[str, torch.Tensor] | None = None
    # peft LoraConfig of the weights, when known (a loaded folder's adapter_config.json); only `save_baseline` uses it
    lora_config: Any = field(default=None, repr=False, compare=False)
    _id: tuple[int, str] | None = field(default=None, init=False, repr=False, compare=False)  # (id(state), hash)

    @property
    def id(self) -> str:
        """Content hash of the weights ("base" for the bare model): names the baseline in cache keys."""
        if self.adapter_state is None:
            return "base"
        if self._id is None or self._id[0] != id(self.adapter_state):  # hash each weights object once
            import torch  # heavy: torch, loaded only where there are weights (tensors) to hash

            digest = hashlib.sha256()
            for key in sorted(self.adapter_state):
                tensor = self.adapter_state[key].detach().to("cpu").contiguous()
                digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
            self._id = (id(self.adapter_state), digest.hexdigest()[:16])
        return self._id[1]

    @property
    def full_weights(self) -> bool:
        """Whether the weights are a whole model's (a fully fine-tuned student), not a LoRA adapter's."""
        return is_full_state(self.adapter_state)
