"""Function calling for `sv-soar serve-model`: OpenAI's `tools` in, `tool_calls` out, as plain chat text.

verifiers' ToolEnv (the E2 student with SV-Bench's `run_kubelinter`, `run_semgrep`, `run_opa`) sends
`tools` and expects `message.tool_calls` back. The engines generate text from a chat of
system/user/assistant messages, so the tools are rendered into that chat in the Hermes format, the
one Qwen2.5 (SOAR's student family) was trained on, word for word the tool part of its chat template:

    system:    ...# Tools ... <tools>{function signatures, one JSON a line}</tools> ... <tool_call> ...
    assistant: <tool_call>{"name": ..., "arguments": {...}}</tool_call>
    user:      <tool_response>the tool's output</tool_response>       (a `tool` message)

and the reply's text is read back: every `<tool_call>` block holding a JSON object that names one of
the request's tools becomes a tool call (finish_reason "tool_calls"); anything else stays content, so a
model that writes no valid call simply answers in text. The reply is model output, untrusted: blocks
are parsed with json and limits, never evaluated.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any


MAX_TOOLS = 64
MAX_TOOL_CALLS = 16  # calls read from one reply; more blocks stay text
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)

# Qwen2.5's chat template, the tool part (tokenizer_config.json of Qwen/Qwen2.5-*-Instruct).
TOOLS_PREAMBLE = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                  "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
TOOLS_INSTRUCTIONS = ("</tools>\n\nFor each function call, return a json object with function name and arguments "
                      "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                      '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


class ToolFormatError(ValueError):
    """A request's tools or tool calls are malformed; `param` names the field (the server answers 400)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Tool:
    name: str
    spec: dict[str, Any]  # the request's {"type": "function", "function": {...}}, as rendered for the model


def parse_tools(value: Any, tool_choice: Any) -> tuple[Tool, ...]:
    """The request's `tools`, validated; () when none are offered (absent, empty or tool_choice "none")."""
    if value is None or value == []:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise ToolFormatError(f"'tools' must be a list of at most {MAX_TOOLS} function tools", "tools")
    tools, names = [], set()
    for i, entry in enumerate(value):
        where = f"tools[{i}]"
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("type") != "function" or not isinstance(function, dict):
            raise ToolFormatError(f"'{where}' must be {{\"type\": \"function\", \"function\": {{\"name\", ...}}}}", where)
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise ToolFormatError(f"'{where}.function.name' must be 1-64 characters of A-Z a-z 0-9 _ -", f"{where}.function.name")
        if name in names:
            raise ToolFormatError(f"'{where}.function.name': {name!r} is declared twice", f"{where}.function.name")
        for key, kind in (("description", str), ("parameters", dict)):
            if function.get(key) is not None and not isinstance(function[key], kind):
                raise ToolFormatError(f"'{where}.function.{key}' must be a {'string' if kind is str else 'JSON object'}",
                               f"{where}.function.{key}")
        names.add(name)
        tools.append(Tool(name, {"type": "function", "function": {k: function[k] for k in
                                                                  ("name", "description", "parameters") if k in function}}))
    if tool_choice in (None, "auto"):
        return tuple(tools)
    if tool_choice == "none":
        return ()
    raise ToolFormatError("'tool_choice' must be \"auto\" or \"none\" (sv-soar serve-model cannot force a call)", "tool_choice")


def tools_system_text(tools: tuple[Tool, ...]) -> str:
    signatures = "".join("\n" + json.dumps(tool.spec, ensure_ascii=False) for tool in tools)
    return f"{TOOLS_PREAMBLE}{signatures}\n{TOOLS_INSTRUCTIONS}"


def assistant_text(content: str, tool_calls: Any, where: str) -> str:
    """An assistant message that called tools, as the model would have written it."""
    if not isinstance(tool_calls, list) or not tool_calls:
        raise ToolFormatError(f"'{where}.tool_calls' must be a non-empty list", f"{where}.tool_calls")
    blocks = []
    for i, call in enumerate(tool_calls):
        at = f"{where}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not isinstance(function.get("arguments"), str):
            raise ToolFormatError(f"'{at}' must be {{\"type\": \"function\", \"function\": {{\"name\": str, \"arguments\": str}}}}", at)
        try:  # OpenAI sends arguments as a JSON string; the model wrote an object
            arguments = json.loads(function["arguments"]) if function["arguments"].strip() else {}
        except (ValueError, RecursionError):
            arguments = function["arguments"]
        blocks.append("<tool_call>\n" + json.dumps({"name": function["name"], "arguments": arguments},
                                                    ensure_ascii=False) + "\n</tool_call>")
    return "\n".join(([content] if content else []) + blocks)


def tool_response_text(contents: list[str]) -> str:
    """Consecutive `tool` messages, as the one user turn Qwen2.5's template makes of them."""
    return "\n".join(f"<tool_response>\n{content}\n</tool_response>" for content in contents)


def read_tool_calls(text: str, tools: tuple[Tool, ...]) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of a generated reply: the valid `<tool_call>` blocks naming an offered tool."""
    names = {tool.name for tool in tools}
    calls, first = [], None
    for match in TOOL_CALL_BLOCK.finditer(text):
        if len(calls) == MAX_TOOL_CALLS:
            break
        call = _call(match.group(1), names)
        if call is not None:
            calls.append(call)
            first = match.start() if first is None else first
    if not calls:
        return text, []
    return text[:first].strip() or None, calls


def _call(block: str, names: set[str]) -> dict[str, Any] | None:
    try:
        value = json.loads(block)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string, as OpenAI sends them
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            return None
    if not isinstance(arguments, dict):
        return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": value["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}}
