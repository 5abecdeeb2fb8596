"""TransformersEngine on the tiny real Llama: batching, sampling, stopping, LoRA adapters."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sv_soar.engines.stopping import JsonEndScanner, json_object_end
from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.generation import SamplingParams
from sv_soar.models import load_model

SYSTEM = "You are a network security analyst. Answer with JSON only."
QUESTIONS = [
    "Device unknown-device observed tcp 43750→23, duration 3.107256, bytes ?, flags [S]. "
    "Decide: Malicious or Benign (you may Abstain if unsure).",
    "Device unknown-device observed udp 53→53, duration 0.1, bytes 80, flags [].",
    "hi",
    "Device unknown-device observed tcp 1024→8080, duration 12.5, bytes 4096, flags [P, A]. Decide.",
    "Is port 2323 telnet?",
]
PROMPTS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] if i % 2 == 0
    else [{"role": "user", "content": q}]
    for i, q in enumerate(QUESTIONS)
]
GREEDY = SamplingParams(max_new_tokens=24)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture()
def engine(tiny_model_dir):
    return TransformersEngine(str(tiny_model_dir), max_batch_size=8)


def ids_of(results):
    return [[c.token_ids for c in completions] for completions in results]


def two_printable_chars(text: str, start: int) -> str:
    """The first two-character ASCII run at or after `start`: a stop string taken from a real output."""
    pairs = (text[i : i + 2] for i in range(start, len(text) - 1))
    return next(pair for pair in pairs if pair.isascii() and pair.strip())


# --- greedy, batching -------------------------------------------------------------------------------


def test_greedy_is_deterministic_and_prompt_dependent(engine):
    first = engine.generate(PROMPTS, GREEDY)
    second = engine.generate(PROMPTS, GREEDY)
    assert ids_of(first) == ids_of(second)
    assert len({tuple(c[0].token_ids) for c in first}) > 1, "the tiny model should not ignore its prompt"
    for prompt, completions in zip(PROMPTS, first, strict=True):  # results come back in input order
        assert completions[0].prompt_token_ids == engine._prompt_ids(prompt)
        assert len(completions[0].prompt_token_ids) == engine.count_tokens(prompt)


@pytest.mark.parametrize("max_batch_size", [2, 8])
def test_batched_greedy_equals_unbatched(tiny_model_dir, max_batch_size):
    engine = TransformersEngine(str(tiny_model_dir), max_batch_size=max_batch_size)
    batched = engine.generate(PROMPTS, GREEDY)
    alone = [engine.generate([prompt], GREEDY)[0] for prompt in PROMPTS]
    assert ids_of(batched) == ids_of(alone)
    assert [c[0].text for c in batched] == [c[0].text for c in alone]
    assert max(engine.stats.by_batch_size) == min(max_batch_size, len(PROMPTS))


def test_engine_shares_a_model_in_memory(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    shared = TransformersEngine(model, tokenizer, model_name="tiny")
    assert shared.model is model and shared.model_name == "tiny"
    by_name = TransformersEngine(str(tiny_model_dir))
    assert ids_of(shared.generate(PROMPTS[:2], GREEDY)) == ids_of(by_name.generate(PROMPTS[:2], GREEDY))
    with pytest.raises(TypeError, match="tokenizer"):
        TransformersEngine(model)


def test_generate_restores_training_mode(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    model.train()
    TransformersEngine(model, tokenizer).generate(PROMPTS[:1], GREEDY)
    assert model.training


# --- sampling --------------------------------------------------------------------------------------


def test_seeded_sampling_is_reproducible_and_seed_dependent(engine):
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=7)
    first = engine.generate(PROMPTS, params)
    again = engine.generate(PROMPTS, params)
    other = engine.generate(PROMPTS, SamplingParams(max_new_tokens=16, temperature=1.0, seed=8))
    assert ids_of(first) == ids_of(again)
    assert ids_of(first) != ids_of(other)
    assert ids_of(first) != ids_of(engine.generate(PROMPTS, GREEDY))


def test_seeded_sample_does_not_depend_on_micro_batching(tiny_model_dir):
    """Each row draws from its own (seed, prompt, sample) stream: batch size and rows leaving the
    batch early (a stop string met at different steps) do not change what the others sample."""
    one = TransformersEngine(str(tiny_model_dir), max_batch_size=1)
    many = TransformersEngine(str(tiny_model_dir), max_batch_size=16)
    params = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.9, n=2, seed=3)
    free = one.generate(PROMPTS, params)
    assert ids_of(free) == ids_of(many.generate(PROMPTS, params))
    text = free[0][0].text
    stop = two_printable_chars(text, start=3)
    stopped = dataclasses.replace(params, stop=(stop,))
    alone, together = one.generate(PROMPTS, stopped), many.generate(PROMPTS, stopped)
    assert ids_of(alone) == ids_of(together)
    reasons = [c.finish_reason for completions in together for c in completions]
    assert "stop" in reasons and "length" in reasons, "some rows should leave the batch before others"


def test_n_samples_per_prompt(engine):
    sampled = engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=12, temperature=1.0, n=4, seed=0))
    assert [len(c) for c in sampled] == [4, 4, 4]
    for completions in sampled:
        assert len({tuple(c.token_ids) for c in completions}) > 1, "n samples should differ"
    greedy = engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=12, n=3))
    for completions in greedy:
        assert len(completions) == 3 and len({tuple(c.token_ids) for c in completions}) == 1
        assert completions[0].token_ids is not completions[1].token_ids  # copies, not one shared list


def test_tiny_top_p_is_greedy(engine):
    nucleus = engine.generate(PROMPTS, SamplingParams(max_new_tokens=16, temperature=1.0, top_p=1e-6, seed=1))
    assert ids_of(nucleus) == ids_of(engine.generate(PROMPTS, SamplingParams(max_new_tokens=16)))


@pytest.mark.parametrize(
    "bad", [dict(temperature=-1.0), dict(top_p=0.0), dict(n=0), dict(max_new_tokens=0)]
)
def test_bad_sampling_params_are_refused(engine, bad):
    with pytest.raises(ValueError):
        engine.generate(PROMPTS[:1], SamplingParams(**bad))


# --- stopping --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, end",
    [
        ('{"label": "Benign", "confidence": 0.9} more', len('{"label": "Benign", "confidence": 0.9}')),
        ('Answer: ```json\n{"a": {"b": [1, {"c": 2}]}}\n```', len('Answer: ```json\n{"a": {"b": [1, {"c": 2}]}}')),
        ('{"r": "a } and { in a string"} x', len('{"r": "a } and { in a string"}')),
        ('{"r": "escaped \\" quote }"}}', len('{"r": "escaped \\" quote }"}')),
        ('say "}" then {"a": 1}', len('say "}" then {"a": 1}')),  # quotes outside the object don't count
        ('} stray close first {"a": 1}', len('} stray close first {"a": 1}')),
        ('{"a": {"b": 1}', None),
        ("no json here", None),
    ],
)
def test_json_object_end(text, end):
    assert json_object_end(text) == end
    scanner = JsonEndScanner()  # the same answer when the text arrives one character at a time
    fed = [scanner.feed(char) for char in text]
    hits = [i + 1 for i, hit in enumerate(fed) if hit is not None]
    assert hits == ([end] if end is not None else [])


class ScriptedModel(torch.nn.Module):
    """The tiny real model with its next-token logits steered to spell `script`, one token a step.

    A fake only in which token wins: forward, KV cache, padding and the engine's stopping are real.
    It makes stop-string and JSON-end cases exact (a random model writes no JSON)."""

    def __init__(self, model, script):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.generation_config = model.generation_config
        self.script = script
        self.step = 0

    def forward(self, input_ids=None, cache=None, **kwargs):
        if cache is None:  # prefill: a new micro-batch starts
            self.step = 0
        out = self.inner(input_ids=input_ids, cache=cache, **kwargs)
        out.logits[:, -1, self.script[min(self.step, len(self.script) - 1)]] += 1e4
        self.step += 1
        return out


@pytest.fixture()
def scripted(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))

    def make(text: str, end_with_eos: bool = False):
        script = tokenizer(text, add_special_tokens=False)["input_ids"]
        script += [tokenizer.eos_token_id] if end_with_eos else []
        return TransformersEngine(ScriptedModel(model, script), tokenizer), script

    return make


def test_stop_at_json_end_cuts_after_the_object(scripted):
    text = 'Sure: {"label": "Benign", "note": "a } brace \\" quote"} then {"x": 1} and more'
    engine, script = scripted(text)
    expected = 'Sure: {"label": "Benign", "note": "a } brace \\" quote"}'
    assert json_object_end(text) == len(expected)
    params = SamplingParams(max_new_tokens=len(script) + 5, stop_at_json_end=True)
    for completions in engine.generate(PROMPTS[:3], params):
        (completion,) = completions
        assert completion.text == expected
        assert completion.finish_reason == "stop"
        kept = completion.token_ids
        assert kept == script[: len(kept)]
        decode = engine.tokenizer.decode
        assert decode(kept).startswith(expected) and not decode(kept[:-1]).startswith(expected)
    full = engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=len(script)))[0][0]
    assert full.text == text and full.token_ids == script and full.finish_reason == "length"


def test_stop_string_cuts_before_it(scripted):
    text = '{"label": "Malicious"}\n</answer> trailing text'
    engine, script = scripted(text)
    params = SamplingParams(max_new_tokens=len(script) + 5, stop=("</answer>", "never appears"))
    completion = engine.generate(PROMPTS[:2], params)[1][0]
    assert completion.text == '{"label": "Malicious"}\n'
    assert completion.finish_reason == "stop"
    decode = engine.tokenizer.decode
    assert decode(completion.token_ids).startswith(completion.text)
    assert not decode(completion.token_ids[:-1]).startswith(completion.text)


def test_eos_stops_and_stays_in_token_ids(scripted):
    engine, script = scripted(" ok", end_with_eos=True)
    eos = engine.tokenizer.eos_token_id
    completion = engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=20))[0][0]
    assert completion.token_ids == script and completion.token_ids[-1] == eos
    assert completion.text == " ok" and completion.finish_reason == "stop"


def test_max_new_tokens_ends_with_length(scripted):
    engine, script = scripted("Benign Malicious Abstain Benign Malicious")
    completion = engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=4))[0][0]
    assert completion.token_ids == script[:4] and completion.finish_reason == "length"
    assert completion.text == engine.tokenizer.decode(script[:4])


def test_stop_strings_from_real_outputs_stop_rows_at_different_steps(engine):
    """Rows leave the batch (and its KV cache) at different steps; the others carry on unchanged."""
    full = engine.generate(PROMPTS, SamplingParams(max_new_tokens=30))
    texts = [c[0].text for c in full]
    stop = two_printable_chars(texts[0], start=5)  # a stop string that row 0 meets
    cut = engine.generate(PROMPTS, SamplingParams(max_new_tokens=30, stop=(stop,)))
    stopped = 0
    for whole, completions in zip(full, cut, strict=True):
        (completion,) = completions
        where = whole[0].text.find(stop)
        if where == -1:
            assert completion.token_ids == whole[0].token_ids
            assert completion.finish_reason == whole[0].finish_reason
        else:
            stopped += 1
            assert completion.text == whole[0].text[:where]
            assert completion.finish_reason == "stop"
            assert completion.token_ids == whole[0].token_ids[: len(completion.token_ids)]
    assert stopped >= 1


# --- LoRA adapters ---------------------------------------------------------------------------------


def make_adapter(base_dir, out, seed: int, use_dora: bool = False):
    """A saved LoRA adapter whose lora_B weights are random, so that it changes the output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                        use_dora=use_dora)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora-mixed-batch", "dora-grouped"])
