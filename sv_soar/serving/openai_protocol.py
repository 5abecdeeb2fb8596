"""The OpenAI chat-completions protocol, as far as sv-soar serve-model speaks it.

Parsing is strict where a silent default would mislead (a wrong type, an unknown model, `logprobs`
that this server cannot honour): the request is refused with OpenAI's error shape,
{"error": {"message", "type", "param", "code"}}, naming the field. Fields it does not know are
ignored, as OpenAI-compatible servers do, so clients that send extras keep working. Function
calling (`tools`, `tool` messages, `tool_calls` in the reply) is rendered as chat text by
`sv_soar.serving.tool_calls`, so the engines see plain system/user/assistant turns.

`stream: true` is answered as server-sent events of chat.completion.chunk objects, ending with
`data: [DONE]` (`chat_completion_chunks`). The engine generates a batch whole, so a choice's text arrives
as one delta when its batch is done, after the role delta sent at once.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sv_soar.generation import ChatPrompt, Completion, SamplingParams
from sv_soar.serving.tool_calls import (Tool, ToolFormatError, assistant_text, parse_tools, read_tool_calls,
                                        tool_response_text, tools_system_text)

ROLES = ("system", "user", "assistant", "tool")


class ApiError(Exception):
    """A request the server refuses, answered as OpenAI does: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.param, self.type, self.code = status, param, type, code

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ServedModels:
    """What a request's `model` may name: the base model, or a LoRA adapter loaded on it."""

    base: str
    adapters: tuple[str, ...] = ()

    def adapter_for(self, model: str) -> str | None:
        """The engine's adapter name for a requested model (None = the bare base model)."""
        if model == self.base:
            return None
        if model in self.adapters:
            return model
        names = ", ".join(repr(name) for name in (self.base, *self.adapters))
        raise ApiError(f"model {model!r} is not served here; available: {names}", "model", code="model_not_found")


@dataclass(frozen=True)
class ChatRequest:
    model: str  # as the client named it; echoed in the reply
    adapter: str | None
    prompt: ChatPrompt  # tools and tool messages already rendered as text (sv_soar.serving.tool_calls)
    params: SamplingParams
    tools: tuple[Tool, ...] = ()  # offered to the model: its reply's <tool_call> blocks naming them are calls
    stream: bool = False  # answer as server-sent events (chat.completion.chunk objects)
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


