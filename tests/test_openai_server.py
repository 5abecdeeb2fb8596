"""`sv-soar serve-model` as a real subprocess serving the tiny real model.

The openai client gets well-formed completions; concurrent requests are answered, each with its own
prompt's result, and run as batched engine calls; malformed requests get 400/413 naming the field
while the server keeps serving; and the real `vf-eval sv-soar-student` scores rollouts through it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from sv_soar.generation import Completion, SamplingParams
from sv_soar.serving.batching import DynamicBatcher
from sv_soar.serving.openai_server import ModelServer, ServerConfig
from sv_soar.serving.openai_protocol import ServedModels
from tests.served_model import API_KEY, MAX_REQUEST_BYTES, REPO, SERVED, e1_prompt, start_server, stop_server


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    served = start_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("serve-model") / "server.log",
        "--served-model-name", SERVED,
        "--api-key", API_KEY,
        "--batch-window-ms", "50",
        "--max-request-bytes", "64KiB",
    )
    try:
        yield served
    finally:
        stop_server(served.proc)


# ----------------------------------------------------------------------------- the openai client


def test_openai_client_gets_a_well_formed_chat_completion(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)
    reply = client.chat.completions.create(model=SERVED, messages=e1_prompt(1), max_tokens=12, temperature=0)
    assert reply.object == "chat.completion" and reply.model == SERVED and reply.id.startswith("chatcmpl-")
    (choice,) = reply.choices
    assert choice.index == 0 and choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.prompt_tokens > 20 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 12

    again = client.chat.completions.create(
        model=SERVED, messages=e1_prompt(1), max_completion_tokens=12, temperature=0, stop=["\u0000never"]
    )
    assert again.choices[0].message.content == choice.message.content  # greedy is deterministic

    sampled = client.chat.completions.create(
        model=SERVED, messages=e1_prompt(2), max_tokens=6, temperature=1.0, top_p=0.9, n=3, seed=7
    )
    assert [c.index for c in sampled.choices] == [0, 1, 2]
    assert 0 < sampled.usage.completion_tokens <= 18


def test_models_health_and_api_key(server):
    with server.client() as client:
        models = client.get("/v1/models").json()
        assert models["object"] == "list" and [m["id"] for m in models["data"]] == [SERVED]
    with server.client(key=None) as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}  # health needs no key
        refused = anonymous.get("/v1/models")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    with server.client(key="sk-wrong") as wrong:
        body = {"model": SERVED, "messages": e1_prompt(0)}
        assert wrong.post("/v1/chat/completions", json=body).status_code == 401


# ----------------------------------------------------------------------------- dynamic batching


def test_concurrent_requests_are_answered_and_batched(server):
    prompts = [e1_prompt(i) for i in range(16)]

    def ask(client: httpx.Client, prompt: list[dict]) -> dict:
        reply = client.post("/v1/chat/completions", json={"model": SERVED, "messages": prompt, "max_tokens": 16, "temperature": 0})
        assert reply.status_code == 200, reply.text
        return reply.json()

    with server.client() as client:
        start = time.perf_counter()
        serial = [ask(client, p) for p in prompts]
        serial_s = time.perf_counter() - start

    before = server.stats()
    clients = [server.client() for _ in prompts]  # one connection each, as vf-eval's pool opens
    try:
        with ThreadPoolExecutor(len(prompts)) as pool:
            start = time.perf_counter()
            concurrent = list(pool.map(ask, clients, prompts))
            concurrent_s = time.perf_counter() - start
    finally:
        for client in clients:
            client.close()
    after = server.stats()

    # each reply belongs to its own prompt: the prompts' token counts all differ
    assert len({r["usage"]["prompt_tokens"] for r in serial}) == len(prompts)
    assert [r["usage"]["prompt_tokens"] for r in concurrent] == [r["usage"]["prompt_tokens"] for r in serial]
    assert after["requests"] - before["requests"] == len(prompts)
    engine_calls = after["engine_calls"] - before["engine_calls"]
    assert engine_calls <= 4, f"16 concurrent requests took {engine_calls} engine calls: {after}"
    assert after["largest_engine_call"] >= 8
    print(f"\n16 greedy requests x 16 tokens: serial {serial_s:.2f} s, concurrent {concurrent_s:.2f} s "
          f"in {engine_calls} engine call(s)")


# ----------------------------------------------------------------------------- malformed requests

GOOD = {"model": SERVED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

MALFORMED = [
    # (what, body, status, param that the error names)
    ("not JSON", b"{not json", 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("missing messages", {"model": SERVED}, 400, "messages"),
    ("messages not a list", {**GOOD, "messages": "hi"}, 400, "messages"),
    ("empty messages", {**GOOD, "messages": []}, 400, "messages"),
    ("message not an object", {**GOOD, "messages": ["hi"]}, 400, "messages[0]"),
    ("bad role", {**GOOD, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ("bad second role", {**GOOD, "messages": [{"role": "user", "content": "x"}, {"content": "y"}]}, 400, "messages[1].role"),
    ("content not text", {**GOOD, "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ("missing model", {"messages": GOOD["messages"]}, 400, "model"),
    ("unknown model", {**GOOD, "model": "gpt-4o"}, 400, "model"),
    ("max_tokens not int", {**GOOD, "max_tokens": "ten"}, 400, "max_tokens"),
    ("max_tokens zero", {**GOOD, "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens bool", {**GOOD, "max_tokens": True}, 400, "max_tokens"),
    ("max_completion_tokens negative", {**GOOD, "max_completion_tokens": -1}, 400, "max_completion_tokens"),
    ("temperature not a number", {**GOOD, "temperature": "hot"}, 400, "temperature"),
    ("temperature too high", {**GOOD, "temperature": 3}, 400, "temperature"),
    ("top_p zero", {**GOOD, "top_p": 0}, 400, "top_p"),
    ("n too large", {**GOOD, "n": 1000}, 400, "n"),
    ("stop not text", {**GOOD, "stop": 5}, 400, "stop"),
    ("stop with an empty string", {**GOOD, "stop": ["", "x"]}, 400, "stop"),
    ("seed negative", {**GOOD, "seed": -1}, 400, "seed"),
    ("stream not a boolean", {**GOOD, "stream": "yes"}, 400, "stream"),
    ("stream_options without stream", {**GOOD, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("logprobs", {**GOOD, "logprobs": True}, 400, "logprobs"),
    ("body too large", {**GOOD, "padding": "x" * MAX_REQUEST_BYTES}, 413, None),
    # the tiny model's window is 1024 tokens (prompt + completion), refused in vLLM's words
    ("prompt over the context window", {**GOOD, "messages": [{"role": "user", "content": "flags " * 1100}]}, 400, "messages"),
    ("completion over the context window", {**GOOD, "max_tokens": 1024}, 400, "messages"),
]


@pytest.mark.parametrize("what,body,status,param", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_request_is_refused_naming_the_field(server, what, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with server.client() as client:
        reply = client.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
        assert reply.status_code == status, reply.text
        error = reply.json()["error"]
        assert isinstance(error["message"], str) and error["type"] == "invalid_request_error"
        assert error["param"] == param
        if param:
            assert param in error["message"]
        if "context window" in what:
            assert error["code"] == "context_length_exceeded" and "maximum context length is 1024" in error["message"]
        # still serving, on the same connection where the server kept it open
        assert client.post("/v1/chat/completions", json=GOOD).status_code == 200
    assert server.proc.poll() is None


def test_unknown_route_is_404(server):
    with server.client() as client:
        reply = client.post("/v1/completions", content=b"{}")
        assert reply.status_code == 404 and "no route" in reply.json()["error"]["message"]
        assert client.get("/health").status_code == 200


# ----------------------------------------------------------------------------- engine failures


class FailingEngine:
    """Fake engine: the real one has no request that reliably makes it raise. Fails on 'boom'."""

    model_name = "failing"

    def __init__(self):
        self.calls: list[int] = []

    def generate(self, prompts, params: SamplingParams, adapters=None):
        self.calls.append(len(prompts))
        time.sleep(0.05)
        if any("boom" in p[-1]["content"] for p in prompts):
            raise RuntimeError("engine blew up on purpose")
        return [[Completion("ok", [1, 2], [3], "stop")] * params.n for _ in prompts]


def test_engine_error_is_a_500_and_spares_the_rest_of_its_batch():
    engine = FailingEngine()
    batcher = DynamicBatcher(engine, max_batch_size=16, batch_window_s=0.2)
    server = ModelServer(("127.0.0.1", 0), ServerConfig(ServedModels("m")), batcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def ask(text: str) -> httpx.Response:
            body = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0}
            return httpx.post(f"http://127.0.0.1:{server.port}/v1/chat/completions", json=body, timeout=30)

        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(ask, ["a", "boom", "b", "c"]))
        assert [r.status_code for r in replies] == [200, 500, 200, 200]
        error = replies[1].json()["error"]
        assert error["type"] == "server_error" and "engine blew up on purpose" in error["message"]
        assert engine.calls[0] == 4  # batched first, then retried one by one
        assert ask("again").status_code == 200
    finally:
        server.shutdown()
        server.server_close()
        batcher.stop()


# ----------------------------------------------------------------------------- defaults, adapters, SIGTERM


def save_lora_adapter(model_dir: Path, out: Path) -> Path:
    """A real peft LoRA adapter for the tiny model, non-zero so that it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.mark.slow
