"""Fuzz targets for the model server: its request bodies and the tool calls in a model's reply."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.fuzz_targets._common import JSON_VALUES, NASTY, _mangled, _reason, fuzz_target

# --------------------------------------------------------------------------------- the model server's requests


_TOOL_NAMES = st.sampled_from(["run_kubelinter", "run_opa", "", "rm -rf /", "x" * 65]) | JSON_VALUES


def _tool_specs() -> st.SearchStrategy[Any]:
    """OpenAI `tools` entries, well and badly formed (sv_soar.serving.tool_calls.parse_tools)."""
    function = st.fixed_dictionaries({"name": _TOOL_NAMES},
                                     optional={"description": st.text(max_size=10) | JSON_VALUES,
                                               "parameters": st.just({"type": "object", "properties": {}}) | JSON_VALUES})
    entry = st.fixed_dictionaries({"type": st.sampled_from(["function", "retrieval"]) | JSON_VALUES,
                                   "function": function | JSON_VALUES})
    return st.lists(entry, max_size=4) | JSON_VALUES


def _chat_bodies() -> st.SearchStrategy[Any]:
    content = st.text(max_size=20) | JSON_VALUES | st.just([{"type": "text", "text": "hi"}])
    call = st.fixed_dictionaries({"id": st.text(max_size=4), "type": st.just("function"),
                                  "function": st.fixed_dictionaries({"name": _TOOL_NAMES,
                                                                     "arguments": st.sampled_from(["{}", "", "[", '{"config": "a"}'])
                                                                     | JSON_VALUES}) | JSON_VALUES})
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "developer", "tool"]) | JSON_VALUES,
                                     "content": content | st.none()},
                                    optional={"tool_calls": st.lists(call, max_size=2) | JSON_VALUES,
                                              "tool_call_id": st.text(max_size=4)})
    body = st.fixed_dictionaries(
        {"model": st.sampled_from(["served", "adapter-a", "other"]) | JSON_VALUES,
         "messages": st.lists(message, max_size=3) | JSON_VALUES},
        optional={**{name: JSON_VALUES | st.integers(-3, 20) | st.floats(-1, 3)
                     for name in ("max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "seed", "stop",
                                  "stream", "logprobs")},
                  "tools": _tool_specs(), "tool_choice": st.sampled_from(["auto", "none", "required"]) | JSON_VALUES,
                  "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | JSON_VALUES})
                  | JSON_VALUES},
    )
    # a valid chat with tools and tool turns, one part at a time broken, so the tool code is reached
    tooled = st.builds(lambda tools, choice, calls, result: {
        "model": "served", "tools": tools, **({"tool_choice": choice} if choice else {}),
        "messages": [{"role": "user", "content": "audit"}, {"role": "assistant", "content": None, "tool_calls": calls},
                     {"role": "tool", "tool_call_id": "c", "content": result}]},
        _tool_specs(), st.sampled_from([None, "auto", "none"]) | JSON_VALUES, st.lists(call, min_size=1, max_size=2),
        content)
    return body | tooled | JSON_VALUES


@fuzz_target("chat-request", "`sv-soar serve-model` request bodies (openai_protocol.parse_chat_request)", _chat_bodies)
def check_chat_request(body: Any) -> str:
    from sv_soar.serving.openai_protocol import ApiError, ChatRequest, ServedModels, parse_chat_request

    try:
        request = parse_chat_request(body, ServedModels("served", ("adapter-a",)), default_max_tokens=64, max_n=8)
    except ApiError as exc:
        _reason(exc)
        assert 400 <= exc.status < 500
        json.dumps(exc.payload())  # the error body itself can always be sent
        return f"rejected:{exc.param or 'body'}".split(".")[0].split("[")[0]
    assert isinstance(request, ChatRequest)
    params = request.params
    assert params.max_new_tokens >= 1 and 1 <= params.n <= 8 and 0 <= params.temperature <= 2
    assert request.stream is (body.get("stream") is True) and (request.stream or not request.include_usage)
    # what the engine gets: plain system/user/assistant text turns, tools and tool results rendered in them
    assert all(m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str) for m in request.prompt)
    return "accepted:tools" if request.tools else "accepted"


# --------------------------------------------------------------------------------- tool calls in model replies


def _replies_with_tool_calls() -> st.SearchStrategy[str]:
    arguments = st.just({}) | st.just({"config": "kind: Pod"}) | JSON_VALUES | st.sampled_from(['"{}"', '"[1]"', '"{"'])
    call = st.builds(lambda name, args: json.dumps({"name": name, "arguments": args}) if not isinstance(args, str)
                     else f'{{"name": {json.dumps(name)}, "arguments": {args}}}',
                     st.sampled_from(["run_kubelinter", "run_opa", "run_semgrep", "exec"]) | st.text(max_size=8), arguments)
    block = st.builds(lambda body, close, space: f"<tool_call>{space}{body}{space}{close}", call | JSON_VALUES.map(json.dumps)
                      | st.text(max_size=20), st.sampled_from(["</tool_call>", "", "</tool_call", "<tool_call>"]),
                      st.sampled_from(["", "\n", " \t\n "]))
    valid = st.builds(lambda name, args: f'<tool_call>\n{json.dumps({"name": name, "arguments": args})}\n</tool_call>',
                      st.sampled_from(["run_kubelinter", "run_opa"]), st.just({}) | st.dictionaries(st.text(max_size=5), JSON_VALUES))
    reply = st.lists(valid | block | st.text(max_size=20) | NASTY, max_size=6).map("".join)
    return reply | _mangled(reply) | st.integers(17, 40).map(lambda n: '<tool_call>{"name": "run_opa"}</tool_call>' * n)


@fuzz_target("tool-calls", "tool calls in a served model's reply (sv_soar.serving.tool_calls.read_tool_calls)",
             _replies_with_tool_calls, examples=("<tool_call>" + "[" * 100_000, "<tool_call>" * 2000))
def check_tool_calls(text: str) -> str:
    from sv_soar.serving.tool_calls import MAX_TOOL_CALLS, parse_tools, read_tool_calls

    tools = parse_tools([{"type": "function", "function": {"name": n}} for n in ("run_kubelinter", "run_opa")], "auto")
    content, calls = read_tool_calls(text, tools)
    if not calls:  # no block holding a valid call of an offered tool: the reply stays text, unchanged
        assert content == text
        return "rejected:no_valid_call"
    assert content is None or (isinstance(content, str) and content and content in text)
    assert len(calls) <= MAX_TOOL_CALLS and len({c["id"] for c in calls}) == len(calls)
    for c in calls:  # what verifiers' ToolEnv reads: an offered name and a JSON object of arguments
        assert c["type"] == "function" and c["function"]["name"] in ("run_kubelinter", "run_opa")
        assert isinstance(json.loads(c["function"]["arguments"]), dict)
    return "accepted"
