"""The teacher's prompt: write ONE new stepping-stone problem per rollout (docs/design.md §4).

Choices, and why:
- No questions from the data. SOAR's teacher prompt carries no seed problems; the paper found that
  showing seed questions collapses the diversity of what the teacher writes. The format is given as
  a made-up template with <placeholders> instead, so the teacher learns the shape, not the content.
- Short. The default teacher is a 135M model (docs/design.md §6) and the paper's a 3B one; every extra
  sentence is one more thing a small model copies into its answer instead of following.
- JSON out, one object, the exact keys `parse_teacher_problem` validates (schemas/e1_problem.schema.json),
  and the SV-Bench label spelling, because a rollout that does not parse is discarded and resampled.
- The purpose is stated ("a student that cannot yet solve hard flows"): SOAR's teacher is told it
  writes stepping stones; what makes one useful is left to the grounded reward to teach.
- E2: the teacher writes a config and the ids it means to put in; the prompt lists the oracle's rule
  ids (vocabulary, not data) and takes the seed's E2 options, a difficulty and a sub-skill. Its ids
  are only compared with the oracle's relabel (sv_soar/teacher/e2_problems.py).
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

_E2_SYSTEM = (
    "You write practice problems for a student model that learns to audit Kubernetes and Terraform "
    "configs for security violations."
)

# The rule ids the oracle checks (sv_soar/oracle): the teacher's vocabulary, not data. No SV-Bench
# config is shown, for the same reason as E1 (SOAR: seed problems collapse the teacher's diversity).
_E2_RULES = {
    "k8s": "kube-linter/latest-tag, kube-linter/run-as-non-root, kube-linter/no-read-only-root-fs, "
           "kube-linter/unset-cpu-requirements, kube-linter/unset-memory-requirements, "
           "kube-linter/privileged-container, kube-linter/privilege-escalation-container, "
           "kube-linter/host-network, kube-linter/host-pid, kube-linter/host-ipc, kube-linter/docker-sock, "
           "kube-linter/sensitive-host-mounts, kube-linter/drop-net-raw-capability, kube-linter/env-var-secret, "
           "kube-linter/no-anti-affinity, kube-linter/dangling-service, kube-linter/mismatching-selector, "
           "kube-linter/non-existent-service-account, kube-linter/job-ttl-seconds-after-finished",
    "tf": "semgrep/terraform.aws.security.<rule>.<rule> with <rule> one of "
          "aws-ec2-security-group-allows-public-ingress, "
          "aws-provider-static-credentials, aws-ebs-volume-unencrypted, aws-ec2-has-public-ip, "
          "aws-subnet-has-public-ip-address, aws-rds-backup-no-retention, aws-kms-no-rotation, "
          "aws-ec2-instance-metadata-service-v1-enabled, aws-db-instance-no-logging",
}
# the seed's E2 plan: "configs of controlled complexity (1 violation -> 2 -> 3 -> multi-tool)"
_E2_DIFFICULTY = {
    None: "a few violations (or none: a clean config is a fine problem too)",
    "one": "exactly one violation",
    "two": "exactly two violations",
    "several": "three to five violations",
    "multi-tool": "violations that more than one tool reports (for Kubernetes: kube-linter and semgrep)",
}
# the seed's sub-skills: "single-tool invocation, output interpretation, patch generation"
_E2_SUB_SKILL = {
    None: "find the violations",
    "detect": "find the violations",
    "read-tool-output": "turn a scanner's output for the config into the answer",
    "patch": "write a unified diff that fixes the violations",
}


def e2_teacher_prompt(difficulty: str | None = None, sub_skill: str | None = None,
                      lang: str | None = None) -> ChatPrompt:
    """E2's teacher prompt (E2's `Task.teacher_prompt`): difficulty ("one", "two", "several", "multi-tool"),
    sub_skill ("detect", "read-tool-output", "patch") and lang ("k8s", "tf") shape the config asked for."""
    for name, value, allowed in (("difficulty", difficulty, _E2_DIFFICULTY), ("sub_skill", sub_skill, _E2_SUB_SKILL),
                                 ("lang", lang, {None: 0, "k8s": 0, "tf": 0})):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {[k for k in allowed if k]}, got {value!r}")
    kind = {"k8s": "Kubernetes YAML config", "tf": "Terraform (HCL) config",
            None: "Kubernetes YAML or Terraform config"}[lang]
    rules = _E2_RULES["tf"] if lang == "tf" else _E2_RULES["k8s"] if lang == "k8s" else \
        f"{_E2_RULES['k8s']}; for Terraform: {_E2_RULES['tf']}"
    user = (
        f"Write ONE new practice problem: a short {kind} with {_E2_DIFFICULTY[difficulty]}. The student cannot "
        f"yet audit hard configs, so make a stepping stone; it will be asked to {_E2_SUB_SKILL[sub_skill]}.\n\n"
        f"Violation ids the scanners report: {rules}.\n\n"
        "Reply with only this JSON object (the config as one JSON string, newlines written as \\n):\n"
        '{"lang": "k8s" or "tf", "config": "<the config>", "violations": ["<id of each violation you put in>"]}'
    )
    return [{"role": "system", "content": _E2_SYSTEM}, {"role": "user", "content": user}]


def e1_teacher_prompt(**options: str | None) -> ChatPrompt:
    """E1's teacher prompt (E1's `Task.teacher_prompt`), a fresh copy each call; E1 takes no options."""
    if options:
        raise ValueError(f"task 'e1' takes no prompt options, got {sorted(options)}")
    return [{"role": "system", "content": _E1_SYSTEM}, {"role": "user", "content": _E1_USER}]
