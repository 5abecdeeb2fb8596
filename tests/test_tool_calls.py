"""Function calling through `sv-soar serve-model`: OpenAI `tools` in, `tool_calls` out.

The protocol half (rendering tools and tool turns as chat text, reading `<tool_call>` blocks back) is
tested directly; the wire half with the real openai client against a real server; and the whole E2
tool loop with the real `vf-eval sv-soar-student` (task e2, SV-Bench's tool names, the real oracle).
Where a reply must *contain* a tool call the engine is scripted: the tiny real model writes random
tokens and cannot be made to call a tool. The tiny real model is served too, to show a request with
tools reaches it (its prompt carries the tool signatures) and is answered.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sv_soar.generation import Completion, SamplingParams
from sv_soar.serving.batching import DynamicBatcher
from sv_soar.serving.openai_protocol import ApiError, ServedModels, chat_completion, parse_chat_request
from sv_soar.serving.openai_server import ModelServer, ServerConfig
from sv_soar.serving.tool_calls import MAX_TOOL_CALLS, parse_tools, read_tool_calls

REPO = Path(__file__).resolve().parents[1]
SCAN = {"type": "function", "function": {"name": "run_kubelinter", "description": "Run kube-linter.",
                                         "parameters": {"type": "object", "properties": {"config": {"type": "string"}}}}}
OPA = {"type": "function", "function": {"name": "run_opa", "parameters": {"type": "object", "properties": {}}}}
TOOLS = parse_tools([SCAN, OPA], "auto")


def parse(body: dict):
    return parse_chat_request({"model": "m", **body}, ServedModels("m"), default_max_tokens=8, max_n=4)


# ----------------------------------------------------------------------------- the protocol


def test_tools_and_tool_turns_are_rendered_as_the_model_reads_them():
    request = parse({"tools": [SCAN, OPA], "messages": [
        {"role": "system", "content": "You audit configs."},
        {"role": "user", "content": "Audit this pod."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "run_kubelinter", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "run_opa", "arguments": '{"config": "x: 1"}'}}]},
        {"role": "tool", "tool_call_id": "a", "content": "[]"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "no findings"}]},
    ]})
    assert [t.name for t in request.tools] == ["run_kubelinter", "run_opa"]
    system, user, assistant, results = request.prompt
    assert system["role"] == "system" and system["content"].startswith("You audit configs.\n\n# Tools")
    assert json.dumps(SCAN) in system["content"] and "<tool_call>" in system["content"]  # Qwen2.5's tool prompt
    assert user == {"role": "user", "content": "Audit this pod."}
    assert assistant["content"] == ('<tool_call>\n{"name": "run_kubelinter", "arguments": {}}\n</tool_call>\n'
                                    '<tool_call>\n{"name": "run_opa", "arguments": {"config": "x: 1"}}\n</tool_call>')
    assert results == {"role": "user", "content": "<tool_response>\n[]\n</tool_response>\n"
                                                  "<tool_response>\nno findings\n</tool_response>"}
    # no system message: the tool prompt becomes one; tool_choice "none" offers no tools
    assert parse({"tools": [SCAN], "messages": [{"role": "user", "content": "hi"}]}).prompt[0]["role"] == "system"
    plain = parse({"tools": [SCAN], "tool_choice": "none", "messages": [{"role": "user", "content": "hi"}]})
    assert plain.tools == () and plain.prompt == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("body,param", [
    ({"tools": {"name": "x"}}, "tools"),
    ({"tools": [SCAN] * 65}, "tools"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "rm -rf /"}}]}, "tools[0].function.name"),
    ({"tools": [SCAN, SCAN]}, "tools[1].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]}, "tools[0].function.parameters"),
    ({"tools": [SCAN], "tool_choice": "required"}, "tool_choice"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]}]},
     "messages[0].tool_calls[0]"),
    ({"messages": [{"role": "tool", "content": 3}]}, "messages[0].content"),
])
def test_malformed_tools_are_refused_naming_the_field(body, param):
    with pytest.raises(ApiError) as caught:
        parse({"messages": [{"role": "user", "content": "hi"}], **body})
    assert caught.value.param == param and caught.value.status == 400


def test_tool_calls_are_read_from_the_reply_and_anything_else_stays_text():
    reply = ('I will scan it.\n<tool_call>\n{"name": "run_kubelinter", "arguments": {"config": "a: 1"}}\n</tool_call>\n'
             '<tool_call>{"name": "run_opa", "arguments": "{}"}</tool_call>')
    content, calls = read_tool_calls(reply, TOOLS)
    assert content == "I will scan it."
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("run_kubelinter", {"config": "a: 1"}), ("run_opa", {})]
    assert len({c["id"] for c in calls}) == 2 and all(c["type"] == "function" for c in calls)
    # an unclosed last block (the reply ran out of tokens after the JSON) still counts
    assert len(read_tool_calls('<tool_call>{"name": "run_opa"}', TOOLS)[1]) == 1
    for text in ('<tool_call>{"name": "rm", "arguments": {}}</tool_call>',  # not an offered tool
                 '<tool_call>{"name": "run_opa", "arguments": [1]}</tool_call>',  # arguments not an object
                 '<tool_call>{"name": "run_opa", </tool_call>', "<tool_call>" + "[" * 100_000,  # broken JSON
                 '{"name": "run_opa", "arguments": {}}', ""):  # no block at all
        assert read_tool_calls(text, TOOLS) == (text, [])
    many = '<tool_call>{"name": "run_opa"}</tool_call>' * (MAX_TOOL_CALLS + 5)
    assert len(read_tool_calls(many, TOOLS)[1]) == MAX_TOOL_CALLS
    # without tools in the request a reply is never read for calls
    message = chat_completion("m", [Completion(reply, [1], [2], "stop")])["choices"][0]
    assert message["message"] == {"role": "assistant", "content": reply} and message["finish_reason"] == "stop"
    choice = chat_completion("m", [Completion(reply, [1], [2], "stop")], TOOLS)["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and len(choice["message"]["tool_calls"]) == 2


# ----------------------------------------------------------------------------- over the wire


class ToolUsingEngine:
    """Scripted engine, a model that uses its tools well: until a tool has answered it calls
    run_kubelinter; then it reports exactly the findings it read. (The tiny real model cannot be made
    to write a tool call.) Every prompt it saw is kept."""

    model_name = "tool-user"

    def __init__(self) -> None:
        self.prompts: list[list[dict]] = []

    def generate(self, prompts, params: SamplingParams, adapters=None):
        self.prompts += prompts
        return [[Completion(self._reply(p[-1]["content"]), [1], [2], "stop")] * params.n for p in prompts]

    @staticmethod
    def _reply(last: str) -> str:
        if not last.startswith("<tool_response>"):
            return 'Scanning first.\n<tool_call>\n{"name": "run_kubelinter", "arguments": {}}\n</tool_call>'
        findings = json.loads(last.removeprefix("<tool_response>\n").removesuffix("\n</tool_response>"))
        return json.dumps({"violations": [{"id": f["id"], "severity": f["severity"]} for f in findings],
                           "patch": "", "confidence": 0.9})


@contextmanager
def served(engine) -> Iterator[str]:
    batcher = DynamicBatcher(engine, max_batch_size=8, batch_window_s=0.01)
    server = ModelServer(("127.0.0.1", 0), ServerConfig(ServedModels(engine.model_name)), batcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.port}/v1"
    finally:
        server.shutdown()
        server.server_close()
        batcher.stop()


def test_the_openai_client_receives_tool_calls_and_sends_tool_results_back():
    from openai import OpenAI

    engine = ToolUsingEngine()
    with served(engine) as url:
        client = OpenAI(base_url=url, api_key="EMPTY")
        messages = [{"role": "user", "content": "Audit this pod."}]
        first = client.chat.completions.create(model="tool-user", messages=messages, tools=[SCAN])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Scanning first."
        (call,) = choice.message.tool_calls
        assert call.function.name == "run_kubelinter" and json.loads(call.function.arguments) == {}
        finding = {"id": "kube-linter/latest-tag", "severity": "med"}
        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": json.dumps([finding])}]
        second = client.chat.completions.create(model="tool-user", messages=messages, tools=[SCAN])
        assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
        assert json.loads(second.choices[0].message.content)["violations"] == [finding]
    assert engine.prompts[-1][-2]["content"].startswith("Scanning first.\n<tool_call>")  # its own call, as it wrote it


def test_a_streamed_reply_carries_its_tool_calls_as_indexed_deltas():
    from openai import OpenAI

    with served(ToolUsingEngine()) as url:
        client = OpenAI(base_url=url, api_key="EMPTY")
        chunks = list(client.chat.completions.create(model="tool-user", tools=[SCAN], stream=True,
                                                     messages=[{"role": "user", "content": "Audit this pod."}]))
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.content or "" for d in deltas) == "Scanning first."
    (call,) = [call for d in deltas for call in d.tool_calls or []]
    assert call.index == 0 and call.id and call.type == "function"
    assert call.function.name == "run_kubelinter" and json.loads(call.function.arguments) == {}
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]


def test_the_tiny_real_model_is_served_with_tools_in_its_prompt(tiny_model_dir):
    from openai import OpenAI

    from sv_soar.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(tiny_model_dir))
    engine.model_name = "tiny"
    with served(engine) as url:
        client = OpenAI(base_url=url, api_key="EMPTY")
        messages = [{"role": "user", "content": "Audit this pod."}]
        plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0)
        tooled = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0, tools=[SCAN])
    assert tooled.usage.prompt_tokens > plain.usage.prompt_tokens + 50  # the signatures reached the model
    assert isinstance(tooled.choices[0].message.content, str) and tooled.choices[0].finish_reason in ("stop", "length")


@pytest.mark.slow
def test_vf_eval_runs_the_e2_tool_environment_through_the_server(svbench_mini, tmp_path):
    vf_eval = shutil.which("vf-eval", path=str(Path(sys.executable).parent))
    command = [vf_eval] if vf_eval else [sys.executable, "-m", "verifiers.scripts.eval"]
    outputs = tmp_path / "outputs"
    engine = ToolUsingEngine()
    with served(engine) as url:
        command += ["sv-soar-student", "-a", json.dumps({"task": "e2", "source": "jsonl", "path": str(svbench_mini),
                                                         "n": 4, "seed": 3, "scoring": "corrected"}),
                    "-m", "tool-user", "-b", url, "-n", "4", "-r", "1", "-s", "-o", str(outputs), "--disable-tui"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "EMPTY"}
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (results,) = outputs.glob("evals/sv-soar-student--tool-user/*/results.jsonl")
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert len(rows) == 4

    def metric(row: dict, name: str) -> float:
        return row.get(name, row.get("metrics", {}).get(name))

    # one kube-linter call a rollout, executed by verifiers' ToolEnv on the real oracle, then a final answer
    assert [metric(r, "total_tool_calls") for r in rows] == [1, 1, 1, 1]
    assert [metric(r, "run_kubelinter_calls") for r in rows] == [1, 1, 1, 1]
    assert len(engine.prompts) == 8  # two turns a rollout
    # reporting what kube-linter found is SV-Bench's answer on K8s rows (and "none" on Terraform ones)
    assert all(metric(r, "detection_f1") == 1.0 and r["reward"] == pytest.approx(1.05) for r in rows)


class PathsToolEngine(ToolUsingEngine):
    """A model trained on SV-Bench's env: it calls run_kubelinter(paths=[the prompt's File path])."""

    model_name = "paths-user"

    @staticmethod
    def _reply(last: str) -> str:
        if not last.startswith("<tool_response>"):
            path = re.search(r"^File path: (.*)$", last, re.M).group(1)
            call = {"name": "run_kubelinter", "arguments": {"paths": [path]}}
            return f"Scanning first.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
        return ToolUsingEngine._reply(last)


@pytest.mark.slow
def test_vf_eval_runs_svbench_tool_calls_with_paths_through_the_server(svbench_mini, tmp_path):
    vf_eval = shutil.which("vf-eval", path=str(Path(sys.executable).parent))
    command = [vf_eval] if vf_eval else [sys.executable, "-m", "verifiers.scripts.eval"]
    outputs = tmp_path / "outputs"
    engine = PathsToolEngine()
    with served(engine) as url:
        command += ["sv-soar-student", "-a", json.dumps({"task": "e2", "source": "jsonl", "path": str(svbench_mini),
                                                         "n": 4, "seed": 3}),
                    "-m", "paths-user", "-b", url, "-n", "4", "-r", "1", "-s", "-o", str(outputs), "--disable-tui"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "EMPTY"}
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (results,) = outputs.glob("evals/sv-soar-student--paths-user/*/results.jsonl")
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert len(rows) == 4

    def metric(row: dict, name: str) -> float:
        return row.get(name, row.get("metrics", {}).get(name))

    assert [metric(r, "run_kubelinter_calls") for r in rows] == [1, 1, 1, 1]
    for row in rows:  # the tool read the file at the File path: findings, not an error
        (tool_msg,) = [m for m in row["completion"] if m["role"] == "tool"]
        reply = json.loads(tool_msg["content"])
        assert isinstance(reply, list), reply
        oracle = {v["rule_id"] for v in json.loads(row["answer"])["violations"] if v["tool"] == "kube-linter"}
        if oracle:  # SV-Bench's values: F1 1 + 0.05, format 1, the observed evidence F1 1
            assert metric(row, "reward_config_auditing") == pytest.approx(1.05)
            assert metric(row, "tool_observation_reward") == pytest.approx(1.0)
        assert metric(row, "format_reward") == 1.0
