"""Tool economy of a model on E2: tool calls per rollout in the real tool loop, measured end to end.

    python benchmarks/e2_tool_economy.py --rows 20 --rollouts 2          # the embedded model
    python benchmarks/e2_tool_economy.py --model runs/student --rows 100

Starts `sv-soar serve-model` on loopback (function calling in Qwen2.5's Hermes format,
sv_soar/serving/tool_calls.py), runs the real `vf-eval sv-soar-student` with task "e2" (verifiers'
ToolEnv with SV-Bench's `run_kubelinter`, `run_semgrep`, `run_opa`, backed by the oracle) against it,
and reads the saved rollouts: tool calls per rollout (mean and distribution, per tool), turns, how
many replies tried to call a tool but wrote no valid call, reward and detection F1. Writes
benchmarks/results/e2_tool_economy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "e2_tool_economy.json"
READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1")
TOOLS = ("run_kubelinter", "run_semgrep", "run_opa")


def serve(model: str, log: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "sv_soar.cli", "serve-model", "--model", model, "--served-model-name", "student",
               "--port", "0", "--max-batch-size", "16"]
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
    for line in proc.stdout:
        if match := READY.search(line):
            return proc, f"http://127.0.0.1:{match.group(1)}/v1"
    raise SystemExit(f"serve-model did not start:\n{log.read_text()[-3000:]}")


def metric(row: dict, name: str) -> float | None:
    return row.get(name, row.get("metrics", {}).get(name))


def assistant_texts(row: dict) -> list[str]:
    return [m.get("content") or "" for m in row.get("completion", []) if isinstance(m, dict) and m.get("role") == "assistant"]


def summarise(rows: list[dict]) -> dict:
    calls = [int(metric(r, "total_tool_calls") or 0) for r in rows]
    replies = [text for r in rows for text in assistant_texts(r)]
    return {
        "rollouts": len(rows),
        "tool_calls_per_rollout": mean(calls),
        "tool_calls_distribution": dict(sorted(Counter(calls).items())),
        "rollouts_with_a_tool_call": sum(c > 0 for c in calls),
        "calls_by_tool": {tool: sum(int(metric(r, f"{tool}_calls") or 0) for r in rows) for tool in TOOLS},
        "assistant_turns_per_rollout": mean(len(assistant_texts(r)) for r in rows),
        # a reply that names a tool or opens a <tool_call> block but holds no valid call: tried and failed
        "replies_mentioning_a_tool_without_a_valid_call": sum(
            any(t in text for t in (*TOOLS, "<tool_call>")) for text in replies),
        "reward_mean": mean(r["reward"] for r in rows),
        "detection_f1_mean": mean(metric(r, "detection_f1") or 0.0 for r in rows),
        "format_valid_rate": mean(metric(r, "format_valid") or 0.0 for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model to serve (default: the embedded one)")
    parser.add_argument("--mini", type=Path, default=Path(os.environ.get("SVBENCH_MINI", REPO.parent / "shared" / "svbench-mini")))
    parser.add_argument("--rows", type=int, default=20, help="E2 rows (seeded sample of the mini set)")
    parser.add_argument("--rollouts", type=int, default=2, help="rollouts a row")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens a turn")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.mini / "e2.jsonl").is_file():
        raise SystemExit(f"no e2.jsonl in {args.mini} (--mini or $SVBENCH_MINI)")

    # the corrected scoring: its detection_f1 / format_valid metrics are what this benchmark reports
    env_args = {"task": "e2", "source": "jsonl", "path": str(args.mini), "n": args.rows, "seed": 0,
                "max_turns": args.max_turns, "scoring": "corrected"}
    vf_eval = shutil.which("vf-eval", path=str(Path(sys.executable).parent)) or "vf-eval"
    with tempfile.TemporaryDirectory() as folder:
        proc, url = serve(args.model, Path(folder) / "serve-model.log")
        started = time.perf_counter()
        try:
            command = [vf_eval, "sv-soar-student", "-a", json.dumps(env_args), "-m", "student", "-b", url,
                       "-n", str(args.rows), "-r", str(args.rollouts), "-t", str(args.max_tokens),
                       "-T", str(args.temperature), "-s", "-o", str(Path(folder) / "out"), "--disable-tui"]
            done = subprocess.run(command, cwd=folder, env={**os.environ, "OPENAI_API_KEY": "EMPTY"},
                                  capture_output=True, text=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"vf-eval failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        (results,) = Path(folder).glob("out/evals/*/*/results.jsonl")
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]

    out = {"model": args.model, "env_args": env_args, "max_tokens": args.max_tokens, "temperature": args.temperature,
           **summarise(rows), "seconds": round(seconds, 1), "command": "python " + " ".join(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