def test_mixed_adapter_batch_equals_each_adapter_alone(tiny_model_dir, tmp_path, use_dora):
    engine = TransformersEngine(str(tiny_model_dir), max_batch_size=8)
    engine.load_adapter("a", make_adapter(tiny_model_dir, tmp_path / "a", seed=1, use_dora=use_dora))
    engine.load_adapter("b", make_adapter(tiny_model_dir, tmp_path / "b", seed=2, use_dora=use_dora))
    assert engine.loaded_adapters() == ["a", "b"]
    per_prompt = ["a", None, "b", "a", None]
    mixed = engine.generate(PROMPTS, GREEDY, adapters=per_prompt)
    # peft mixes LoRA adapters in one batch; DoRA it cannot, and the engine groups by adapter
    assert engine.mixed_adapter_batches is (not use_dora)
    for name in ("a", "b", None):
        indices = [i for i, adapter in enumerate(per_prompt) if adapter == name]
        alone = engine.generate([PROMPTS[i] for i in indices], GREEDY, adapters=name)
        assert ids_of(alone) == [[c.token_ids for c in mixed[i]] for i in indices]
    base = engine.generate(PROMPTS, GREEDY)
    under_a = engine.generate(PROMPTS, GREEDY, adapters="a")
    assert ids_of(base) != ids_of(under_a), "the adapter should change the output"
    assert [ids_of(base)[i] for i in (1, 4)] == [ids_of(mixed)[i] for i in (1, 4)]


