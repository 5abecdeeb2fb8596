"""E1 teacher rollout -> SV-Bench problem, or the reason it cannot be one.

A teacher completion is untrusted text from a model being trained by RL against the student: it can
be empty, endless, malformed, or aimed at the scorer. SOAR discards invalid rollouts and resamples
(docs/design.md §4), and the teacher environment counts them by reason (docs/design.md §5), so every failure here is
a `Rejection` with a machine `RejectReason` and never an exception.

The checks run in this order (the first failure is the reason):
  empty / too_long      the completion itself; too_long is decided from len() before any parsing
  not_json              no JSON object found: raw JSON, else a ```json fence, else the first
                        balanced {...} (string-aware), as SV-Bench's own E1 parser does
  schema                not an object, missing/mistyped field, duplicate key
  bad_label             answer not exactly "Malicious" or "Benign" (SV-Bench labels are case-sensitive;
                        Abstain is a student answer, not a gold label)
  question_too_short/long
  injection             the question addresses the student or scorer instead of describing a flow
  not_e1_style          not a single flow record; a record written loosely is rewritten in SV-Bench's
                        exact format instead (see `canonical_e1_question`)
  duplicate_of_hard_set a copy of a hard-set question (contamination.py)
  duplicate_in_batch    a copy of an earlier valid problem of the same batch (sv_soar.tasks.teacher.validate_problems)

Extra JSON keys are allowed and dropped (decision): the stored row is rebuilt from the validated
fields only, so they cannot reach the student, and rejecting them would spend teacher samples on
a harmless habit of small models (adding "confidence" or "difficulty").
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from importlib import resources
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, ValidationError

from sv_soar.tasks.e1.question import Flow, parse_question, render_question
from sv_soar.teacher.checks import (
    ProblemLimits,
    RejectReason,
    Rejection,
    TeacherProblem,
    completion_text_rejection,
    extract_json_object,
    find_injection,
)
from sv_soar.teacher.contamination import HardSetIndex, question_hash

# ---------------------------------------------------------------------------------------------
# Fields: JSON Schema (the published contract) and pydantic (the typed object)


class E1ProblemFields(BaseModel):
    """Typed fields of one E1 teacher problem; the JSON Schema checks the same plus lengths."""

    model_config = ConfigDict(extra="ignore", strict=True)

    question: str
    answer: Literal["Malicious", "Benign"]
    rationale: str | None = None


_SCHEMA_FILES = {"e1": "e1_problem.schema.json"}


def problem_schema(task: str = "e1") -> dict[str, Any]:
    """The task's problem JSON Schema as shipped (package data, read through importlib.resources)."""
    if task not in _SCHEMA_FILES:
        raise ValueError(f"no problem schema for task {task!r}: expected one of {', '.join(_SCHEMA_FILES)}")
    name = _SCHEMA_FILES[task]
    text = resources.files("sv_soar.tasks.e1").joinpath("schemas", name).read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=32)
def _schema_validator(task: str, limits: ProblemLimits) -> jsonschema.protocols.Validator:
    schema = problem_schema(task)
    props = schema["properties"]
    props["question"]["minLength"] = limits.question_min_chars
    props["question"]["maxLength"] = limits.question_max_chars
    props["rationale"]["maxLength"] = limits.rationale_max_chars
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _field_rejection(obj: dict[str, Any], task: str, limits: ProblemLimits) -> Rejection | None:
    """Map JSON Schema errors to one reason: structure first, then label, then question length."""
    errors = list(_schema_validator(task, limits).iter_errors(obj))
    if not errors:
        return None
    ranked: list[tuple[int, Rejection]] = []
    for err in errors:
        where = next(iter(err.absolute_path), None)
        value = err.instance
        if where == "answer" and err.validator == "enum":
            ranked.append((1, Rejection(RejectReason.BAD_LABEL,
                                        f"answer {_snippet(value)} is not 'Malicious' or 'Benign'")))
        elif where == "question" and err.validator == "minLength":
            ranked.append((2, Rejection(RejectReason.QUESTION_TOO_SHORT,
                                        f"question is {len(value)} characters, under "
                                        f"{limits.question_min_chars}")))
        elif where == "question" and err.validator == "maxLength":
            ranked.append((2, Rejection(RejectReason.QUESTION_TOO_LONG,
                                        f"question is {len(value)} characters, over "
                                        f"{limits.question_max_chars}")))
        else:
            field_name = where if where is not None else "problem"
            ranked.append((0, Rejection(RejectReason.SCHEMA,
                                        f"{field_name}: {err.validator} check failed "
                                        f"({_snippet(err.message, 120)})")))
    return min(ranked, key=lambda pair: pair[0])[1]


