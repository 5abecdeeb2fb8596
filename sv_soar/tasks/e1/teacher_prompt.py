"""E1's teacher prompt: write ONE new stepping-stone problem per rollout (docs/design.md §4).

Choices, and why:
- No questions from the data. SOAR's teacher prompt carries no seed problems; the paper found that
  showing seed questions collapses the diversity of what the teacher writes. The format is given as
  a made-up template with <placeholders> instead, so the teacher learns the shape, not the content.
- Short. The default teacher is a 135M model (docs/design.md §6) and the paper's a 3B one; every extra
  sentence is one more thing a small model copies into its answer instead of following.
- JSON out, one object, the exact keys `parse_teacher_problem` validates (schemas/e1_problem.schema.json, beside
  this module), and the SV-Bench label spelling, because a rollout that does not parse is discarded and resampled.
- The purpose is stated ("a student that cannot yet solve hard flows"): SOAR's teacher is told it
  writes stepping stones; what makes one useful is left to the grounded reward to teach.
"""

from __future__ import annotations

from sv_soar.generation import ChatPrompt

_E1_SYSTEM = (
    "You write practice problems for a student model that learns to label network flows "
    "as Malicious or Benign."
)

# The <...> template is invented, not copied from SV-Bench rows: it fixes the wording the student
# sees at test time without showing any real flow.
_E1_USER = """Write ONE new practice problem. The student cannot yet solve hard flows, so make a \
stepping stone: a flow whose label it can learn from.

The question is one flow record in exactly this form:
Device <device-name> observed <tcp|udp|icmp> <source-port>→<destination-port>, duration <seconds or ?>, \
bytes <total bytes or ?>, flags [<Zeek history letters>]. Decide: Malicious or Benign (you may Abstain if unsure).

Reply with only this JSON object:
{"question": "<the flow record>", "answer": "Malicious" or "Benign", "rationale": "<one short reason>"}"""

def e1_teacher_prompt(**options: str | None) -> ChatPrompt:
    """E1's teacher prompt (E1's `Task.teacher_prompt`), a fresh copy each call; E1 takes no options."""
    if options:
        raise ValueError(f"task 'e1' takes no prompt options, got {sorted(options)}")
    return [{"role": "system", "content": _E1_SYSTEM}, {"role": "user", "content": _E1_USER}]