def test_adapters_leave_the_shared_base_model_bare(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir))
    probe = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = model(input_ids=probe).logits
    engine = TransformersEngine(model, tokenizer)
    base = engine.generate(PROMPTS, GREEDY)
    model.train()  # the trainer's mode survives loading an adapter (peft would switch it to eval)
    engine.load_adapter("a", make_adapter(tiny_model_dir, tmp_path / "a", seed=1))
    assert model.training
    with torch.no_grad():  # the trainer's handle on the base model still computes the bare model
        assert torch.equal(model(input_ids=probe).logits, before)
    assert ids_of(engine.generate(PROMPTS, GREEDY, adapters="a")) != ids_of(base)
    assert ids_of(engine.generate(PROMPTS, GREEDY)) == ids_of(base)
    with pytest.raises(KeyError, match="not loaded"):
        engine.generate(PROMPTS[:1], GREEDY, adapters="missing")
    engine.unload_adapter("a")
    assert engine.model is model and engine.loaded_adapters() == []
    assert not any("lora" in name for name, _ in model.named_modules())
    assert ids_of(engine.generate(PROMPTS, GREEDY)) == ids_of(base)


def test_adapter_list_must_match_prompts(engine):
    with pytest.raises(ValueError, match="adapters"):
        engine.generate(PROMPTS[:2], GREEDY, adapters=[None])


