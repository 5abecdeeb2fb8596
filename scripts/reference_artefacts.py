"""The tiny-model reference run: a refactor that preserves behaviour leaves its artefacts identical.

Runs the pipeline `make demo` runs (tests/tiny_runs.py's config: SOAR for 2 outer steps, a compute-matched Hard-only run, the final evaluation of
both, the report) on the tiny Llama of the tests and a format-warm-started tiny teacher, then writes a digest: one
sha256 a file of each run folder, JSON and JSONL files with their timing fields dropped (seconds, tokens a second:
they differ from run to run), every other file byte for byte. Compare two commits' digests:

    git worktree add /tmp/before <commit>   # its sv_soar and tests, this script
    PYTHONPATH=/tmp/before .venv/bin/python scripts/reference_artefacts.py --out /tmp/before.json
    .venv/bin/python scripts/reference_artefacts.py --out /tmp/after.json --compare /tmp/before.json

Everything is seeded, Python's hash too; torch runs one thread (float sums in the same order). Takes ~1-2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tests.tiny_llama; a PYTHONPATH tree given first still provides sv_soar

from sv_soar.evaluation.final import final_evaluation  # noqa: E402
from sv_soar.evaluation.report import write_report  # noqa: E402
from sv_soar.format_warm_start import Recipe  # noqa: E402
from sv_soar.models import build_format_warm_start  # noqa: E402
from sv_soar.run_dir import open_run  # noqa: E402
from sv_soar.soar_loop import train  # noqa: E402
from tests.tiny_llama import build_tiny_llama  # noqa: E402


def _this_trees_tiny_runs():
    """tests/tiny_runs.py of this script's tree, by path: the tree under comparison (PYTHONPATH) may predate it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_tiny_runs", ROOT / "tests" / "tiny_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TINY_RUNS = _this_trees_tiny_runs()
split_hard_set, tiny_config = _TINY_RUNS.split_hard_set, _TINY_RUNS.tiny_config

TIMING_WORDS = ("second", "tokens_per_s", "teacher_update", "started", "finished", "timestamp", "wall", "elapsed")


def without_timings(value):
    """A JSON value with every key that names a time or a rate left out, recursively."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not any(w in k for w in TIMING_WORDS)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def canonical(value) -> str:
    """A torch-saved value as text: tensors by dtype, shape and the sha256 of their bytes."""
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        return f"tensor({data.dtype},{tuple(data.shape)},{hashlib.sha256(data.view(torch.uint8).numpy()).hexdigest()})"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{canonical(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    return repr(value)


def digest(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix not in {".lock", ".log", ".md"}):
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(without_timings(json.loads(data)), sort_keys=True).encode()
        elif path.suffix == ".pt":  # torch.save writes a fresh serialization id into every file: hash the contents
            data = canonical(torch.load(path, weights_only=True)).encode()
        elif path.suffix == ".jsonl":
            data = "\n".join(json.dumps(without_timings(json.loads(line)), sort_keys=True)
                             for line in data.decode().splitlines() if line.strip()).encode()
        out[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the digest (JSON)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sv-soar-reference-artefacts"),
                        help="scratch folder, emptied first and removed after (the same path on both commits)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (to diff two runs' files)")
    parser.add_argument("--compare", type=Path, help="another digest: print the files that differ, exit 1 if any")
    args = parser.parse_args()
    if os.environ.get("PYTHONHASHSEED") != "0":  # peft writes target_modules, a set, in hash order
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    torch.set_num_threads(1)
    work = args.work  # a fixed folder: model paths are written into configs and reward-cache keys
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        model = build_tiny_llama(work / "tiny")
        teacher = work / "teacher"
        build_format_warm_start(str(model), Recipe("e1", "teacher", steps=600, learning_rate=1e-2, examples=4,
                                                   lora_rank=4), teacher)
        hard_set = split_hard_set(work / "hs")
        soar, hard = work / "runs" / "soar", work / "runs" / "hard-only"
        train(tiny_config(model, teacher, hard_set), soar, progress=False)
        matched = tiny_config(model, teacher, hard_set, method="hard-only")
        matched.evaluation.compute_matched_to = soar
        train(matched, hard, progress=False)
        for folder in (soar, hard):
            final_evaluation(open_run(folder), seeds=[0], samples=2, steps=None, curriculum=False, progress=False)
        write_report([soar, hard], work / "runs" / "report", command="reference")
        result = {"files": digest(work / "runs")}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"{len(result['files'])} files digested -> {args.out}")
    if args.compare:
        other = json.loads(args.compare.read_text())["files"]
        differ = sorted(k for k in set(other) | set(result["files"]) if other.get(k) != result["files"].get(k))
        for name in differ:
            print(f"differs: {name}")
        print(f"{len(differ)} of {len(set(other) | set(result['files']))} files differ")
        raise SystemExit(1 if differ else 0)


if __name__ == "__main__":
    main()