def _snippet(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# E1 style: one flow record, rewritten in SV-Bench's exact format.

E1_DEFAULT_DEVICE = "unknown-device"  # SV-Bench's fallback, and the only device in IoT-23 E1
MAX_DURATION_S = 1e6  # ~11.6 days; longer is not a Zeek conn record a student will meet
MAX_BYTES = 10**12

# Loose spellings a small teacher produces: -> or => for the arrow, missing "Device ... observed",
# "duration: 3.1s", flags without brackets, a missing or partial "Decide" suffix. Fields keep
# SV-Bench's order; anything else (prose, a second record, hints) does not match.
_E1_LOOSE = re.compile(
    r"""^(?:device\s+(?P<device>[a-z0-9][a-z0-9._-]{0,63})\s+observed\s+)?
    (?P<proto>tcp|udp|icmp)\s+
    (?P<sport>\d{1,6})(?:\s*(?:→|->|=>|⟶|➝)\s*|\s+to\s+)(?P<dport>\d{1,6})
    (?:\s*,\s*duration\s*[:=]?\s*(?P<duration>\?|\d{1,12}(?:\.\d{1,20})?(?:e[+-]?\d{1,2})?)
       (?:\s*(?:s|sec|secs|seconds))?)?
    (?:\s*,\s*bytes\s*[:=]?\s*(?P<bytes>\?|\d{1,15}))?
    (?:\s*,\s*flags\s*[:=]?\s*(?:\[\s*(?P<flags>[a-z^]{0,32}|\?)\s*\]|(?P<flags_bare>[a-z^]{1,32})))?
    \s*\.?
    (?:\s*decide\s*:?\s*malicious\s+or\s+benign\s*(?:\(\s*you\s+may\s+abstain\s+if\s+unsure\s*\)\s*)?\.?)?
    \s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_HAS_PROTO = re.compile(r"\b(?:tcp|udp|icmp)\b", re.IGNORECASE)
_HAS_PORTS = re.compile(r"\d\s*(?:→|->|=>|⟶|➝)\s*\d|\d\s+to\s+\d", re.IGNORECASE)


def canonical_e1_question(question: str) -> tuple[str | None, str]:
    """(the question in SV-Bench's exact format, "") or (None, why it is not one E1 flow record)."""
    text = unicodedata.normalize("NFKC", question)
    text = re.sub(r"\s+", " ", text).strip()
    m = _E1_LOOSE.match(text)
    if m is None:
        if not _HAS_PROTO.search(text):
            return None, "no protocol (tcp, udp or icmp)"
        if not _HAS_PORTS.search(text):
            return None, "no ports written as <source>→<destination>"
        return None, "not a single SV-Bench flow record (extra, missing or reordered text)"
    sport, dport = int(m["sport"]), int(m["dport"])
    if sport > 65535 or dport > 65535:
        return None, f"port out of range ({sport}→{dport})"
    duration = None if m["duration"] in (None, "?") else float(m["duration"])
    if duration is not None and not (math.isfinite(duration) and duration <= MAX_DURATION_S):
        return None, f"duration {m['duration'][:20]} out of range"
    nbytes = None if m["bytes"] in (None, "?") else int(m["bytes"])
    if nbytes is not None and nbytes > MAX_BYTES:
        return None, f"bytes {m['bytes'][:20]} out of range"
    flags = m["flags"] if m["flags"] is not None else (m["flags_bare"] or "")
    flow = Flow(
        proto=m["proto"].lower(),
        sport=sport,
        dport=dport,
        duration=duration,
        bytes=nbytes,
        history="" if flags == "?" else flags,  # SV-Bench writes missing flags as "flags []"
    )
    # The project's one E1 renderer (SV-Bench's render_prompt: a zero shows as "?", a float as str()).
    canonical = render_question(flow, device=m["device"] or E1_DEFAULT_DEVICE)
    if parse_question(canonical) is None:  # e.g. a duration under 1e-4 prints as 1e-05
        return None, "flow cannot be written in SV-Bench's format"
    return canonical, ""


# ---------------------------------------------------------------------------------------------
# One rollout


def parse_e1_problem(
    text: Any,
    *,
    limits: ProblemLimits | None = None,
    hard_set_index: HardSetIndex | None = None,
    options: dict[str, Any] | None = None,
) -> TeacherProblem | Rejection:
    """Validate one E1 teacher completion (E1's `Task.parse_problem`). Never raises on any `text`.
    E1 has no problem options; `options` is accepted, and ignored, so every task's parser takes the same call."""
    limits = limits or ProblemLimits()
    rejection = completion_text_rejection(text, limits)
    if rejection is not None:
        return rejection

    obj = extract_json_object(text)
    if isinstance(obj, Rejection):
        return obj
    rejection = _field_rejection(obj, "e1", limits)
    if rejection is not None:
        return rejection
    try:
        fields = E1ProblemFields.model_validate(obj)
    except ValidationError as exc:  # the schema and the model disagree: a bug, reported as schema
        first = exc.errors()[0]
        return Rejection(RejectReason.SCHEMA, f"{'.'.join(map(str, first['loc']))}: {first['msg']}")

    marker = find_injection(fields.question)
    if marker is not None:
        return Rejection(RejectReason.INJECTION, f"question carries {marker}")
    question, why = canonical_e1_question(fields.question)
    if question is None:
        return Rejection(RejectReason.NOT_E1_STYLE, why)

    if hard_set_index is not None:
        dup, matched, similarity = hard_set_index.is_near_duplicate(question)
        if dup:
            return Rejection(RejectReason.DUPLICATE_OF_HARD_SET,
                             f"matches hard-set item {matched} (similarity {similarity:.3f})")
    rationale = fields.rationale.strip() if fields.rationale else None
    return TeacherProblem(
        question=question,
        answer=fields.answer,
        hash=question_hash(question),
        rationale=rationale or None,
        task="e1",
    )