def test_defaults_adapter_port_file_and_clean_sigterm(tiny_model_dir, tmp_path):
    adapter = save_lora_adapter(tiny_model_dir, tmp_path / "student-lora")
    port_file = tmp_path / "port"
    served = start_server(
        tiny_model_dir, tmp_path / "server.log",
        "--port-file", str(port_file), "--adapter", f"student={adapter}", "--batch-window-ms", "200",
    )
    base_name = str(tiny_model_dir)  # no --served-model-name: clients name the model as --model gave it
    try:
        assert int(port_file.read_text()) == served.port
        with served.client(key="any-key-at-all") as client:  # no --api-key: every key is accepted
            models = client.get("/v1/models").json()["data"]
            assert [(m["id"], m["parent"]) for m in models] == [(base_name, None), ("student", base_name)]

            def ask(model: str) -> httpx.Response:
                body = {"model": model, "messages": e1_prompt(3), "max_tokens": 8, "temperature": 0}
                return client.post("/v1/chat/completions", json=body)

            base, student = ask(base_name), ask("student")
            assert base.status_code == student.status_code == 200
            assert student.json()["model"] == "student"
        # base and adapter requests arriving together share one engine call (peft mixed-adapter batch)
        with ThreadPoolExecutor(4) as pool:
            with served.client() as c1, served.client() as c2, served.client() as c3, served.client() as c4:
                bodies = [{"model": m, "messages": e1_prompt(3), "max_tokens": 8, "temperature": 0}
                          for m in (base_name, "student", base_name, "student")]
                replies = list(pool.map(lambda c, b: c.post("/v1/chat/completions", json=b), (c1, c2, c3, c4), bodies))
        assert [r.status_code for r in replies] == [200] * 4
        texts = [r.json()["choices"][0]["message"]["content"] for r in replies]
        assert texts[0] == texts[2] and texts[1] == texts[3]
        assert texts[0] != texts[1]  # the adapter is in effect for its requests only
        assert served.stats()["engine_calls_by_size"].get("4") == 1, served.stats()
    finally:
        returncode = stop_server(served.proc)
    assert returncode == 0, served.log.read_text()[-3000:]
    assert "stopped" in served.log.read_text()


