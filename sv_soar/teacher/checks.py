"""What every task's teacher-problem parser shares: the Rejection and its reasons, the limits, the
JSON-object extraction and the prompt-injection markers (sv_soar.tasks.e1.teacher_problems: E1;
sv_soar.tasks.e2.teacher_problems: E2; sv_soar.tasks.teacher: the dispatch and a batch)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sv_soar.scoring.json_object import TEACHER_PROBLEM, DuplicateKey, json_values
from sv_soar.teacher.contamination import DEFAULT_THRESHOLD


class RejectReason(StrEnum):
    EMPTY = "empty"
    TOO_LONG = "too_long"
    NOT_JSON = "not_json"
    SCHEMA = "schema"
    BAD_LABEL = "bad_label"
    QUESTION_TOO_SHORT = "question_too_short"
    QUESTION_TOO_LONG = "question_too_long"
    INJECTION = "injection"
    NOT_E1_STYLE = "not_e1_style"
    DUPLICATE_OF_HARD_SET = "duplicate_of_hard_set"
    DUPLICATE_IN_BATCH = "duplicate_in_batch"
    # E2 (sv_soar.tasks.e2.teacher_problems): the config itself
    NOT_CONFIG = "not_config"
    CONFIG_TOO_LARGE = "config_too_large"


class ProblemLimits(BaseModel):
    """Bounds on one teacher rollout; each field's description says why its default is what it is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_completion_chars: int = Field(
        16_384,
        ge=256,
        description="Longer completions (in characters; 16 KB of ASCII) are rejected as too_long "
        "before parsing. A problem is ~300 characters; 16 KB leaves room for a small model's "
        "preamble and bounds the parse time (worst case measured ~50 ms).",
    )
    question_min_chars: int = Field(
        20,
        ge=1,
        description="Protocol, two ports and one feature ('udp 5353→5353, bytes 60') need ~20.",
    )
    question_max_chars: int = Field(
        600,
        ge=1,
        description="SV-Bench E1 questions are 132-151 characters (mini set) and the canonical form "
        "stays under ~260 even with a 64-character device name; 600 admits loose spacing but "
        "not pasted logs.",
    )
    rationale_max_chars: int = Field(
        1000, ge=0, description="Optional rationale kept in meta; never shown to the student."
    )
    batch_duplicate_threshold: float = Field(
        DEFAULT_THRESHOLD,
        gt=0.0,
        le=1.0,
        description="Shingle Jaccard at which two problems of one batch count as one "
        "(same measure as the hard-set guard, contamination.py).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ProblemLimits:
        if self.question_min_chars > self.question_max_chars:
            raise ValueError(
                f"question_min_chars ({self.question_min_chars}) exceeds "
                f"question_max_chars ({self.question_max_chars})"
            )
        if self.question_max_chars > self.max_completion_chars:
            raise ValueError("question_max_chars exceeds max_completion_chars")
        return self


@dataclass(frozen=True)
class Rejection:
    reason: RejectReason
    detail: str  # for people; never echoes more than ~80 characters of the completion

    ok = False


@dataclass(frozen=True)
class TeacherProblem:
    """A validated teacher problem; `question` is already in SV-Bench's exact format."""

    question: str
    answer: str  # the task's answer (E1: "Malicious" or "Benign")
    hash: str
    rationale: str | None = None
    task: str = "e1"
    # where an oracle labels the problem (the mechanism task's rule), the teacher's own label: an agreement metric
    teacher_answer: str | None = None

    ok = True

    def to_row(self) -> dict[str, Any]:
        """A row of the problem's task (E1: an SV-Bench row); `meta.source` marks it as generated."""
        meta: dict[str, Any] = {"source": "teacher", "hash": self.hash}
        if self.rationale:
            meta["rationale"] = self.rationale
        if self.teacher_answer is not None:
            meta["teacher_answer"] = self.teacher_answer
        return {"question": self.question, "answer": self.answer, "meta": meta}


# ---------------------------------------------------------------------------------------------
# JSON extraction (raw, fenced, first balanced object: sv_soar.scoring.json_object's TEACHER_PROBLEM search)


def extract_json_object(text: str) -> dict[str, Any] | Rejection:
    """The first JSON value in `text` (the whole text, else a fenced block, else a balanced {...}: the
    TEACHER_PROBLEM search), which must be one object with no repeated key (a list of problems is not one
    problem, and a repeated "answer" would let the last one silently win)."""
    try:
        value = next(json_values(text, TEACHER_PROBLEM), _NOT_FOUND)
    except DuplicateKey as exc:
        return Rejection(RejectReason.SCHEMA, f"duplicate key {str(exc)[:40]!r} in the JSON object")
    if value is _NOT_FOUND:
        return Rejection(RejectReason.NOT_JSON, "no JSON object found (raw, fenced or {...})")
    if isinstance(value, dict):
        return value
    return Rejection(RejectReason.SCHEMA, f"JSON value is {_json_type(value)}, expected one object")


_NOT_FOUND = object()


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


# ---------------------------------------------------------------------------------------------
# Prompt-injection markers: text aimed at the student or the scorer, not a flow description.
# A denylist that runs before the E1 style allowlist (which alone would reject all of these), so
# that a teacher learning to address the scorer shows up as its own reason in the metrics.

_SEP = r"[\W_]+"
_INJECTION_MARKERS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern))
    for name, pattern in [
        ("instruction override",
         rf"\b(?:ignore|disregard|forget|override){_SEP}(?:(?:all|any|the|your|every|of|these|those)"
         rf"{_SEP})*(?:previous|prior|above|earlier|preceding|system|original|former)\b"),
        ("chat-template token", r"<\|[^|<>]{0,40}\|>|\[/?inst\]|<<\s*/?sys\s*>>"),
        ("role tag", r"</?\s*(?:s|system|assistant|user|developer|tool|im_start|im_end)\s*>"
                     r"|(?:^|[^\w-])(?:system|assistant|user|developer|human|ai)\s*:"),
        ("markdown role header", r"#{2,}\s*(?:instruction|system|response|answer|label)"),
        ("answer leak",
         rf"\b(?:answer|label|verdict|classification|ground{_SEP}?truth){_SEP}"
         rf"(?:is|are|=|should{_SEP}be|must{_SEP}be|will{_SEP}be)\b"
         r"|\b(?:answer|label|verdict)\s*[:=]|\"(?:label|confidence)\"\s*:"),
        ("labelling directive",
         rf"\b(?:label|classify|mark|flag|tag|treat|consider|call){_SEP}(?:this|it|the{_SEP}\w+)"
         rf"{_SEP}as\b"
         rf"|\byou{_SEP}(?:must|should|have{_SEP}to|need{_SEP}to){_SEP}"
         r"(?:answer|respond|say|output|label|classify|choose|pick|decide)"
         rf"|\b(?:respond|reply|output|say|answer){_SEP}(?:with|only)\b"
         rf"|\balways{_SEP}(?:answer|say|respond|output|choose|pick|label|classify)\b"),
        ("scorer reference",
         r"\b(?:rewards?|rewarded|grader|graders|grading|scorer|scoring|rubric|verifier|evaluator)\b"),
    ]
]


def find_injection(text: str) -> str | None:
    """Name of the first injection marker in `text` (after NFKC, invisible-character removal and
    case folding, so 'IGN\u200bORE previous' is caught), or None."""
    norm = unicodedata.normalize("NFKC", text)
    norm = "".join(ch for ch in norm if unicodedata.category(ch) != "Cf").casefold()
    norm = re.sub(r"\s+", " ", norm)
    for name, pattern in _INJECTION_MARKERS:
        m = pattern.search(norm)
        if m:
            return f"{name} ({m.group(0).strip()[:40]!r})"
    return None


def completion_text_rejection(text: Any, limits: ProblemLimits) -> Rejection | None:
    """The checks every task's parser starts with: text at all, not over the size limit, not blank."""
    if not isinstance(text, str):
        return Rejection(RejectReason.EMPTY, f"completion is {type(text).__name__}, not text")
    if len(text) > limits.max_completion_chars:
        return Rejection(RejectReason.TOO_LONG,
                         f"completion is {len(text)} characters, over {limits.max_completion_chars}")
    if not text.strip():
        return Rejection(RejectReason.EMPTY, "completion is empty")
    return None
