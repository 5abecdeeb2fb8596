"""`TransformersEngine`: batched generation with transformers + peft, on CPU or GPU.

A plain decoding loop over the model's forward (not `model.generate`), because it lets the engine
- sample each row from its own seeded stream (seed, prompt index, sample index), so a seeded call is
  reproducible and a row's sample does not depend on which rows share its micro-batch;
- drop a row from the batch, KV cache included, as soon as it stops, instead of decoding padding;
- check stop strings and the JSON end on the newly decoded text only (incremental detokenisation).
Everything else per token is tensor work: one forward with `logits_to_keep=1`, argmax or an
inverse-CDF draw from the row's pre-drawn uniforms (sv_soar.engines.sampling; the stop strings and the
JSON end are sv_soar.engines.stopping's).

Prompts are left-padded (position ids count real tokens only, so a padded row computes what it would
alone), sorted by length and cut into micro-batches of at most `max_batch_size` rows: 32 on CPU, and
on CUDA as many as the free memory holds KV caches for (`auto_batch_size`). LoRA adapters
come through peft; rows under different adapters share one batch through peft's mixed-adapter
inference (`adapter_names=`, "__base__" = the bare model) where peft allows it (not for DoRA or merged
adapters), and are grouped by adapter otherwise (sv_soar.engines.peft_adapters).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from sv_soar.engines.peft_adapters import BASE_ADAPTER, PeftAdapters
from sv_soar.engines.sampling import SAMPLER_BYTES_PER_VOCAB_ENTRY, check_params, next_tokens, row_uniforms
from sv_soar.engines.stopping import StopWatcher
from sv_soar.generation import ChatPrompt, Completion, GenerationStats, SamplingParams
from sv_soar.models import load_model


CPU_BATCH_SIZE = 32  # rows a micro-batch on CPU: measured fastest for the 135M model on 2 cores
AUTO_MEMORY_FRACTION = 0.8  # of the free CUDA memory; the rest covers prefill activations and fragmentation
AUTO_MAX_BATCH_SIZE = 4096  # beyond this a decode step is compute-bound on any card: no gain, longer tails
# SDPA kernels decoding may use on CUDA. Not cuDNN's: torch may prefer it on Hopper, and it builds a new
# execution graph for every new key length (each decode step has one), hundreds of ms a build
# (sglang#4650, mlx#2743); the probe's generation phase measures both (docs/gpu.md). None: torch's choice.
DECODE_SDPA_BACKENDS: tuple[str, ...] | None = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


def kv_cache_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Bytes of KV cache one token takes: keys and values of every layer's KV heads."""
    layers = config.num_hidden_layers
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * layers * heads * head_dim * torch.finfo(dtype).bits // 8


@dataclass
class _Row:
    """One sequence being decoded: a prompt (for one sample) under one adapter."""

    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    adapter: str | None
    watcher: StopWatcher | None
    ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    done: bool = False
    request: int = 0  # which request of a generate_many call the row belongs to
    seed: int = 0  # that request's base seed


# --- the engine --------------------------------------------------------------------------------------


