"""An independent estimate of the untrained student on a mined split: SAMPLES fresh samples a problem at
temperature T with a seed the mining did not use, scored as `sv-soar evaluate` scores it (score_problem_set).

    python experiments/hard-t01-e1/fresh_estimate.py SPLIT.jsonl OUT.json --temperature 0.1 --seed 0
"""
import argparse
import json
from dataclasses import asdict

from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.evaluation.final import score_problem_set
from sv_soar.jsonl import read_jsonl
from sv_soar.models import load_model
from sv_soar.tasks import get_task

MODEL = "smollm2-135m-instruct+e1-format"
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("split")
parser.add_argument("out")
parser.add_argument("--temperature", type=float, required=True)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--samples", type=int, default=32)
parser.add_argument("--max-new-tokens", type=int, default=48)
args = parser.parse_args()
model, tokenizer = load_model(MODEL)
engine = TransformersEngine(model, tokenizer, model_name=MODEL, max_batch_size=64)
task = get_task("e1")
rows = list(read_jsonl(args.split, task.validate_row))
metrics = score_problem_set(engine, task, rows, args.samples, adapter=None, seed=args.seed,
                            max_new_tokens=args.max_new_tokens, batch_size=64, progress=False,
                            temperature=args.temperature)
with open(args.out, "w") as f:
    json.dump(asdict(metrics) | {"split": args.split, "seed": args.seed, "temperature": args.temperature}, f, indent=1)
print(json.dumps({k: v for k, v in asdict(metrics).items() if not isinstance(v, list)}))
