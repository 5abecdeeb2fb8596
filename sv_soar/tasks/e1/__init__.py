"""E1 as a `Task`: SV-Bench's network-log classification (IoT-23 flows, Malicious / Benign).

Scoring is SV-Bench's E1 rubric (`sv_soar.tasks.e1.scoring`); success is the correct label (docs/design.md §4,
grounding="correctness"). The breakdown key of a row is its attack family when the row names one,
else its Zeek connection state (`meta.scenario`): SV-Bench's IoT-23 rows all carry
attack_family "NA", so for them the key is the connection state (S0, SF, OTH, ...), while the
built-in generator's malicious rows carry IoT-23 family names (PartOfAHorizontalPortScan, C&C, ...).
"""

from __future__ import annotations

from typing import Any

from sv_soar.tasks.e1.scoring import (E1_ANSWERS, E1_SYSTEM_PROMPT, coerce_answer, e1_components, is_correct,
                                     parse_e1_output)
from sv_soar.tasks.e1.flows import generate_e1_flows
from sv_soar.tasks.task import Row, Task
from sv_soar.tasks.e1.teacher_problems import parse_e1_problem
from sv_soar.tasks.e1.teacher_prompt import e1_teacher_prompt

# attack_family values that mean "no family" (SV-Bench writes "NA"; Zeek writes "-")
_NO_FAMILY = {"", "NA", "-", "None"}


def score(text: str, row: Row) -> dict[str, float]:
    """All four SV-Bench components and the weighted "reward" of one completion."""
    return e1_components(parse_e1_output(text), row["answer"])


def is_success(text: str, row: Row) -> bool:
    """The parsed label equals the row's answer (case-insensitive, as SV-Bench compares)."""
    return is_correct(parse_e1_output(text), row["answer"])


def calibration_point(text: str, row: Row) -> tuple[float | None, bool, bool] | None:
    """(stated confidence, label correct, abstained) of a parsed answer; None when nothing parsed."""
    output = parse_e1_output(text)
    if output is None:
        return None
    return output.confidence, is_correct(output, row["answer"]), output.label == "Abstain"


def breakdown(row: Row) -> str:
    """Attack family when the row names one, else the Zeek connection state, else "unknown"."""
    meta = row.get("meta") or {}
    family = str(meta.get("attack_family") or "").strip()
    if family not in _NO_FAMILY:
        return family
    scenario = str(meta.get("scenario") or "").strip()
    return scenario or "unknown"


def validate_row(value: Any) -> Row:
    """Check one SV-Bench E1 row and return {"question", "answer", "meta"}; ValueError says why.

    SV-Bench's own loader accepts "prompt" for "question" (older builds), so this does too.
    """
    if not isinstance(value, dict):
        raise ValueError(f"row is a JSON {type(value).__name__}, expected an object")
    key = "question" if "question" in value or "prompt" not in value else "prompt"
    if key not in value:
        raise ValueError("'question' is missing")
    question = value[key]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{key!r} must be a non-empty string, got {_describe(question)}")
    if "answer" not in value:
        raise ValueError("'answer' is missing")
    answer = _canonical_answer(value["answer"])
    if answer is None:
        raise ValueError(
            f"'answer' is {_describe(value['answer'])}: expected 'Malicious' or 'Benign' (any case), "
            "or a ClassLabel 0 / 1"
        )
    meta = value.get("meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise ValueError(f"'meta' must be an object, got {_describe(meta)}")
    return {"question": question, "answer": answer, "meta": dict(meta)}


def _canonical_answer(value: Any) -> str | None:
    """'Malicious' / 'Benign' for any answer SV-Bench scores as one (its rubric lower-cases both sides
    and reads a ClassLabel 1 as Malicious, 0 as Benign); None for anything else."""
    if isinstance(value, (bool, int)) and value in (0, 1):
        return coerce_answer(value)
    if isinstance(value, str):
        return {a.lower(): a for a in E1_ANSWERS}.get(value.lower())
    return None


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


E1_TASK = Task(
    name="e1",
    system_prompt=E1_SYSTEM_PROMPT,
    score=score,
    is_success=is_success,
    breakdown=breakdown,
    validate_row=validate_row,
    calibration_point=calibration_point,
    success_metrics=(("reward_accuracy", 1.0), ("accuracy", 1.0)),  # SV-Bench's accuracy reward: label == answer
    svbench_envs=("sv-env-network-logs",),
    teacher_prompt=e1_teacher_prompt,
    parse_problem=parse_e1_problem,
    hub_dataset="intertwine-ai/security-verifiers-e1",
    hub_dataset_env="E1_HF_REPO",  # as SV-Bench's sv_shared/dataset_loader.py
    svbench_paths=("e1.jsonl", "datasets/public_mini/e1.jsonl",
                   "environments/sv-env-network-logs/data/iot23-train-dev-test-v1.jsonl"),
    generate_rows=generate_e1_flows,
)
