"""SV-Bench E1 (network-log classification): output parser and rubric, exactly as SV-Bench scores it.

The model answers `{"label": "Benign|Malicious|Abstain", "confidence": 0..1, "rationale": optional}`.
The reference is SV-Bench's own code, published as `security-verifiers-utils==0.3.1`
(`sv_shared/parsers.py`, `sv_shared/rewards.py`, `sv_shared/utils.py`); tests/test_e1_svbench_parity.py
scores thousands of generated completions with both and requires every component equal.

Parsing (JsonClassificationParser._parse_json): the response text is the content of the LAST message
of a chat completion (get_response_text); it is tried as JSON, else the first ``` fenced block (```json
or bare, any case), else the `{...}` that opens at the first "{" and closes at its matching brace (a
backslash escapes the next character inside and outside strings). The first that decodes to a JSON
object is the answer (sv_soar.scoring.json_object, its SVBENCH search); its "label" must be one of the
three labels exactly (case-sensitive).

Rubric (SV-Bench `sv_env_network_logs.py`, weights 1.0 / 0.1 / 0.2 / 0.5):
    reward_accuracy        1 if label.lower() == answer.lower(), else 0
    format_reward          1 if the label is allowed AND confidence is a JSON number (a bool counts,
                           as Python's isinstance(True, int) does) with 0 <= float(confidence) <= 1
    reward_calibration     1 - |confidence - correct| when a label parsed, else 0; the confidence is
                           float(value) (so a string "0.9" counts), 0.0 when missing or out of [0, 1]
    reward_asymmetric_cost +1 correct, -1 for "Benign" on a Malicious item, else 0
The dataset answer is compared lower-cased, and an int or bool answer (a Hugging Face ClassLabel) is
read as SV-Bench's `_coerce_answer` does: 1 / True -> "Malicious", any other int / False -> "Benign".

Deliberate deviations, all off by default (so the default scores are SV-Bench's, value for value):
- `max_parse_chars` (E1Parser / parse_e1_output): read only the first N characters of a completion,
  so a runaway generation costs bounded parsing work (MAX_PARSE_CHARS = 64 Ki, far above any
  real answer, is the suggested value). SV-Bench reads everything.
Where SV-Bench raises instead of scoring, this module scores 0 rather than crash the rollout: JSON
nested deeper than Python's recursion limit (RecursionError in json.loads) and a confidence that is
an integer too large for a float (OverflowError in float()). A chat message that is an object rather
than a dict is read through its `content` attribute (SV-Bench would score the text of `str(message)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sv_soar.scoring.json_object import extract_json_object

E1_LABELS = ("Benign", "Malicious", "Abstain")
E1_ANSWERS = ("Malicious", "Benign")
# SV-Bench sv_env_network_logs.py: funcs [accuracy, format, calibration, asymmetric cost]
E1_WEIGHTS = (1.0, 0.1, 0.2, 0.5)
E1_SYSTEM_PROMPT = (
    "You are a network security analyst. Analyze the provided network log entry and "
    "respond with a JSON object: {\"label\": 'Benign|Malicious|Abstain', "
    '"confidence": 0.0-1.0, "rationale": optional}.'
)
MAX_PARSE_CHARS = 64 * 1024  # the opt-in cap (max_parse_chars); SV-Bench has none

@dataclass(frozen=True)
class E1Output:
    """One parsed E1 answer. `label` is always one of E1_LABELS."""

    label: str
    # SV-Bench's parse_confidence: float(value) when it lies in [0, 1] (a string "0.9" counts),
    # None when missing, not convertible or out of range (SV-Bench then uses 0.0)
    confidence: float | None
    rationale: str | None
    # SV-Bench's format check: the JSON value is an int, float or bool with 0 <= value <= 1
    numeric_confidence: bool = False


def _confidence(value: Any) -> float | None:
    """SV-Bench's parse_confidence: float(value) if it lies in [0, 1], else None (scored as 0.0)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if 0.0 <= value <= 1.0 else None  # NaN fails both comparisons, as in SV-Bench


def _numeric_confidence(value: Any) -> bool:
    """SV-Bench's format check on the confidence: isinstance(value, (int, float)) and 0 <= value <= 1."""
    if not isinstance(value, (int, float)):  # bool is an int here, as in SV-Bench
        return False
    try:
        return 0.0 <= float(value) <= 1.0
    except OverflowError:
        return False


def parse_e1_output(text: str, max_chars: int | None = None) -> E1Output | None:
    """Parse one E1 completion text; None when no JSON object with an allowed label is found."""
    if not isinstance(text, str):
        return None
    data = extract_json_object(text, max_chars)
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
        numeric_confidence=_numeric_confidence(data.get("confidence")),
    )


# --- the four SV-Bench components, on an already parsed output --------------------------------


def coerce_answer(answer: Any) -> str:
    """SV-Bench's _coerce_answer: a ClassLabel int / bool read as 1 -> Malicious, else Benign."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, bool):
        return "Malicious" if answer else "Benign"
    if isinstance(answer, int):
        return "Malicious" if answer == 1 else "Benign"
    return str(answer)


def is_correct(output: E1Output | None, answer: Any) -> bool:
    """The label equals the answer, both lower-cased (SV-Bench compares case-insensitively)."""
    answer = coerce_answer(answer)
    return output is not None and bool(answer) and output.label.lower() == answer.lower()


def accuracy(output: E1Output | None, answer: Any) -> float:
    return 1.0 if is_correct(output, answer) else 0.0


def format_ok(output: E1Output | None) -> float:
    return 1.0 if output is not None and output.numeric_confidence else 0.0


def calibration(output: E1Output | None, answer: Any) -> float:
    if output is None:
        return 0.0
    # SV-Bench computes "correct" here without its `answer` emptiness check; "" never equals a label
    correct = 1.0 if output.label.lower() == coerce_answer(answer).lower() else 0.0
    confidence = output.confidence if output.confidence is not None else 0.0  # SV-Bench's fallback
    return 1.0 - abs(confidence - correct)


def asymmetric_cost(output: E1Output | None, answer: Any) -> float:
    answer = coerce_answer(answer)
    if output is None or not answer:
        return 0.0
    if output.label.lower() == answer.lower():
        return 1.0
    if output.label.lower() == "benign" and answer.lower() == "malicious":
        return -1.0
    return 0.0


def e1_components(output: E1Output | None, answer: Any) -> dict[str, float]:
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
