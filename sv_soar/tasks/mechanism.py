"""The mechanism task: E1-style flows whose label a rule computes, built so that "does SOAR work" is knowable
(docs/design.md §7, issue 27).

    rule (the oracle)   Malicious iff the flow's duration is unknown ("duration ?"), else Benign
    planted cue         the protocol: udp -> Malicious, tcp -> Benign, icmp -> either (the `+mechanism-cue` warm start)
    hard item           a flow where the cue and the rule disagree: tcp with "duration ?", udp with a known duration
    twin                the same flow with the duration toggled: the opposite label, and the cue agrees
    stepping stone      an icmp flow (the cue is neutral there, so a student is near p = 0.5 and its groups vary)

Every label, the hard set's and the teacher's problems' alike, comes from the rule; a teacher's own label is kept
only as an agreement metric (meta.teacher_answer). The student answers in one word, scored on its first word
("Mal…" / "Ben…"), so a rollout is one or two tokens.

A binary task's per-item accuracy cannot tell learning from a prior flip: a constant answer lifts accuracy on a
one-class set toward 1. Pair accuracy can: J = p(correct | x) + p(correct | x') − 1 over a hard item x and its twin
x' is exactly 0 for any answer that ignores the duration (a constant, the label prior, the protocol cue). The task
sets `twin_of`, so Acc on Q_R (the teacher's grounded reward) is J over Q_R's pairs (sv_soar.grounded).
"""

from __future__ import annotations

import random
from typing import Any

from sv_soar.tasks.e1.question import Flow, parse_question, render_question
from sv_soar.tasks.task import Row, Task
from sv_soar.teacher.checks import Rejection, TeacherProblem
from sv_soar.tasks.e1.teacher_problems import parse_e1_problem
from sv_soar.tasks.e1.teacher_prompt import e1_teacher_prompt

MALICIOUS, BENIGN = "Malicious", "Benign"
CUE = {"udp": MALICIOUS, "tcp": BENIGN}  # the planted shortcut; icmp has none
SYSTEM_PROMPT = "You classify one network flow. Answer with one word: Malicious or Benign."
KINDS = ("hard", "twin", "stone")


def rule_label(flow: Flow) -> str:
    """The oracle: Malicious iff the duration is unknown."""
    return MALICIOUS if flow.duration is None else BENIGN


def flow_of(row: Row) -> Flow:
    flow = parse_question(row["question"])
    if flow is None:
        raise ValueError("'question' is not one E1 flow record in SV-Bench's format")
    return flow


def cue_relation(row: Row) -> str:
    """'agree' / 'disagree' when the protocol cue predicts the rule's label / the other one, 'neutral' for icmp."""
    flow = flow_of(row)
    if flow.proto not in CUE:
        return "neutral"
    return "agree" if CUE[flow.proto] == rule_label(flow) else "disagree"


def is_stepping_stone(row: Row) -> bool:
    """A problem where the cue is neutral (icmp): its groups carry gradient onto the duration."""
    return cue_relation(row) == "neutral"


def answer_label(text: str) -> str | None:
    """The label of a one-word answer: its first word, 'Mal…' or 'Ben…' in any case; None for anything else."""
    words = str(text).strip().split(maxsplit=1)
    word = words[0].strip("\"'*.,:;!`").lower() if words else ""
    if word.startswith("mal"):
        return MALICIOUS
    if word.startswith("ben"):
        return BENIGN
    return None


def score(text: str, row: Row) -> dict[str, float]:
    label = answer_label(text)
    correct = label == row["answer"]
    return {"reward": float(correct), "accuracy": float(correct), "format": float(label is not None)}


def is_success(text: str, row: Row) -> bool:
    return answer_label(text) == row["answer"]


def _toggled_duration(flow: Flow) -> float | None:
    """The twin's duration: unknown for a known one; for an unknown one a value drawn from the flow itself, so
    the same row always has the same twin."""
    if flow.duration is not None:
        return None
    rng = random.Random(render_question(flow))
    return round(rng.uniform(0.05, 30.0), 6)


def twin_of(row: Row) -> Row:
    """The row's twin: identical but for the duration, labelled by the rule (so the opposite label)."""
    flow = flow_of(row)
    twin = Flow(flow.proto, flow.sport, flow.dport, _toggled_duration(flow), flow.bytes, flow.history)
    meta = {k: v for k, v in (row.get("meta") or {}).items() if k not in ("kind", "hash", "fail_at_k")}
    return {"question": render_question(twin), "answer": rule_label(twin), "meta": {**meta, "kind": "twin"}}


