"""E2's teacher prompt: write ONE config with the violations it means to put in (docs/design.md §4).

As E1's (sv_soar/tasks/e1/teacher_prompt.py, where the choices are explained): no questions from the data, short,
one JSON object out. The teacher writes a config and the ids it means to put in; the prompt lists the oracle's rule
ids (vocabulary, not data) and takes the seed's E2 options, a difficulty, a sub-skill and a language, checked by
E2Options (options.py). Its ids are only compared with the oracle's relabel (teacher_problems.py).
"""

from __future__ import annotations

from sv_soar.generation import ChatPrompt
from sv_soar.tasks.e2.options import E2Options

_E2_SYSTEM = (
    "You write practice problems for a student model that learns to audit Kubernetes and Terraform "
    "configs for security violations."
)

# The rule ids the oracle checks (sv_soar/tasks/e2/oracle): the teacher's vocabulary, not data. No SV-Bench
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
# what each E2Options value asks for (options.py)
_E2_DIFFICULTY = {
    None: "a few violations (or none: a clean config is a fine problem too)",
    "one": "exactly one violation",
    "two": "exactly two violations",
    "several": "three to five violations",
    "multi-tool": "violations that more than one tool reports (for Kubernetes: kube-linter and semgrep)",
}
_E2_SUB_SKILL = {
    None: "find the violations",
    "detect": "find the violations",
    "read-tool-output": "turn a scanner's output for the config into the answer",
    "patch": "write a unified diff that fixes the violations",
}


def e2_teacher_prompt(difficulty: str | None = None, sub_skill: str | None = None,
                      lang: str | None = None) -> ChatPrompt:
    """E2's teacher prompt (E2's `Task.teacher_prompt`): the options (E2Options: difficulty, sub_skill, lang) shape
    the config asked for."""
    E2Options(difficulty=difficulty, sub_skill=sub_skill, lang=lang)  # a ValueError naming the option
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


