"""The vLLM engine. vLLM cannot run on these CPU machines (it needs CUDA; installing it pulls a CUDA torch),
so: (1) without vLLM, asking for it fails with the install command (real); (2) the engine's own logic —
templating, per-prompt seeds and LoRA requests, exporting a training student's weights as a new LoRA
request only when they changed, the JSON-end cut — runs against a FAKE `vllm` module defined here, which
answers with scripted texts. scripts/gpu_check.sh runs the real engine on a GPU."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
import torch

from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.generation import SamplingParams
from sv_soar.grounded import GroundedScorer
from sv_soar.models import load_model
from sv_soar.student.trainer import add_student_adapter, student_policy
from tests.kind_task import KIND, kind_config

PROMPT = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "Is 1.2.3.4 bad?"}]


def test_without_vllm_the_error_names_the_install_command(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, as on this machine
    from sv_soar.engines.vllm_engine import VLLMEngine

    with pytest.raises(ImportError, match=r"pip install 'sv-soar\[vllm\]'"):
        VLLMEngine(str(tiny_model_dir))
    with pytest.raises(ImportError, match=r"pip install 'sv-soar\[vllm\]'"):
        GroundedScorer(str(tiny_model_dir), KIND, kind_config(), engine="vllm", progress=False)


# --- a fake vllm: records what the engine asks for, answers with scripted texts ---------------------------


@dataclass
class FakeSample:
    text: str
    token_ids: list[int]
    finish_reason: str


class FakeLLM:
    script = '{"label": "Benign", "confidence": 0.5} and then some trailing words'

    def __init__(self, **kwargs):
        from transformers import AutoTokenizer

        self.kwargs, self.calls, self.removed = kwargs, [], []
        self.tokenizer = AutoTokenizer.from_pretrained(kwargs["model"])
        self.llm_engine = types.SimpleNamespace(remove_lora=self.removed.append)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, lora_request, use_tqdm):
        self.calls.append((prompts, sampling_params, lora_request))
        ids = self.tokenizer(self.script, add_special_tokens=False)["input_ids"]
        return [types.SimpleNamespace(outputs=[FakeSample(self.script, list(ids), "length") for _ in range(sp.n)])
                for sp in sampling_params]


class FakeLoRARequest:
    def __init__(self, name, lora_int_id, lora_path):
        self.lora_name, self.lora_int_id, self.lora_path = name, lora_int_id, lora_path


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    return vllm


def test_engine_logic_against_a_fake_vllm(fake_vllm, tiny_model_dir):
    from sv_soar.engines.vllm_engine import VLLMEngine

    model, tokenizer = load_model(str(tiny_model_dir))
    config = kind_config()
    policy = student_policy(model, config)
    engine = VLLMEngine(str(tiny_model_dir), tokenizer=tokenizer, policy=policy, gpu_memory_utilization=0.25)
    assert engine.llm.kwargs["gpu_memory_utilization"] == 0.25 and engine.llm.kwargs["enable_lora"]

    # prompts go in as the same token ids TransformersEngine feeds its model (the trainer scores those)
    reference = TransformersEngine(policy, tokenizer)
    out = engine.generate([PROMPT, PROMPT], SamplingParams(max_new_tokens=50, temperature=1.0, n=3, seed=7,
                                                           stop_at_json_end=True))
    prompts, sampling, loras = engine.llm.calls[-1]
    assert [p["prompt_token_ids"] for p in prompts] == [reference.prompt_token_ids(PROMPT)] * 2
    assert loras == [None, None] and [s.n for s in sampling] == [3, 3]
    assert sampling[0].seed != sampling[1].seed  # each prompt its own stream
    again = engine.generate([PROMPT], SamplingParams(temperature=1.0, seed=7))
    assert engine.llm.calls[-1][1][0].seed == sampling[0].seed  # derived from (seed, prompt index) only
    # the JSON-end cut: text and tokens end at the first balanced object
    first = out[0][0]
    assert first.text == '{"label": "Benign", "confidence": 0.5}' and first.finish_reason == "stop"
    assert tokenizer.decode(first.token_ids, skip_special_tokens=True).startswith(first.text)
    assert len(out[0]) == 3 and again[0][0].text == FakeLLM.script  # no stop_at_json_end: no cut

    # greedy: one decode, n copies
    greedy = engine.generate([PROMPT], SamplingParams(temperature=0.0, n=2))
    assert engine.llm.calls[-1][1][0].n == 1 and len(greedy[0]) == 2

    # a student on the trainer's model is served as a LoRA request of its current weights
    add_student_adapter(policy, "x0-s0", config)
    engine.generate([PROMPT], SamplingParams(), adapters="x0-s0")
    first_request = engine.llm.calls[-1][2][0]
    engine.generate([PROMPT], SamplingParams(), adapters=["x0-s0"])
    assert engine.llm.calls[-1][2][0] is first_request  # unchanged weights: the same request, no export
    with torch.no_grad():  # a gradient step changes the weights
        next(p for n, p in policy.named_parameters() if "x0-s0" in n and "lora_B" in n).add_(0.1)
    engine.generate([PROMPT], SamplingParams(), adapters="x0-s0")
    second = engine.llm.calls[-1][2][0]
    assert second.lora_int_id != first_request.lora_int_id  # a new id: vLLM never serves stale weights
    assert engine.llm.removed == [first_request.lora_int_id]  # the old one's slot is freed
    # the trainer's placeholder adapter is the bare model; unknown names are refused
    engine.generate([PROMPT], SamplingParams(), adapters="sv-soar-base")
    assert engine.llm.calls[-1][2] == [None]
    with pytest.raises(KeyError, match="not loaded"):
        engine.generate([PROMPT], SamplingParams(), adapters="nope")
    engine.close()