# ----------------------------------------------------------------------------- the real vf-eval


@pytest.mark.slow
def test_vf_eval_scores_rollouts_through_the_server(server, tmp_path):
    vf_eval = shutil.which("vf-eval", path=str(Path(sys.executable).parent))
    command = [vf_eval] if vf_eval else [sys.executable, "-m", "verifiers.scripts.eval"]
    outputs = tmp_path / "outputs"
    command += [
        "sv-soar-student",
        "-m", SERVED,
        "-b", f"{server.url}/v1",
        "-k", "SV_SOAR_TEST_KEY",  # vf-eval reads the key from the environment variable it names
        "-n", "4", "-r", "1",
        "-t", "48",
        "-s", "-o", str(outputs),
        "--disable-tui",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SV_SOAR_TEST_KEY": API_KEY}
    before = server.stats()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    (results,) = outputs.glob(f"evals/sv-soar-student--{SERVED}/*/results.jsonl")
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert len(rows) == 4
    metrics = ("reward_accuracy", "format_reward", "reward_calibration", "reward_asymmetric_cost")
    for row in rows:
        assert isinstance(row["reward"], (int, float))
        for name in metrics:
            value = row.get(name, row.get("metrics", {}).get(name))
            assert isinstance(value, (int, float)), f"{name} missing from {sorted(row)}"
    assert server.stats()["requests"] - before["requests"] == 4  # every rollout went through the server


# ----------------------------------------------------------------------------- streaming


def test_openai_client_streams_the_same_completion_as_chunks(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)
    plain = client.chat.completions.create(model=SERVED, messages=e1_prompt(4), max_tokens=12, temperature=0)
    stream = client.chat.completions.create(model=SERVED, messages=e1_prompt(4), max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert all(c.model == SERVED for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason] == \
        [plain.choices[0].finish_reason]
    usage = chunks[-1].usage  # include_usage: a last chunk with no choices carries it
    assert chunks[-1].choices == [] and usage.completion_tokens == plain.usage.completion_tokens
    assert usage.prompt_tokens == plain.usage.prompt_tokens


def test_stream_is_server_sent_events_ending_with_done(server):
    body = {"model": SERVED, "messages": e1_prompt(5), "max_tokens": 6, "temperature": 1.0, "n": 2, "seed": 3,
            "stream": True}
    with server.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        events = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
    assert all("usage" not in c for c in chunks)  # only with stream_options.include_usage
    finished = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in chunks
                if c["choices"][0]["finish_reason"]}
    assert sorted(finished) == [0, 1] and set(finished.values()) <= {"stop", "length"}
    # a refused streaming request is a plain JSON error, before any event
    with server.client() as client:
        refused = client.post("/v1/chat/completions", json={**body, "model": "gpt-4o"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
