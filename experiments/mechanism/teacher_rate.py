"""The untrained teacher's stepping-stone rate against the `+mechanism-teacher` recipe's icmp share (try 6's
calibration, experiments/mechanism/README.md): for each share, the teacher is built with TEACHER_PROTOCOLS set to
it (into the cache, under the digest of that source: the share a later commit chooses reuses its build) and
samples as SOAR's first step does, with run seeds other than the gates' (G4 draws with run.seed 0), so the
calibration never looks at the sample the gate judges.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/mechanism/teacher_rate.py --share 0.07 --seeds 1 2 \
        --out experiments/mechanism/teacher-rate-0.07.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sv_soar import format_warm_start  # noqa: E402
from sv_soar.config import load_config  # noqa: E402
from sv_soar.hard_set import load_hard_set  # noqa: E402
from sv_soar.jsonl import write_text_atomic  # noqa: E402
from sv_soar.models import resolve_model  # noqa: E402
from sv_soar.soar_step import step_seed  # noqa: E402
from sv_soar.tasks import get_task  # noqa: E402
from sv_soar.tasks.mechanism import cue_relation  # noqa: E402
from sv_soar.teacher_policy import TEACHER_SEED_SALT, Teacher  # noqa: E402

GATE_SEEDS = {0, 7, 8, 9}  # G4's draws (gates.py: run.seed 0, step 0; since try 9 also --rate-seeds 7 8 9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).with_name("config-try5.toml"))
    parser.add_argument("--share", type=float, required=True, help="the recipe's icmp share (tcp, udp split the rest)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="run seeds of the samples (not 0)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if GATE_SEEDS & set(args.seeds):
        parser.error(f"--seeds: {sorted(GATE_SEEDS & set(args.seeds))} are the gate's own draws; calibrate on others")
    if not 0 < args.share < 1:
        parser.error(f"--share {args.share}: a share in (0, 1)")
    rest = round((1 - args.share) / 2, 6)  # as a commit would write it: the same source digest, the same build
    format_warm_start.TEACHER_PROTOCOLS = {"tcp": rest, "udp": rest, "icmp": args.share}
    config = load_config(args.config)
    started = time.perf_counter()
    folder = resolve_model(config.teacher.model)  # built once into the cache for this share
    task, index = get_task("mechanism"), load_hard_set(config.data.hard_set, "mechanism").index
    teacher, samples = Teacher(config), []
    for seed in args.seeds:
        sample = teacher.sample("mechanism", index, step_seed(seed, 0) ^ TEACHER_SEED_SALT)
        stones = sum(map(task.stepping_stone, sample.rows))
        disagreeing = sum(cue_relation(row) == "disagree" for row in sample.rows)  # they teach in a mix too (try 9)
        samples.append({"seed": seed, "drawn": sample.drawn, "valid": len(sample.rows), "stepping_stones": stones,
                        "cue_disagreeing": disagreeing, "rejected": sample.rejected})
        print(f"share {args.share}: seed {seed}: {stones}/{len(sample.rows)} stepping stones, "
              f"{disagreeing} cue-disagreeing", flush=True)
    valid = sum(s["valid"] for s in samples)
    # the build's weights by digest: nearby shares can train on the same examples (a batch draws 192 of 192 with
    # replacement, so a few changed examples may never be drawn) and give the same weights (try 7: 0.07 and 0.08)
    manifest = json.loads((Path(folder) / "sv-soar-manifest.json").read_text())
    result = {"config": str(args.config), "protocols": format_warm_start.TEACHER_PROTOCOLS, "model_folder": str(folder),
              "weights_sha256": manifest["files"]["model.safetensors"]["sha256"],
              "samples": samples, "rate": sum(s["stepping_stones"] for s in samples) / valid if valid else None,
              "rate_per_seed": [s["stepping_stones"] / s["valid"] if s["valid"] else None for s in samples],
              "seconds": time.perf_counter() - started}
    if all(r is not None for r in result["rate_per_seed"]):
        result["rate_spread"] = statistics.pstdev(result["rate_per_seed"])
    write_text_atomic(args.out, json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("protocols", "weights_sha256", "rate", "rate_per_seed")}), flush=True)


if __name__ == "__main__":
    main()
