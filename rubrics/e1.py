"""SV-Bench E1 (network-log classification): output parser and rubric, as DESIGN §3 states them.

The model answers `{"label": "Benign|Malicious|Abstain", "confidence": 0..1, "rationale": optional}`.
Parsing follows SV-Bench's `sv_shared/parsers.py` (JsonClassificationParser._parse_json): the raw
text as JSON, else the first ``` fenced block (```json or bare, any case), else the first balanced
`{...}` that starts at the first "{" (string-aware). The first of these that decodes to a JSON
object is the answer; its "label" must be one of the three labels exactly (case-sensitive).

Rubric (SV-Bench `sv_env_network_logs.py`, weights 1.0 / 0.1 / 0.2 / 0.5):
    reward_accuracy        1 if label == answer, else 0
    format_reward          1 if the label is allowed AND confidence is a JSON number in [0, 1]
    reward_calibration     1 - |confidence - correct| when a label parsed, else 0
    reward_asymmetric_cost +1 correct, -1 for "Benign" on a Malicious item, else 0

Where this module departs from SV-Bench, and why:
- Confidence must be a JSON number (int or float, not bool, finite) to count. SV-Bench's format
  check accepts `true` (bool is an int in Python) and its calibration coerces with `float()`, so a
  string "0.9" scores calibration there but not format. Here a string or a bool is simply not a
  confidence, for format and calibration alike.
- A missing, non-numeric or out-of-range confidence counts as 0.0 in calibration, exactly as
  SV-Bench's `parse_confidence` returns 0.0 (sv_shared/parsers.py). So with a label but no usable
  confidence, calibration is 1 - correct: 0 for a right label, 1 for a wrong one or Abstain. That
  quirk is SV-Bench's and is kept so that scores stay comparable.
- Only the first MAX_PARSE_CHARS characters (64 Ki) of a completion are read, so a runaway
  generation costs bounded parsing work; SV-Bench reads everything. A JSON answer must start
  within that window and close within it.
- Brace matching honours backslash escapes only inside strings (SV-Bench's also outside them).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import verifiers as vf

E1_LABELS = ("Benign", "Malicious", "Abstain")
E1_ANSWERS = ("Malicious", "Benign")
# SV-Bench sv_env_network_logs.py: funcs [accuracy, format, calibration, asymmetric cost]
E1_WEIGHTS = (1.0, 0.1, 0.2, 0.5)
E1_SYSTEM_PROMPT = (
    "You are a network security analyst. Analyze the provided network log entry and "
    "respond with a JSON object: {\"label\": 'Benign|Malicious|Abstain', "
    '"confidence": 0.0-1.0, "rationale": optional}.'
)
MAX_PARSE_CHARS = 64 * 1024

# SV-Bench's fence pattern: ```json or ``` (any case), lazily up to the next ```.
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)\n?```", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class E1Output:
    """One parsed E1 answer. `label` is always one of E1_LABELS."""

    label: str
    confidence: float | None  # None: missing, not a JSON number, or outside [0, 1]
    rationale: str | None


_BRACE_SPECIAL = re.compile(r'[{}"\\]')


def matching_brace(text: str, start: int) -> int | None:
    """Index of the '}' closing text[start] == '{', skipping braces inside JSON strings, or None."""
    depth, in_string, escaped_at = 0, False, -1
    for m in _BRACE_SPECIAL.finditer(text, start):
        i, c = m.start(), m.group()
        if i == escaped_at:
            continue
        if in_string:
            if c == "\\":
                escaped_at = i + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def first_balanced_object(text: str) -> str | None:
    """The `{...}` that opens at the first "{" of `text` and closes at its matching "}", or None."""
    start = text.find("{")
    if start == -1:
        return None
    end = matching_brace(text, start)
    return text[start : end + 1] if end is not None else None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The answer object: raw JSON, else the first fenced block, else the first balanced {...}."""
    text = text[:MAX_PARSE_CHARS]
    data = _json_object(text)
    if data is not None:
        return data
    fence = _FENCE.search(text)
    if fence is not None:
        data = _json_object(fence.group(1).strip())
        if data is not None:
            return data
    candidate = first_balanced_object(text)
    return _json_object(candidate) if candidate is not None else None


