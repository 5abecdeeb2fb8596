"""SV-Bench's E1 question format: one Zeek flow record as SV-Bench's `scripts/data/build_e1_iot23.py`
(`render_prompt`) writes it. Below both the built-in flow generator (sv_soar.tasks.e1.flows) and the
teacher's E1 problem check (sv_soar.tasks.e1.teacher_problems), which rewrites a loosely written record in it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

# SV-Bench build_e1_iot23.py render_prompt; "?" for a missing port/duration/bytes, [] for no history
PROMPT_RE = re.compile(
    r"^Device (?P<device>\S+) observed (?P<proto>tcp|udp|icmp) (?P<sport>\d+|\?)→(?P<dport>\d+|\?), "
    r"duration (?P<duration>\?|\d+(?:\.\d+)?), bytes (?P<bytes>\?|\d+), flags \[(?P<history>[A-Za-z^]*)\]\. "
    r"Decide: Malicious or Benign \(you may Abstain if unsure\)\.$"
)


@dataclass(frozen=True)
class Flow:
    """What an E1 prompt shows about one Zeek connection."""

    proto: str  # tcp | udp | icmp
    sport: int | None  # ICMP: type
    dport: int | None  # ICMP: code
    duration: float | None  # seconds, 6 decimals; None renders "?"
    bytes: int | None  # orig + resp payload bytes; None renders "?"
    history: str  # Zeek history, "" when none


def render_question(flow: Flow, device: str = "unknown-device") -> str:
    """The SV-Bench E1 prompt for one flow."""

    def shown(value: object) -> str:
        return "?" if value is None or value == 0 else str(value)

    sport = "?" if flow.sport is None else str(flow.sport)
    dport = "?" if flow.dport is None else str(flow.dport)
    return (
        f"Device {device} observed {flow.proto} {sport}→{dport}, duration {shown(flow.duration)}, "
        f"bytes {shown(flow.bytes)}, flags [{flow.history}]. "
        "Decide: Malicious or Benign (you may Abstain if unsure)."
    )


def parse_question(text: str) -> Flow | None:
    """The flow an SV-Bench E1 prompt describes, or None when the text is not in that format."""
    match = PROMPT_RE.match(text)
    if match is None:
        return None

    def number(field: str, kind: Callable[[str], float | int]):
        value = match.group(field)
        return None if value == "?" else kind(value)

    return Flow(
        proto=match.group("proto"),
        sport=number("sport", int),
        dport=number("dport", int),
        duration=number("duration", float),
        bytes=number("bytes", int),
        history=match.group("history"),
    )