def validate_row(value: Any) -> Row:
    """One row: an E1 flow record whose answer is the rule's label (a row the rule disagrees with is refused)."""
    if not isinstance(value, dict):
        raise ValueError(f"row is a JSON {type(value).__name__}, expected an object")
    question = value.get("question")
    if not isinstance(question, str):
        raise ValueError("'question' must be a string")
    flow = flow_of({"question": question})
    if value.get("answer") != rule_label(flow):
        raise ValueError(f"'answer' is {str(value.get('answer'))[:40]!r}, but the rule says {rule_label(flow)!r} "
                         "(Malicious iff the duration is unknown)")
    meta = value.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    return {"question": question, "answer": rule_label(flow), "meta": dict(meta)}


def breakdown(row: Row) -> str:
    """The row's protocol and its relation to the cue (e.g. 'tcp, cue disagrees')."""
    relation = cue_relation(row)
    return f"{flow_of(row).proto}, cue {'is neutral' if relation == 'neutral' else relation + 's'}"


def parse_problem(text: Any, *, limits=None, hard_set_index=None, options=None) -> TeacherProblem | Rejection:
    """A teacher completion in E1's problem format (sv_soar.tasks.e1.teacher_problems), relabelled by the rule; the
    teacher's own label is kept as `teacher_answer` (the agreement metric), never used."""
    problem = parse_e1_problem(text, limits=limits, hard_set_index=hard_set_index, options=options)
    if isinstance(problem, Rejection):
        return problem
    flow = parse_question(problem.question)
    return TeacherProblem(question=problem.question, answer=rule_label(flow), hash=problem.hash,
                          rationale=problem.rationale, task="mechanism", teacher_answer=problem.answer)


# --- rows ---------------------------------------------------------------------------------------------------

_PORTS = {"tcp": (22, 23, 80, 443, 8080, 2323, 37215), "udp": (53, 123, 161, 1900, 5353, 69), "icmp": (0, 3, 8, 11)}
_FLAGS = {"tcp": ("S", "ShAdDaf", "ShADadfF", "SaR", "Dd", "ShAdDafF"), "udp": ("D", "Dd", ""), "icmp": ("",)}


def random_flow(rng: random.Random, proto: str, duration_known: bool) -> Flow:
    """One flow of `proto` with a known or an unknown duration; the other fields random (they carry no signal)."""
    if proto == "icmp":
        sport, dport = rng.choice(_PORTS["icmp"]), rng.choice((0, 1, 3))
    else:
        sport, dport = rng.randint(1024, 65535), rng.choice(_PORTS[proto])
    duration = round(rng.uniform(0.05, 30.0), 6) if duration_known else None
    size = rng.choice((None, rng.randint(40, 20000)))
    return Flow(proto, sport, dport, duration, size, rng.choice(_FLAGS[proto]))


def mechanism_row(flow: Flow, kind: str) -> Row:
    return {"question": render_question(flow), "answer": rule_label(flow), "meta": {"source": "sv-soar-mechanism",
                                                                                    "kind": kind}}


def hard_rows(n: int, seed: int) -> list[Row]:
    """n distinct hard items, half tcp with an unknown duration (Malicious) and half udp with a known one (Benign)."""
    return _distinct(n, seed, lambda rng, i: mechanism_row(
        random_flow(rng, "tcp", False) if i % 2 == 0 else random_flow(rng, "udp", True), "hard"))


def stepping_stone_rows(n: int, seed: int) -> list[Row]:
    """n distinct icmp flows, half with an unknown duration: what an oracle curriculum trains on."""
    return _distinct(n, seed, lambda rng, i: mechanism_row(random_flow(rng, "icmp", i % 2 == 0), "stone"))


def cue_agreeing_rows(n: int, seed: int) -> list[Row]:
    """n distinct flows the cue gets right (tcp known, udp unknown): problems that teach nothing new."""
    return _distinct(n, seed, lambda rng, i: mechanism_row(
        random_flow(rng, "tcp", True) if i % 2 == 0 else random_flow(rng, "udp", False), "agree"))


def generate_rows(n: int, seed: int = 0) -> list[Row]:
    """source = "builtin": n hard items (the cold-start set; their twins come from `twin_of`)."""
    return hard_rows(n, seed)


def _distinct(n: int, seed: int, make) -> list[Row]:
    rng, rows, seen = random.Random(seed), [], set()
    while len(rows) < n:
        row = make(rng, len(rows))
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    return rows


MECHANISM_TASK = Task(
    name="mechanism",
    system_prompt=SYSTEM_PROMPT,
    score=score,
    is_success=is_success,
    breakdown=breakdown,
    validate_row=validate_row,
    answer_tokens=1,  # "Mal" / "Ben": the first token of either word decides
    teacher_prompt=e1_teacher_prompt,
    parse_problem=parse_problem,
    generate_rows=generate_rows,
    twin_of=twin_of,
    stepping_stone=is_stepping_stone,
)
