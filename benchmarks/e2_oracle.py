"""The E2 oracle against SV-Bench's labels, and what it costs.

    .venv/bin/python benchmarks/e2_oracle.py                     # ../shared/svbench-mini/e2.jsonl
    .venv/bin/python benchmarks/e2_oracle.py --json out.json --timing-configs 10

Agreement: for every row, the oracle's de-duplicated ids (kube-linter checks as Rego, or the binary
when on PATH; semgrep with the local rules) against the row's kube-linter/semgrep labels, counted per
rule as true/false positives and misses over (row, id) pairs; micro-F1 over the Kubernetes rows
(the goal is >= 0.95) and over the Terraform rows.
Time: oracle time per config (Rego: every K8s row; semgrep: --timing-configs single-config runs per
language, since each run pays semgrep's start-up) and E2 rubric time per rollout (a detection-only
answer; an answer with a unified-diff patch that is applied and re-scanned).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(f1, 4)}


def oracle_ids(rows: list[dict], engine: str) -> tuple[list[set[str]], list[float], int]:
    """Per row: the oracle's ids (both tools); per K8s row the kube-linter/Rego time; rejected count."""
    from sv_soar.tasks.e2.oracle import kubelinter, rego, semgrep
    from sv_soar.tasks.e2.oracle.safe_yaml import ConfigRejected

    ids: list[set[str]] = [set() for _ in rows]
    rego_seconds: list[float] = []
    rejected = 0
    for i, row in enumerate(rows):
        if row["meta"]["lang"] != "k8s":
            continue
        start = time.perf_counter()
        try:
            found = kubelinter.scan(row["question"]) if engine == "binary" else rego.scan_k8s(row["question"])
        except ConfigRejected:
            found, rejected = [], rejected + 1
        rego_seconds.append(time.perf_counter() - start)
        ids[i] |= {f.id for f in found}
    for lang in ("k8s", "tf"):  # one semgrep run a language: agreement only, timing is separate
        files = {f"row{i:03d}.{'yaml' if lang == 'k8s' else 'tf'}": row["question"]
                 for i, row in enumerate(rows) if row["meta"]["lang"] == lang}
        results, _errors = semgrep.scan_files(files, lang, timeout_s=600)
        for name, found in results.items():
            ids[int(name[3:6])] |= {f.id for f in found}
    return ids, rego_seconds, rejected


def agreement(rows: list[dict], predicted: list[set[str]]) -> dict:
    per_rule: dict[str, Counter] = defaultdict(Counter)
    totals: dict[str, Counter] = defaultdict(Counter)
    for row, pred in zip(rows, predicted):
        gold = {f"{v['tool']}/{v['rule_id']}" for v in row["info"]["violations"]}
        lang = row["meta"]["lang"]
        for vid in gold | pred:
            outcome = "tp" if vid in gold and vid in pred else ("fn" if vid in gold else "fp")
            per_rule[vid][outcome] += 1
            tool = vid.split("/", 1)[0]
            for key in (lang, f"{lang}:{tool}"):
                totals[key][outcome] += 1
    return {
        "micro": {key: prf(c["tp"], c["fp"], c["fn"]) for key, c in sorted(totals.items())},
        "per_rule": {vid: prf(c["tp"], c["fp"], c["fn"]) for vid, c in sorted(per_rule.items())},
        "rows_exact": sum(1 for row, pred in zip(rows, predicted)
                          if pred == {f"{v['tool']}/{v['rule_id']}" for v in row["info"]["violations"]}),
    }


def semgrep_single_times(rows: list[dict], n: int) -> dict:
    from sv_soar.tasks.e2.oracle import semgrep

    out = {}
    for lang in ("k8s", "tf"):
        sample = [r for r in rows if r["meta"]["lang"] == lang][:n]
        seconds = []
        for row in sample:
            start = time.perf_counter()
            semgrep.scan(row["question"], lang)
            seconds.append(time.perf_counter() - start)
        out[lang] = summary(seconds)
    return out


def summary(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)
    return {"n": len(seconds), "median_ms": round(1000 * statistics.median(ordered), 2),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            "max_ms": round(1000 * ordered[-1], 2)}