class TransformersEngine(PeftAdapters):
    """A `GenerationEngine` over a transformers causal LM, with LoRA adapters through peft.

    TransformersEngine("smollm2-135m-instruct")   # any name `sv_soar.models.load_model` accepts
    TransformersEngine(model, tokenizer)         # share a model already in memory (the trainer's)

    When the engine wraps a bare model in a PeftModel (first `load_adapter`), it keeps the adapter
    layers disabled outside `generate`, so another holder of the same base model (the student
    trainer) still computes with the bare model; unloading the last adapter removes the LoRA layers.
    """

    def __init__(
        self,
        model: str | os.PathLike | Any,
        tokenizer: Any | None = None,
        *,
        model_name: str | None = None,
        dtype: torch.dtype | None = None,
        device: str = "cpu",
        max_batch_size: int | None = None,
        sdpa_backends: Sequence[str] | None = DECODE_SDPA_BACKENDS,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            model_name = model_name or str(model)
            model, tokenizer = load_model(str(model), dtype=dtype, device=device)
        elif tokenizer is None:
            raise TypeError("TransformersEngine(model, tokenizer): a model object needs its tokenizer")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (or None: sized to the device), got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.max_batch_size = max_batch_size  # None: CPU_BATCH_SIZE on CPU, auto_batch_size() on CUDA
        self.sdpa_backends = _sdpa_backends(sdpa_backends)  # CUDA only; None: torch's own choice
        self.stats = GenerationStats()
        self._batch_tokens: dict[int, int] = {}
        self._batch_seconds: dict[int, float] = {}
        self._wrapped_by_engine = False
        self._enabled_depth = 0
        self._mixed_batches_ok: bool | None = None  # decided on first use, again when adapters change

        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        if not eos_ids:
            raise ValueError(f"{self.model_name}: neither the model nor the tokenizer defines an EOS token")
        self.eos_ids = frozenset(eos_ids)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        # transformers 5.x renamed forward's `past_key_values` to `cache` (the old name warns).
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache_kwarg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def over(self, model: Any) -> "TransformersEngine":
        """An engine like this one (tokenizer, name, batch size, attention kernels) over another model: a
        fully fine-tuned student's own copy of the base model (sv_soar.student.full_finetune)."""
        return TransformersEngine(model, self.tokenizer, model_name=self.model_name, max_batch_size=self.max_batch_size,
                                  sdpa_backends=None if self.sdpa_backends is None else
                                  [backend.name for backend in self.sdpa_backends])

    # --- GenerationEngine ----------------------------------------------------------------------------

    @property
    def context_window(self) -> int | None:
        """Tokens the model was trained to attend over (prompt + completion); None when unknown."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def count_tokens(self, prompt: ChatPrompt) -> int:
        return len(self._prompt_ids(prompt))

    def prompt_token_ids(self, prompt: ChatPrompt) -> list[int]:
        """The templated prompt's token ids, as generate feeds them to the model."""
        return list(self._prompt_ids(prompt))

    def generate(
        self,
        prompts: Sequence[ChatPrompt],
        params: SamplingParams,
        adapters: Sequence[str | None] | str | None = None,
    ) -> list[list[Completion]]:
        return self.generate_many([(prompts, params, adapters)])[0]

    def generate_many(
        self, requests: Sequence[tuple[Sequence[ChatPrompt], SamplingParams, Sequence[str | None] | str | None]]
    ) -> list[list[list[Completion]]]:
        """Several `generate` calls decoded together: one result list per (prompts, params, adapters) request.

        The r students of a dataset step in lockstep this way (sv_soar.student.lockstep): each student's
        request has its own seed and adapter, and a row samples from the stream of ITS request's seed,
        prompt index and sample index, so a request gets the completions that `generate` alone gives it
        (up to float rounding of the batched forward). Requests must agree on everything but seed and n.
        """
        if not requests:
            return []
        params = requests[0][1]
        for _, other, _ in requests:
            check_params(other)
            if dataclasses.replace(other, seed=params.seed, n=params.n) != params:
                raise ValueError("generate_many: requests must share their sampling parameters except seed and n, "
                                 f"got {params} and {other}")
        greedy = params.temperature == 0
        needs_watch = bool(params.stop) or params.stop_at_json_end
        rows: list[_Row] = []
        adapter_names: set[str | None] = set()
        for request, (prompts, request_params, adapters) in enumerate(requests):
            per_prompt = self._adapter_per_prompt(len(prompts), adapters)
            adapter_names.update(per_prompt)
            samples = 1 if greedy else request_params.n  # greedy samples are identical: decode once, copy
            base_seed = (request_params.seed if request_params.seed is not None
                         else int.from_bytes(os.urandom(8), "little"))
            for index, prompt in enumerate(prompts):
                ids = self._prompt_ids(prompt)
                rows.extend(
                    _Row(index, sample, ids, per_prompt[index],
                         StopWatcher(self.tokenizer, params.stop, params.stop_at_json_end) if needs_watch else None,
                         request=request, seed=base_seed)
                    for sample in range(samples)
                )
        # peft: rows under different adapters share a batch where peft allows, else one adapter a batch.
        # One adapter for every row (a student's rollouts): switch it on instead, since peft's per-row
        # adapter_names hooks walk every module on each forward (measured 10-15% of a rollout generate).
        if not self._is_peft():
            mode = "plain"
        elif len(adapter_names) == 1 or not self._supports_mixed_batches():
            mode = "grouped"
        else:
            mode = "mixed"
        started = time.perf_counter()
        with _eval_mode(self.model), torch.inference_mode(), self._adapter_layers_enabled():
            for batch in self._micro_batches(rows, by_adapter=mode == "grouped", max_new_tokens=params.max_new_tokens):
                self._decode(batch, params, mode)
        self.stats.seconds += time.perf_counter() - started
        self.stats.prompts += sum(len(prompts) for prompts, _, _ in requests)

        results: list[list[list[Completion]]] = [[[] for _ in prompts] for prompts, _, _ in requests]
        for row in rows:  # rows are in (request, prompt, sample) order
            completion = self._completion(row)
            into = results[row.request][row.prompt_index]
            into.append(completion)
            if greedy:  # the n identical samples, as separate objects
                into.extend(dataclasses.replace(completion, token_ids=list(completion.token_ids))
                            for _ in range(requests[row.request][1].n - 1))
        return results

    # --- prompts and micro-batches -------------------------------------------------------------------

    def _prompt_ids(self, prompt: ChatPrompt) -> list[int]:
        text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _micro_batches(self, rows: list[_Row], by_adapter: bool, max_new_tokens: int) -> Iterator[list[_Row]]:
        """Rows sorted by prompt length (longest first, so memory runs out early if at all), in
        batches of at most max_batch_size; with by_adapter, each batch holds one adapter's rows."""
        groups = [rows]
        if by_adapter:
            names = sorted({row.adapter for row in rows}, key=lambda name: name or "")
            groups = [[row for row in rows if row.adapter == name] for name in names]
        for group in groups:
            ordered = sorted(group, key=lambda row: -len(row.prompt_ids))
            start = 0
            while start < len(ordered):
                size = self.max_batch_size or self.auto_batch_size(len(ordered[start].prompt_ids) + max_new_tokens)
                yield ordered[start : start + size]
                start += size

    def auto_batch_size(self, tokens_per_row: int) -> int:
        """Rows a micro-batch when max_batch_size is None: CPU_BATCH_SIZE on CPU; on CUDA, as many rows as
        AUTO_MEMORY_FRACTION of the free memory holds a KV cache of `tokens_per_row` tokens for, plus the
        sampler's fp32 vocabulary-sized buffers, capped at AUTO_MAX_BATCH_SIZE. The weights are already
        loaded, so free memory is what the batch may take."""
        device = self._device()
        if device.type != "cuda":
            return CPU_BATCH_SIZE
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # the allocator's cache
        per_row = tokens_per_row * kv_cache_bytes_per_token(self.model.config, self._dtype())
        per_row += SAMPLER_BYTES_PER_VOCAB_ENTRY * int(getattr(self.model.config, "vocab_size", 0) or 0)
        return max(1, min(AUTO_MAX_BATCH_SIZE, int(AUTO_MEMORY_FRACTION * free) // max(1, per_row)))

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- decoding ------------------------------------------------------------------------------------

    def _decode(self, rows: list[_Row], params: SamplingParams, mode: str) -> None:
        """Decode one micro-batch to the end, filling each row's ids and finish_reason.

        mode: "plain" (no peft), "mixed" (peft's adapter_names per row) or "grouped" (all rows
        under one adapter, switched on for the batch)."""
        device = self._device()
        started = time.perf_counter()
        # The n samples of a prompt share one prefill: its KV cache is copied to each sample's row.
        first_of: dict[tuple[int, int, str | None], int] = {}
        prefill_rows: list[_Row] = []
        copy_from: list[int] = []
        for row in rows:
            key = (row.request, row.prompt_index, row.adapter)
            if key not in first_of:
                first_of[key] = len(prefill_rows)
                prefill_rows.append(row)
            copy_from.append(first_of[key])

        width = max(len(row.prompt_ids) for row in prefill_rows)
        input_ids = torch.full((len(prefill_rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prefill_rows), width), dtype=torch.long)
        for i, row in enumerate(prefill_rows):  # left padding
            input_ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            attention[i, width - len(row.prompt_ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # real tokens count from 0, as unpadded
        uniforms = None
        if params.temperature > 0:
            uniforms = torch.stack(
                [row_uniforms(row.seed, row.prompt_index, row.sample_index, params.max_new_tokens) for row in rows]
            ).to(device)

        mixed = mode == "mixed"
        context = self._single_adapter(rows[0].adapter) if mode == "grouped" else contextlib.nullcontext()
        active = list(rows)
        with context, self._attention_kernels(device):
            extra = {"adapter_names": [row.adapter or BASE_ADAPTER for row in prefill_rows]} if mixed else {}
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             use_cache=True, logits_to_keep=1, **extra)
            cache = getattr(out, self._cache_kwarg)
            logits = out.logits[:, -1, :]
            next_position = positions[:, -1:] + 1
            if len(prefill_rows) < len(rows):
                index = torch.tensor(copy_from, device=device)
                cache.batch_select_indices(index)
                logits, attention, next_position = logits[index], attention[index], next_position[index]
            if mixed:
                extra = {"adapter_names": [row.adapter or BASE_ADAPTER for row in active]}
            for step in range(params.max_new_tokens):
                tokens = next_tokens(logits, params, uniforms[:, step] if uniforms is not None else None)
                keep = []
                for i, (row, token) in enumerate(zip(active, tokens.tolist(), strict=True)):
                    if not self._push(row, token, params.max_new_tokens):
                        keep.append(i)
                if not keep:
                    break
                if len(keep) < len(active):  # drop finished rows, KV cache included
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    tokens, attention, next_position = tokens[index], attention[index], next_position[index]
                    if uniforms is not None:
                        uniforms = uniforms[index]
                    active = [active[i] for i in keep]
                attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
                if mixed:
                    extra = {"adapter_names": [row.adapter or BASE_ADAPTER for row in active]}
                out = self.model(input_ids=tokens[:, None], attention_mask=attention, position_ids=next_position,
                                 use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache}, **extra)
                logits = out.logits[:, -1, :]
                next_position = next_position + 1

        generated = sum(len(row.ids) for row in rows)
        seconds = time.perf_counter() - started
        self.stats.generated_tokens += generated
        size = len(rows)
        self._batch_tokens[size] = self._batch_tokens.get(size, 0) + generated
        self._batch_seconds[size] = self._batch_seconds.get(size, 0.0) + seconds
        self.stats.by_batch_size[size] = self._batch_tokens[size] / max(self._batch_seconds[size], 1e-9)

    def _push(self, row: _Row, token: int, max_new_tokens: int) -> bool:
        """Append a decoded token to the row; True when the row is done (EOS, a stop, the JSON end, the budget)."""
        row.ids.append(token)
        if token in self.eos_ids or (row.watcher is not None and row.watcher.push(token)):
            row.finish_reason, row.done = "stop", True
        elif len(row.ids) >= max_new_tokens:
            row.done = True  # finish_reason stays "length"
        return row.done

    # --- one-token rollouts that keep their graph ----------------------------------------------------

    def first_tokens(self, prompts: Sequence[ChatPrompt], params: SamplingParams,
                     adapter: str | None = None) -> tuple[list[list[Completion]], torch.Tensor]:
        """`generate(prompts, params, adapter)` for one-token answers (params.max_new_tokens == 1), from ONE forward
        of the prompts that keeps its autograd graph, for a policy-gradient step to differentiate instead of
        running the prompts again (sv_soar.student.trainer; the mechanism task's answers are one token).

        Returns the completions, each row drawn from its own seeded stream as `generate` draws it (the same
        tokens up to float rounding of the logits), and log π(· | prompt) at params.temperature, [prompts, vocab],
        differentiable in whatever weights require a gradient. The forward runs in eval mode, as generate's does.
        The prompts' longest common prefix (the chat template and the system prompt: 30 of a mechanism prompt's
        ~85 tokens) runs once and its KV cache is repeated for every prompt, so a step costs the prompts' own
        tokens; the rest are left-padded, and the attention mask skips the padding between the prefix and each
        prompt's own tokens.
        """
        if params.max_new_tokens != 1 or params.temperature <= 0:
            raise ValueError("first_tokens samples one-token completions at a temperature > 0 (a policy to "
                             f"differentiate), got max_new_tokens={params.max_new_tokens}, "
                             f"temperature={params.temperature}")
        check_params(params)
        if not prompts:
            return [], torch.empty(0)
        ids = [self._prompt_ids(prompt) for prompt in prompts]
        device = self._device()
        prefix = 0
        shortest = min(len(row) for row in ids)
        while prefix < shortest - 1 and all(row[prefix] == ids[0][prefix] for row in ids):
            prefix += 1  # each prompt keeps at least its last token for the second forward
        width = max(len(row) for row in ids) - prefix
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(ids), prefix + width), dtype=torch.long)
        attention[:, :prefix] = 1
        for i, row in enumerate(ids):  # left padding between the shared prefix and the prompt's own tokens
            input_ids[i, width - (len(row) - prefix) :] = torch.tensor(row[prefix:])
            attention[i, prefix + width - (len(row) - prefix) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, prefix:]
        input_ids, attention, positions = input_ids.to(device), attention.to(device), positions.to(device)
        started = time.perf_counter()
        adapters = self._single_adapter(adapter) if self._is_peft() else contextlib.nullcontext()
        with _eval_mode(self.model), self._adapter_layers_enabled(), adapters, self._attention_kernels(device):
            cache = {}
            if prefix:
                head = self.model(input_ids=torch.tensor([ids[0][:prefix]], device=device), use_cache=True,
                                  logits_to_keep=1)
                shared = getattr(head, self._cache_kwarg)
                shared.batch_repeat_interleave(len(ids))
                cache = {self._cache_kwarg: shared}
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             use_cache=bool(prefix), logits_to_keep=1, **cache)
        logits = out.logits[:, -1, :].float()
        logprobs = torch.log_softmax(logits / params.temperature, dim=-1)
        base_seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little")
        needs_watch = bool(params.stop) or params.stop_at_json_end
        rows = [_Row(p, s, ids[p], adapter,
                     StopWatcher(self.tokenizer, params.stop, params.stop_at_json_end) if needs_watch else None,
                     seed=base_seed)
                for p in range(len(ids)) for s in range(params.n)]
        uniforms = torch.stack([row_uniforms(row.seed, row.prompt_index, row.sample_index, 1)[0] for row in rows])
        index = torch.tensor([row.prompt_index for row in rows], device=device)
        tokens = next_tokens(logits.detach()[index], params, uniforms.to(device))
        for row, token in zip(rows, tokens.tolist(), strict=True):
            self._push(row, token, 1)
        self.stats.seconds += time.perf_counter() - started
        self.stats.prompts += len(prompts)
        self.stats.generated_tokens += len(rows)
        results: list[list[Completion]] = [[] for _ in prompts]
        for row in rows:
            results[row.prompt_index].append(self._completion(row))
        return results, logprobs

    def _attention_kernels(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The SDPA kernels decoding may use (`sdpa_backends`), on CUDA; nothing changes on CPU."""
        if device.type != "cuda" or self.sdpa_backends is None:
            return contextlib.nullcontext()
        return sdpa_kernel(list(self.sdpa_backends))

    def _completion(self, row: _Row) -> Completion:
        if row.watcher is not None and row.watcher.cut is not None:
            text = row.watcher.text[: row.watcher.cut]
            token_ids = row.ids[: row.watcher.tokens_covering_cut()]
        else:
            token_ids = list(row.ids)  # an EOS token stays in token_ids (the trainer scores it)
            text_ids = token_ids[:-1] if token_ids and token_ids[-1] in self.eos_ids else token_ids
            text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        return Completion(text, token_ids, list(row.prompt_ids), row.finish_reason)


# --- attention kernels and eval mode ------------------------------------------------------------------


def _sdpa_backends(names: Sequence[str] | None) -> tuple[Any, ...] | None:
    """`torch.nn.attention.SDPBackend` members by name ("EFFICIENT_ATTENTION", ...); a clear error otherwise."""
    if names is None:
        return None
    known = [name for name in SDPBackend.__members__ if name != "ERROR"]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"sdpa_backends: {unknown or 'empty'} is not a list of SDPBackend names {known}")
    return tuple(getattr(SDPBackend, name) for name in names)


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Eval mode for the call (no dropout; peft refuses adapter_names in training mode), then back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()