def test_stats_count_generated_tokens(engine):
    results = engine.generate(PROMPTS, GREEDY)
    assert engine.stats.prompts == len(PROMPTS)
    assert engine.stats.generated_tokens == sum(len(c[0].token_ids) for c in results)
    assert engine.stats.seconds > 0 and engine.stats.tokens_per_second > 0


def test_sdpa_backends_are_checked_by_name_and_leave_cpu_decoding_unchanged(tiny_model_dir):
    """The SDPA kernels the engine lets decoding use on CUDA (cuDNN's left out by default: docs/gpu.md)
    are named by SDPBackend member; a wrong name is refused at construction, and on CPU the setting
    changes nothing."""
    with pytest.raises(ValueError, match=r"sdpa_backends: \['FLASH'\] is not a list of SDPBackend names"):
        TransformersEngine(str(tiny_model_dir), sdpa_backends=["FLASH"])
    default = TransformersEngine(str(tiny_model_dir), max_batch_size=8)
    torch_choice = TransformersEngine(str(tiny_model_dir), max_batch_size=8, sdpa_backends=None)
    assert "CUDNN_ATTENTION" not in [b.name for b in default.sdpa_backends] and torch_choice.sdpa_backends is None
    prompts = [[{"role": "user", "content": text}] for text in ("flow one", "another flow")]
    params = SamplingParams(n=2, seed=3, max_new_tokens=6, temperature=1.0)
    assert ids_of(default.generate(prompts, params)) == ids_of(torch_choice.generate(prompts, params))
