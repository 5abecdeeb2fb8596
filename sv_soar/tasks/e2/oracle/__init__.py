"""The E2 oracle: executable, offline ground truth for a Kubernetes or Terraform config.

    report = scan_config(text)            # lang detected; or scan_config(text, "k8s")
    report.findings                       # [Finding(tool, rule_id, severity, msg, loc), ...]
    report.ids()                          # {"kube-linter/latest-tag": "med", ...}, de-duplicated

Tools, as SV-Bench names them (docs/design.md §3):
    kube-linter  the kube-linter binary when it is on PATH, else the same checks as Rego policies
                 (policies/kube_linter.rego) evaluated in-process by regopy, under kube-linter's ids
    semgrep      semgrep with local rule files (semgrep_rules/): yaml.kubernetes.security.* for K8s,
                 terraform.aws.security.* for Terraform; the registry is never contacted

SV-Bench scores a K8s config against kube-linter and a Terraform one against semgrep
(`PRIMARY_TOOL`); the other tool's findings are reported too.

Configs are untrusted: YAML is loaded with limits on size, depth and alias expansion (safe_yaml.py),
every scanner runs as an argument list with a time limit in a temporary folder that is removed
(process.py). A config the oracle cannot read has `report.rejected` set and no findings, as
kube-linter reports nothing on a file it cannot parse (SV-Bench's Helm templates).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from sv_soar.tasks.e2.oracle import kubelinter, rego, semgrep
from sv_soar.tasks.e2.oracle.findings import SEVERITIES, Finding, finding_from_dict, normalize_severity
from sv_soar.tasks.e2.oracle.process import ScannerError
from sv_soar.tasks.e2.oracle.safe_yaml import DEFAULT_LIMITS, ConfigRejected, YamlLimits, check_size

LANGS = ("k8s", "tf")
TOOLS = ("kube-linter", "semgrep")
PRIMARY_TOOL = {"k8s": "kube-linter", "tf": "semgrep"}
KubeLinterEngine = Literal["auto", "binary", "rego"]

_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_HCL_BLOCK = re.compile(r"^\s*(resource|data|provider|variable|output|module|terraform|locals)\b[^\n:]*\{", re.M)


@dataclass(frozen=True)
class OracleReport:
    lang: str
    findings: tuple[Finding, ...]
    rejected: str | None = None  # why the config could not be read; then there are no findings
    engines: dict[str, str] = field(default_factory=dict)  # tool -> "binary" | "rego" | "semgrep"
    seconds: dict[str, float] = field(default_factory=dict)  # tool -> wall time of this scan
    errors: dict[str, str] = field(default_factory=dict)  # tool -> why it gave no answer

    def ids(self, tools: Iterable[str] | None = None) -> dict[str, str]:
        """{"tool/rule-id": severity}, each id once (its highest severity), for `tools` (default all)."""
        wanted = set(tools) if tools is not None else None
        out: dict[str, str] = {}
        for f in self.findings:
            if wanted is not None and f.tool not in wanted:
                continue
            if f.id not in out or _SEVERITY_RANK[f.level] > _SEVERITY_RANK[out[f.id]]:
                out[f.id] = f.level
        return out


def detect_lang(text: str) -> str:
    """"tf" when the text looks like HCL (a resource/provider/variable/... block), else "k8s"."""
    return "tf" if _HCL_BLOCK.search(text) else "k8s"


def kube_linter_engine(engine: KubeLinterEngine = "auto") -> str:
    if engine == "auto":
        return "binary" if kubelinter.kube_linter_binary() else "rego"
    if engine not in ("binary", "rego"):
        raise ValueError(f"kube_linter engine must be 'auto', 'binary' or 'rego', got {engine!r}")
    return engine


def scan_config(
    text: str,
    lang: str | None = None,
    *,
    tools: Iterable[str] = TOOLS,
    kube_linter: KubeLinterEngine = "auto",
    limits: YamlLimits = DEFAULT_LIMITS,
    semgrep_result: tuple[list[Finding], str | None, float] | None = None,
) -> OracleReport:
    """Run the oracle's tools on one config. Never raises on the config's content.
    `semgrep_result` (findings, parse error, seconds) is semgrep's answer from a batch run (scan_many)."""
    lang = lang or detect_lang(text if isinstance(text, str) else "")
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    tools = tuple(t for t in TOOLS if t in set(tools))
    findings: list[Finding] = []
    engines: dict[str, str] = {}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    try:
        check_size(text, limits)
        if lang == "k8s":
            start = time.perf_counter()
            documents = rego.load_yaml_documents(text, limits)  # rejects before any tool runs
            seconds["yaml"] = time.perf_counter() - start
    except ConfigRejected as exc:
        return OracleReport(lang, (), rejected=str(exc))

    if lang == "k8s" and "kube-linter" in tools:
        engine = kube_linter_engine(kube_linter)
        engines["kube-linter"] = engine
        start = time.perf_counter()
        try:
            if engine == "binary":
                findings += kubelinter.scan(text)
            else:
                findings += rego.findings_of(rego.evaluate(rego.k8s_objects(documents)))
        except ScannerError as exc:
            errors["kube-linter"] = str(exc)
        seconds["kube-linter"] = time.perf_counter() - start
    if "semgrep" in tools:
        engines["semgrep"] = "semgrep"
        start = time.perf_counter()
        try:
            if semgrep_result is not None:
                found, parse_error, spent = semgrep_result
                start -= spent
            else:
                found, parse_error = semgrep.scan(text, lang)
            findings += found
            if parse_error and lang == "tf":
                return OracleReport(lang, (), rejected=f"not HCL: {parse_error}", engines=engines,
                                    seconds={"semgrep": time.perf_counter() - start})
        except ScannerError as exc:
            errors["semgrep"] = str(exc)
        seconds["semgrep"] = time.perf_counter() - start
    return OracleReport(lang, tuple(findings), engines=engines, seconds=seconds, errors=errors)


