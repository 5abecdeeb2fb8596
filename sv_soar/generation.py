"""One generation interface for every engine (transformers now, vLLM later).

Callers hand over chat prompts (lists of messages); the engine applies the model's chat template,
generates, and returns token ids as well as text so that the student trainer can score the same
tokens it sampled. Implementations: `sv_soar.engines.transformers_engine.TransformersEngine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

Message = dict[str, str]
ChatPrompt = list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """What to generate. temperature == 0 means greedy decoding."""

    max_new_tokens: int = 192
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1  # samples per prompt
    seed: int | None = None  # same seed, same prompts, same engine -> same outputs
    stop: tuple[str, ...] = ()  # stop strings; the text is cut before the stop string
    stop_at_json_end: bool = False  # stop once the first balanced top-level {...} has closed


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # generated tokens (after any cut for stop strings), no padding
    prompt_token_ids: list[int]
    finish_reason: str  # "stop" (EOS, stop string or JSON end) or "length"


class GenerationEngine(Protocol):
    """A model that turns chat prompts into completions, optionally under LoRA adapters."""

    model_name: str

    def generate(
        self,
        prompts: Sequence[ChatPrompt],
        params: SamplingParams,
        adapters: Sequence[str | None] | str | None = None,
    ) -> list[list[Completion]]:
        """Return params.n completions for each prompt, in prompt order.

        `adapters` names a loaded LoRA adapter for all prompts (str), one per prompt (sequence; None
        = the bare base model), or none at all.
        """
        ...

    def load_adapter(self, name: str, path: str) -> None:
        """Make a saved peft LoRA adapter available under `name`."""
        ...

    def unload_adapter(self, name: str) -> None: ...

    def count_tokens(self, prompt: ChatPrompt) -> int:
        """Number of tokens of the templated prompt."""
        ...

    @property
    def context_window(self) -> int | None:
        """Most tokens (prompt + completion) the model attends over; None when unknown."""
        ...


def tokens_over_context(engine: GenerationEngine, prompt: ChatPrompt, max_new_tokens: int) -> int | None:
    """The prompt's token count when it and `max_new_tokens` do not fit the engine's context window, else
    None (also when the window is unknown). Such a prompt cannot be read whole: vLLM refuses it, and the
    transformers engine would attend past the positions the model knows, at a cost quadratic in its length."""
    window = getattr(engine, "context_window", None)
    if not window:
        return None
    tokens = engine.count_tokens(prompt)
    return tokens if tokens + max_new_tokens > window else None


@dataclass
class GenerationStats:
    """Throughput counters an engine keeps so that loops can print what they cost."""

    prompts: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    by_batch_size: dict[int, float] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0