def _confidence(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def parse_e1_output(text: str) -> E1Output | None:
    """Parse one E1 completion text; None when no JSON object with an allowed label is found."""
    if not isinstance(text, str):
        return None
    data = extract_json_object(text)
    if data is None:
        return None
    label = data.get("label")
    if not isinstance(label, str) or label not in E1_LABELS:
        return None
    rationale = data.get("rationale")
    return E1Output(
        label=label,
        confidence=_confidence(data.get("confidence")),
        rationale=rationale if isinstance(rationale, str) else None,
    )


def completion_text(completion: Any) -> str:
    """The text a model answered: a plain string, or the content of the last assistant message."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
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


# --- the four SV-Bench components, on an already parsed output --------------------------------


def accuracy(output: E1Output | None, answer: str) -> float:
    return 1.0 if output is not None and output.label == answer else 0.0


def format_ok(output: E1Output | None) -> float:
    return 1.0 if output is not None and output.confidence is not None else 0.0


def calibration(output: E1Output | None, answer: str) -> float:
    if output is None:
        return 0.0
    correct = 1.0 if output.label == answer else 0.0
    confidence = output.confidence if output.confidence is not None else 0.0  # SV-Bench's fallback
    return 1.0 - abs(confidence - correct)


def asymmetric_cost(output: E1Output | None, answer: str) -> float:
    if output is None:
        return 0.0
    if output.label == answer:
        return 1.0
    if output.label == "Benign" and answer == "Malicious":
        return -1.0
    return 0.0


def e1_components(output: E1Output | None, answer: str) -> dict[str, float]:
    """Every rubric component under its SV-Bench name, plus the weighted "reward"."""
    components = {
        "reward_accuracy": accuracy(output, answer),
        "format_reward": format_ok(output),
        "reward_calibration": calibration(output, answer),
        "reward_asymmetric_cost": asymmetric_cost(output, answer),
    }
    # Same order and arithmetic as vf.Rubric (sum of score * weight), so totals match bit for bit.
    components["reward"] = sum(value * weight for value, weight in zip(components.values(), E1_WEIGHTS))
    return components


# --- verifiers parser and reward functions ------------------------------------------------------


class E1Parser(vf.Parser):
    """verifiers parser for E1 answers; `parse_answer` returns the label or None."""

    def parse(self, text: str) -> E1Output | None:
        return parse_e1_output(text)

    def parse_output(self, completion: Any) -> E1Output | None:
        return parse_e1_output(completion_text(completion))

    def parse_answer(self, completion: Any) -> str | None:
        output = self.parse_output(completion)
        return output.label if output is not None else None

    def get_format_reward_func(self):
        return format_reward


def _parsed(parser: Any, completion: Any) -> E1Output | None:
    if isinstance(parser, E1Parser):
        return parser.parse_output(completion)
    return parse_e1_output(completion_text(completion))


def reward_accuracy(completion: Any, answer: str, parser: Any = None, **kwargs: Any) -> float:
    """1 if the parsed label equals the answer, else 0."""
    return accuracy(_parsed(parser, completion), answer)


def format_reward(completion: Any, parser: Any = None, **kwargs: Any) -> float:
    """1 if the answer has an allowed label and a numeric confidence in [0, 1], else 0."""
    return format_ok(_parsed(parser, completion))


def reward_calibration(completion: Any, answer: str, parser: Any = None, **kwargs: Any) -> float:
    """1 - |confidence - correct| when a label parsed (missing confidence counts as 0), else 0."""
    return calibration(_parsed(parser, completion), answer)


def reward_asymmetric_cost(completion: Any, answer: str, parser: Any = None, **kwargs: Any) -> float:
    """+1 if correct, -1 for Benign on a Malicious item (a missed attack), else 0."""
    return asymmetric_cost(_parsed(parser, completion), answer)


def make_e1_rubric(parser: E1Parser | None = None) -> vf.Rubric:
    """SV-Bench's E1 rubric: accuracy, format, calibration, asymmetric cost (1.0, 0.1, 0.2, 0.5)."""
    return vf.Rubric(
        funcs=[reward_accuracy, format_reward, reward_calibration, reward_asymmetric_cost],
        weights=list(E1_WEIGHTS),
        parser=parser or E1Parser(),
    )