class OracleCache:
    """scan_config memoised on (text, lang, tools): the rubric meets the same config once per rollout
    and the same patched text more than once. Bounded, thread-safe, LRU."""

    def __init__(self, size: int = 4096, **scan_kwargs) -> None:
        self.size = size
        self.scan_kwargs = scan_kwargs
        self._entries: OrderedDict[str, OracleReport] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(text: str, lang: str | None, tools: tuple[str, ...]) -> str:
        return hashlib.sha256(repr((lang, tools)).encode() + b"\0" + str(text).encode("utf-8", "replace")).hexdigest()

    def _get(self, key: str) -> OracleReport | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        return None

    def _put(self, key: str, report: OracleReport) -> None:
        with self._lock:
            self._entries[key] = report
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def scan(self, text: str, lang: str | None = None, tools: Iterable[str] = TOOLS) -> OracleReport:
        tools = tuple(t for t in TOOLS if t in set(tools))
        key = self._key(text, lang, tools)
        report = self._get(key)
        if report is None:
            report = scan_config(text, lang, tools=tools, **self.scan_kwargs)
            self._put(key, report)
        return report

    def scan_many(self, items: Iterable[tuple[str, str]], tools: Iterable[str] = TOOLS) -> list[OracleReport]:
        """Reports of many (text, lang) configs, semgrep's share in one run a language (its start-up,
        ~2 s, paid once instead of once a config: a teacher batch of 256 configs)."""
        tools = tuple(t for t in TOOLS if t in set(tools))
        items = list(items)
        todo = [(i, text, lang) for i, (text, lang) in enumerate(items)
                if self._get(self._key(text, lang, tools)) is None]
        batched: dict[int, tuple[list[Finding], str | None, float]] = {}
        if "semgrep" in tools:
            for lang in LANGS:
                names = {f"c{i:05d}{'.tf' if lang == 'tf' else '.yaml'}": (i, text)
                         for i, text, item_lang in todo if item_lang == lang and _readable(text, lang)}
                if not names:
                    continue
                start = time.perf_counter()
                try:
                    found, errors = semgrep.scan_files({n: t for n, (_, t) in names.items()}, lang)
                except ScannerError:
                    continue  # each config is then scanned on its own, which reports the error
                share = (time.perf_counter() - start) / len(names)
                for name, (i, _) in names.items():
                    batched[i] = (found[name], errors.get(name), share)
        for i, text, lang in todo:
            report = scan_config(text, lang, tools=tools, semgrep_result=batched.get(i), **self.scan_kwargs)
            self._put(self._key(text, lang, tools), report)
        return [self.scan(text, lang, tools) for text, lang in items]


def _readable(text: str, lang: str) -> bool:
    """Whether a config passes the limits scan_config checks before any tool runs; a batch must not
    hand semgrep what scan_config would refuse (semgrep expands a billion-laughs file: minutes)."""
    try:
        check_size(text)
        if lang == "k8s":
            rego.load_yaml_documents(text)
    except ConfigRejected:
        return False
    return True


__all__ = [
    "LANGS",
    "PRIMARY_TOOL",
    "TOOLS",
    "ConfigRejected",
    "Finding",
    "OracleCache",
    "OracleReport",
    "ScannerError",
    "YamlLimits",
    "detect_lang",
    "kube_linter_engine",
    "finding_from_dict",
    "normalize_severity",
    "scan_config",
]
