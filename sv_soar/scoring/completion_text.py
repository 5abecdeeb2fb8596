"""The text a model answered, read from a completion (a string, or chat messages), in one place.

A multi-turn rollout (E2 with tool calls) holds several assistant messages, and two readers need two
different texts from it, so the choice is explicit (`turns`):

- `turns="last"` (the default): the last assistant message, the answer a rubric scores. After tool calls the
  final message carries the JSON answer, which is what SV-Bench's parser reads (each task's scoring, rubrics/,
  the teacher env's group reward). Messages may be dicts or objects with `role` / `content`; content parts
  are joined with a space; anything else reads as "".
- `turns="all"`: every assistant message, concatenated, what hard-set mining scores again in saved
  evaluation results (sv_soar.evaluation.saved_results, `sv-soar hardset --rescore`): records are JSON, a
  reasoning model's answer sits in `reasoning_content` where `content` is null, and a record that is neither
  text nor chat messages is an error, not an empty answer.

A plain string is the answer under either choice. (SV-Bench's own reader, the last message whatever its role, is
`response_text`, kept for parity with SV-Bench's E1 and E2 reward functions.)
"""

from __future__ import annotations

from typing import Any, Literal

Turns = Literal["last", "all"]


def completion_text(completion: Any, turns: Turns = "last") -> str:
    """The answer's text: the last assistant message (`turns="last"`) or all of them joined (`"all"`)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if turns == "last":
        return _last_assistant_text(completion)
    if turns == "all":
        return _all_assistant_text(completion)
    raise ValueError(f"turns must be 'last' or 'all', got {turns!r}")


def message_text(content: Any) -> str:
    """A JSON chat message's content as text: a string, or its text parts joined; None reads as ""."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise ValueError(f"message content is neither text nor parts ({type(content).__name__})")


def _last_assistant_text(completion: Any) -> str:
    for message in reversed(list(completion)):
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        if role != "assistant":
            continue
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # content parts: keep the text ones
            parts = [p.get("text") if isinstance(p, dict) else getattr(p, "text", None) for p in content]
            return " ".join(p for p in parts if isinstance(p, str)).strip()
        return ""
    return ""


def _all_assistant_text(completion: Any) -> str:
    if not isinstance(completion, list):
        raise ValueError(f"'completion' is neither text nor chat messages ({type(completion).__name__})")
    return "".join(  # a reasoning model's answer is in reasoning_content when content is null
        message_text(m.get("content") if m.get("content") is not None else m.get("reasoning_content"))
        for m in completion if isinstance(m, dict) and m.get("role") == "assistant"
    )


def response_text(completion: Any) -> str:
    """SV-Bench's get_response_text: a string as is, else the content of the LAST message, whatever its role."""
    if completion is None:
        return ""
    if isinstance(completion, list):
        if not completion:
            return ""
        last = completion[-1]
        if isinstance(last, dict):
            content = last.get("content")
            return "" if content is None else str(content)
        if hasattr(last, "content"):  # a pydantic message (SV-Bench would read str(message))
            content = getattr(last, "content")
            return "" if content is None else str(content)
        return "" if last is None else str(last)
    return str(completion)