_UNTAGGED = re.compile(r"^(\s*-?\s*image:\s*)([\"']?)([^\s\"':@]+(?::latest)?)\2\s*$")


def tag_fix_diff(text: str) -> str | None:
    """A unified diff that pins every untagged or :latest image to :1.0 (fixes kube-linter/latest-tag)."""
    lines = text.splitlines(keepends=True)
    fixed, changed = [], False
    for line in lines:
        m = _UNTAGGED.match(line.rstrip("\n"))
        if m:
            image = m.group(3).removesuffix(":latest")
            line, changed = f"{m.group(1)}{image}:1.0\n", True
        fixed.append(line)
    if not changed:
        return None
    return "".join(difflib.unified_diff(lines, fixed, "a/config.yaml", "b/config.yaml"))


def rubric_times(rows: list[dict]) -> dict:
    from rubrics.e2 import E2Scorer

    scorer = E2Scorer()
    detect, patched, deltas = [], [], []
    for row in rows:
        ids = [f"{v['tool']}/{v['rule_id']}" for v in row["info"]["violations"]]
        answer = {"violations": [{"id": i, "severity": "med"} for i in ids], "patch": "", "confidence": 0.8}
        start = time.perf_counter()
        scorer.components(json.dumps(answer), row)
        detect.append(time.perf_counter() - start)
        if row["meta"]["lang"] != "k8s":
            continue
        diff = tag_fix_diff(row["question"])
        if diff is None:
            continue
        answer["patch"] = diff
        scorer.oracle.clear()  # time the re-scans, not the cache
        start = time.perf_counter()
        parts = scorer.components(json.dumps(answer), row)
        patched.append(time.perf_counter() - start)
        deltas.append(parts["patch_delta"])
    return {"detection_only": summary(detect), "with_patch_k8s": summary(patched),
            "patches_with_positive_delta": sum(d > 0 for d in deltas), "patches": len(deltas)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("SVBENCH_MINI", REPO.parent / "shared" / "svbench-mini")) / "e2.jsonl"
    parser.add_argument("--path", type=Path, default=default, help="SV-Bench E2 JSONL (default: the public mini set)")
    parser.add_argument("--timing-configs", type=int, default=10, help="single-config semgrep runs a language")
    parser.add_argument("--json", type=Path, help="write the full result here")
    args = parser.parse_args(argv)

    from sv_soar.tasks.e2.oracle import kube_linter_engine

    rows = [json.loads(line) for line in args.path.read_text(encoding="utf-8").splitlines() if line.strip()]
    engine = kube_linter_engine("auto")
    print(f"e2_oracle: {len(rows)} rows from {args.path}; kube-linter engine: {engine}; load {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    predicted, rego_seconds, rejected = oracle_ids(rows, engine)
    result = {"rows": len(rows), "engine": engine, "yaml_rejected": rejected,
              "agreement": agreement(rows, predicted), "scan_all_s": round(time.perf_counter() - start, 2)}
    result["time"] = {"kube_linter_per_config": summary(rego_seconds),
                      "semgrep_per_config": semgrep_single_times(rows, args.timing_configs),
                      "rubric_per_rollout": rubric_times(rows)}
    agree = result["agreement"]
    print(f"{'rule':<100} {'tp':>4} {'fp':>4} {'fn':>4} {'f1':>6}")
    for vid, m in agree["per_rule"].items():
        print(f"{vid:<100} {m['tp']:>4} {m['fp']:>4} {m['fn']:>4} {m['f1']:>6.3f}")
    for key, m in agree["micro"].items():
        print(f"micro-F1 {key:<18} {m['f1']:.4f}  (tp {m['tp']}, fp {m['fp']}, fn {m['fn']})")
    print(f"rows with exactly the labelled ids: {agree['rows_exact']}/{len(rows)}; YAML rejected: {rejected}")
    for lang in ("k8s", "tf"):
        subset = [(r, p) for r, p in zip(rows, predicted) if r["meta"]["lang"] == lang]
        exact = sum(p == {f"{v['tool']}/{v['rule_id']}" for v in r["info"]["violations"]} for r, p in subset)
        print(f"  {lang}: {exact}/{len(subset)} rows exact")
    print(f"time: {json.dumps(result['time'])}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