def parse_chat_request(
    body: Any, models: ServedModels, *, default_max_tokens: int, max_n: int
) -> ChatRequest:
    """Validate a /v1/chat/completions body; raise ApiError naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object")
    if body.get("logprobs"):  # not implemented: refuse rather than silently ignore
        raise ApiError("'logprobs' is not supported by sv-soar serve-model", "logprobs")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(f"'stream' must be true or false; got {_shown(stream)}", "stream")
    include_usage = _stream_options(body.get("stream_options"), bool(stream))

    model = body.get("model")
    if not isinstance(model, str):
        raise ApiError("'model' is required and must be a string", "model")
    adapter = models.adapter_for(model)
    try:
        tools = parse_tools(body.get("tools"), body.get("tool_choice"))
        prompt = _messages(body.get("messages"), tools)
    except ToolFormatError as exc:
        raise ApiError(str(exc), exc.param) from None

    max_tokens = _integer(body, "max_tokens", None, minimum=1)
    max_completion_tokens = _integer(body, "max_completion_tokens", None, minimum=1)
    if None not in (max_tokens, max_completion_tokens) and max_tokens != max_completion_tokens:
        raise ApiError("'max_tokens' and 'max_completion_tokens' disagree; send one of them", "max_tokens")
    params = SamplingParams(
        max_new_tokens=max_completion_tokens or max_tokens or default_max_tokens,
        temperature=_number(body, "temperature", 1.0, minimum=0.0, maximum=2.0),  # OpenAI's default is 1
        top_p=_number(body, "top_p", 1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True),
        n=_integer(body, "n", 1, minimum=1, maximum=max_n),
        seed=_integer(body, "seed", None, minimum=0, maximum=2**63 - 1),
        stop=_stop(body.get("stop")),
    )
    return ChatRequest(model=model, adapter=adapter, prompt=prompt, params=params, tools=tools,
                       stream=bool(stream), include_usage=include_usage)


def _stream_options(value: Any, stream: bool) -> bool:
    """stream_options.include_usage (OpenAI refuses stream_options without stream, and so does this)."""
    if value is None:
        return False
    if not stream:
        raise ApiError("'stream_options' is only allowed when 'stream' is true", "stream_options")
    if not isinstance(value, dict):
        raise ApiError("'stream_options' must be an object such as {\"include_usage\": true}", "stream_options")
    include_usage = value.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise ApiError("'stream_options.include_usage' must be true or false", "stream_options.include_usage")
    return include_usage


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _messages(value: Any, tools: tuple[Tool, ...] = ()) -> ChatPrompt:
    """The chat as system/user/assistant text; tools, tool calls and tool results rendered as the model
    reads them (sv_soar.serving.tool_calls)."""
    if not isinstance(value, list) or not value:
        raise ApiError("'messages' is required and must be a non-empty list of {role, content} objects", "messages")
    prompt: ChatPrompt = []
    tool_results: list[str] = []  # consecutive tool messages: one user turn
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(f"'{where}' must be an object with 'role' and 'content'", where)
        role = message.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ROLES:
            raise ApiError(f"'{where}.role' must be one of {', '.join(ROLES)}; got {role!r}", f"{where}.role")
        if role == "tool":
            tool_results.append(_text(message.get("content"), f"{where}.content"))
            continue
        if tool_results:
            prompt.append({"role": "user", "content": tool_response_text(tool_results)})
            tool_results = []
        if role == "assistant" and message.get("tool_calls"):
            content = message.get("content")
            text = "" if content is None else _text(content, f"{where}.content")
            prompt.append({"role": "assistant", "content": assistant_text(text, message["tool_calls"], where)})
        else:
            prompt.append({"role": role, "content": _text(message.get("content"), f"{where}.content")})
    if tool_results:
        prompt.append({"role": "user", "content": tool_response_text(tool_results)})
    if tools:  # Qwen2.5's template: the tool signatures close the system message (or make one)
        if prompt[0]["role"] == "system":
            prompt[0] = {"role": "system", "content": prompt[0]["content"] + "\n\n" + tools_system_text(tools)}
        else:
            prompt.insert(0, {"role": "system", "content": tools_system_text(tools)})
    return prompt


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content
    ):
        return "\n".join(part["text"] for part in content)
    raise ApiError(f"'{where}' must be a string or a list of text parts", where)


def _integer(body: dict, name: str, default: int | None, *, minimum: int, maximum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:  # absent or null: OpenAI treats both as "use the default"
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(f"'{name}' must be an integer; got {value!r}", name)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ApiError(f"'{name}' must be {bound}; got {value}", name)
    return value


def _number(
    body: dict, name: str, default: float, *, minimum: float, maximum: float, exclusive_minimum: bool = False
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(f"'{name}' must be a number; got {value!r}", name)
    if value > maximum or value < minimum or (exclusive_minimum and value == minimum):
        low = f"> {minimum}" if exclusive_minimum else f">= {minimum}"
        raise ApiError(f"'{name}' must be {low} and <= {maximum}; got {value}", name)
    return float(value)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError("'stop' must be a non-empty string or a list of non-empty strings", "stop")
    return tuple(stops)


def chat_completion(model: str, completions: list[Completion], tools: tuple[Tool, ...] = ()) -> dict[str, Any]:
    """OpenAI's chat.completion object for the n completions of one prompt."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_choice(i, c, tools) for i, c in enumerate(completions)],
        "usage": _usage(completions),
    }


def _usage(completions: list[Completion]) -> dict[str, int]:
    prompt_tokens = len(completions[0].prompt_token_ids) if completions else 0
    completion_tokens = sum(len(c.token_ids) for c in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ChunkStream:
    """The chat.completion.chunk objects of one streamed request, all with the same id: `roles()` at once,
    `completed(completions)` when the batch is done (content, finish reasons, usage)."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.request.model, "choices": choices}
        if self.request.include_usage:  # OpenAI: null on every chunk but the last, which has no choices
            chunk["usage"] = usage
        return chunk

    def roles(self) -> list[dict[str, Any]]:
        return [self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None}]) for i in range(self.request.params.n)]

    def completed(self, completions: list[Completion]) -> list[dict[str, Any]]:
        chunks = []
        for i, completion in enumerate(completions):
            choice = _choice(i, completion, self.request.tools)
            delta = {k: v for k, v in choice["message"].items() if k != "role"}
            if "tool_calls" in delta:  # in a delta each call carries its position
                delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(delta["tool_calls"])]
            if delta.get("content") or delta.get("tool_calls"):
                chunks.append(self._chunk([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}]))
            chunks.append(self._chunk([{"index": i, "delta": {}, "logprobs": None,
                                        "finish_reason": choice["finish_reason"]}]))
        if self.request.include_usage:
            chunks.append(self._chunk([], _usage(completions)))
        return chunks


def _choice(index: int, completion: Completion, tools: tuple[Tool, ...]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": completion.text}
    finish_reason = completion.finish_reason
    if tools:
        content, calls = read_tool_calls(completion.text, tools)
        if calls:
            message, finish_reason = {"role": "assistant", "content": content, "tool_calls": calls}, "tool_calls"
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": None}
