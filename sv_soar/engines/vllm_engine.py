"""`VLLMEngine`: the generation interface (sv_soar.generation) over vLLM, for GPUs.

One engine per process, colocated with the student trainer on the same GPU: vLLM takes only
`gpu_memory_utilization` of the card (default 0.3) and the trainer's torch model the rest. The base
model is loaded once; each student is a LoRA adapter served as a vLLM `LoRARequest`, so switching
students never reloads the base model (docs/design.md §6).

A student being trained lives on the trainer's PeftModel (`policy`), not in a file. When `generate` is
asked for an adapter that the policy holds, the engine exports its current weights (a few MB for the
135M model, ~100 MB for a 3B one) to a folder under /dev/shm and serves them under a new LoRA id, at
most once per distinct set of weights (a content hash), so every rollout step samples from the weights
the previous gradient step wrote: on-policy, as with TransformersEngine. The policy's own placeholder
adapter ("sv-soar-base", lora_B = 0) and None both mean the bare base model.

Where vLLM differs from TransformersEngine, and how this engine matches the interface:
- `stop_at_json_end`: vLLM has no such stop; the completion is cut after decoding, at the first
  balanced JSON object (json_object_end), text and tokens both, finish_reason "stop". The tokens after
  the cut were generated and thrown away (the cost of the cut, not of the result).
- seeds: each prompt's request gets its own seed derived from (params.seed, prompt index), so a seeded
  call is reproducible and a prompt's samples do not depend on the others in the call. vLLM's samples
  are not the same numbers as TransformersEngine's for the same seed (different samplers).
- greedy with n > 1 decodes once and copies, as TransformersEngine does.

Without vLLM installed, constructing the engine raises an ImportError that names the install command.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from sv_soar.engines.stopping import json_object_end
from sv_soar.generation import ChatPrompt, Completion, GenerationStats, SamplingParams
from sv_soar.models import resolve_model

VLLM_INSTALL = "pip install 'sv-soar[vllm]'  (on a CUDA machine; vLLM brings its own CUDA torch)"
PLACEHOLDER_ADAPTERS = ("sv-soar-base", "__base__")  # the bare model, as the trainer and peft name it


def require_vllm():
    """The `vllm` module, or an ImportError that says how to install it."""
    try:
        import vllm  # heavy: vllm, an optional extra (GPU)
    except ImportError as exc:
        raise ImportError(f"engine = \"vllm\" needs vLLM, which is not installed: {VLLM_INSTALL}. "
                          "On a CPU machine use the transformers engine (vLLM on CPU is no faster here, "
                          "docs/design.md §6).") from exc
    return vllm


class VLLMEngine:
    """A GenerationEngine over vllm.LLM with per-student LoRA requests (module docstring)."""

    def __init__(self, model: str, *, tokenizer: Any | None = None, policy: Any | None = None,
                 model_name: str | None = None, gpu_memory_utilization: float = 0.3, max_lora_rank: int = 64,
                 max_loras: int = 16, max_model_len: int | None = 4096, dtype: str = "auto",
                 enforce_eager: bool = False, **llm_kwargs: Any) -> None:
        vllm = require_vllm()

        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        path = resolve_model(str(model), verify=True)  # the embedded model's converted folder, a local folder or a hub id
        self.model_name = model_name or str(model)
        self.max_model_len = max_model_len
        # max_loras = 16: SOAR's g·r students are evaluated in one generate call, one LoRA each (docs/design.md §4)
        self.llm = vllm.LLM(model=str(path), enable_lora=True, max_lora_rank=max_lora_rank, max_loras=max_loras,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            dtype=dtype, enforce_eager=enforce_eager, **llm_kwargs)
        self.tokenizer = tokenizer or self.llm.get_tokenizer()
        self.policy = policy
        self.max_batch_size = 1 << 30  # vLLM schedules its own batches; callers may set this, it is ignored
        self.stats = GenerationStats()
        self._vllm = vllm
        self._next_id = 1
        self._adapters: dict[str, tuple[str, Any]] = {}  # name -> (weights digest or path, LoRARequest)
        self._export_root = tempfile.mkdtemp(prefix="sv-soar-vllm-lora-",
                                             dir="/dev/shm" if os.path.isdir("/dev/shm") else None)

    # --- GenerationEngine ----------------------------------------------------------------------------

    @property
    def context_window(self) -> int | None:
        """max_model_len: vLLM refuses a longer prompt + completion."""
        if self.max_model_len is not None:
            return self.max_model_len
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)  # the model's own length
        return getattr(config, "max_model_len", None)

    def count_tokens(self, prompt: ChatPrompt) -> int:
        return len(self._prompt_ids(prompt))

    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams,
                 adapters: Sequence[str | None] | str | None = None) -> list[list[Completion]]:
        per_prompt = [adapters] * len(prompts) if adapters is None or isinstance(adapters, str) else list(adapters)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"adapters names {len(per_prompt)} adapters for {len(prompts)} prompts")
        greedy = params.temperature == 0
        base_seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little")
        prompt_ids = [self._prompt_ids(p) for p in prompts]
        requests = {name: self._lora_request(name) for name in set(per_prompt)}
        sampling = [self._sampling(params, _prompt_seed(base_seed, i), greedy) for i in range(len(prompts))]
        started = time.perf_counter()
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling_params=sampling,
                                    lora_request=[requests[name] for name in per_prompt], use_tqdm=False)
        self.stats.seconds += time.perf_counter() - started
        self.stats.prompts += len(prompts)
        results = []
        for ids, output in zip(prompt_ids, outputs, strict=True):
            samples = [self._completion(ids, sample, params) for sample in output.outputs]
            if greedy:
                samples = [samples[0]] + [Completion(samples[0].text, list(samples[0].token_ids), ids,
                                                     samples[0].finish_reason) for _ in range(params.n - 1)]
            self.stats.generated_tokens += sum(len(s.token_ids) for s in samples)
            results.append(samples)
        return results

    def load_adapter(self, name: str, path: str) -> None:
        if name in self._adapters:
            raise ValueError(f"adapter {name!r} is already loaded; unload it first")
        self._adapters[name] = (str(path), self._new_request(name, str(path)))

    def unload_adapter(self, name: str) -> None:
        if name not in self._adapters:
            raise KeyError(f"adapter {name!r} is not loaded; loaded: {self.loaded_adapters()}")
        self._drop(name)

    def loaded_adapters(self) -> list[str]:
        return sorted(self._adapters)

    def close(self) -> None:
        shutil.rmtree(self._export_root, ignore_errors=True)

    # --- adapters ------------------------------------------------------------------------------------

    def _lora_request(self, name: str | None) -> Any:
        if name is None or name in PLACEHOLDER_ADAPTERS:
            return None
        peft_config = getattr(self.policy, "peft_config", {}) or {}
        if name in peft_config:  # a student on the trainer's model: serve its current weights
            return self._export(name)
        if name in self._adapters:
            return self._adapters[name][1]
        raise KeyError(f"adapter(s) [{name!r}] not loaded; loaded: {self.loaded_adapters()}")

    def _export(self, name: str) -> Any:
        from sv_soar.student.trainer import adapter_state_dict  # delayed: sv_soar.student.trainer imports torch

        state = adapter_state_dict(self.policy, name)
        digest = hashlib.sha256()
        for key in sorted(state):
            digest.update(key.encode())
            digest.update(state[key].numpy().tobytes())
        version = digest.hexdigest()[:16]
        if name in self._adapters and self._adapters[name][0] == version:
            return self._adapters[name][1]
        from sv_soar.student.adapters import write_adapter  # delayed: sv_soar.student.adapters imports torch

        folder = os.path.join(self._export_root, f"{_safe(name)}-{version}")
        os.makedirs(folder, exist_ok=True)
        write_adapter(folder, self.policy.peft_config[name], state)
        if name in self._adapters:
            self._drop(name)
        request = self._new_request(name, folder)
        self._adapters[name] = (version, request)
        return request

    def _new_request(self, name: str, path: str) -> Any:
        from vllm.lora.request import LoRARequest  # heavy: vllm

        request = LoRARequest(f"{name}@{self._next_id}", self._next_id, path)  # a new id: never a stale cache hit
        self._next_id += 1
        return request

    def _drop(self, name: str) -> None:
        version, request = self._adapters.pop(name)
        engine = getattr(self.llm, "llm_engine", None)
        if engine is not None and hasattr(engine, "remove_lora"):
            engine.remove_lora(request.lora_int_id)  # free its slot (max_loras) on the GPU
        if request.lora_path.startswith(self._export_root):
            shutil.rmtree(request.lora_path, ignore_errors=True)

    # --- requests ------------------------------------------------------------------------------------

    def _prompt_ids(self, prompt: ChatPrompt) -> list[int]:
        text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]  # as TransformersEngine templates

    def _sampling(self, params: SamplingParams, seed: int, greedy: bool) -> Any:
        return self._vllm.SamplingParams(
            n=1 if greedy else params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=None if greedy else seed,
            stop=list(params.stop) or None,
        )

    def _completion(self, prompt_ids: list[int], sample: Any, params: SamplingParams) -> Completion:
        text, token_ids = sample.text, list(sample.token_ids)
        reason = "stop" if sample.finish_reason == "stop" else "length"
        if params.stop_at_json_end and (end := json_object_end(text)) is not None:
            reason = "stop"
            if end < len(text):
                text, token_ids = text[:end], token_ids[: self._tokens_covering(token_ids, end)]
        return Completion(text=text, token_ids=token_ids, prompt_token_ids=list(prompt_ids), finish_reason=reason)

    def _tokens_covering(self, token_ids: list[int], chars: int) -> int:
        """The fewest leading tokens whose decoded text is at least `chars` long (binary search)."""
        low, high = 0, len(token_ids)
        while low < high:
            mid = (low + high) // 2
            if len(self.tokenizer.decode(token_ids[:mid], skip_special_tokens=True)) >= chars:
                high = mid
            else:
                low = mid + 1
        return low


def _prompt_seed(base_seed: int, index: int) -> int:
    digest = hashlib.sha256(f"vllm-prompt:{base_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64]
