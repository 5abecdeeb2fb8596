"""What every scanner returns: SV-Bench's finding, `{"tool", "rule_id", "severity", "msg", "loc"}`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SEVERITIES = ("low", "med", "high")


def normalize_severity(value: Any) -> str:
    """SV-Bench's mapping (sv_env_config_verification, _normalize_severity): medium -> med,
    critical -> high, anything not low/med/high (semgrep's INFO, WARNING, ERROR) -> med."""
    sev = str(value).lower().strip() if value is not None else "med"
    sev = {"medium": "med", "critical": "high"}.get(sev, sev)
    return sev if sev in SEVERITIES else "med"


@dataclass(frozen=True)
class Finding:
    tool: str  # "kube-linter" or "semgrep", as SV-Bench's labels name them
    rule_id: str  # kube-linter check name, or semgrep's dotted rule id
    severity: str  # as the tool reports it ("medium", "WARNING", ...); `level` normalises it
    msg: str = ""
    loc: str = ""  # "Kind/name container" for kube-linter, "file:line" for semgrep

    @property
    def id(self) -> str:
        """The id a model answers with: "tool/rule-id"."""
        return f"{self.tool}/{self.rule_id}"

    @property
    def level(self) -> str:
        return normalize_severity(self.severity)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def finding_from_dict(data: dict[str, Any]) -> Finding:
    """An SV-Bench `info.violations` entry as a Finding."""
    return Finding(
        tool=str(data.get("tool", "")),
        rule_id=str(data.get("rule_id", "")),
        severity=str(data.get("severity", "")),
        msg=str(data.get("msg", "")),
        loc=str(data.get("loc", "")),
    )
