# The protocol's base row, early: the untrained student's 32 samples a D_test problem at T = 0.25, seed 0
# (mining used seeds 1-3), scored exactly as `sv-soar evaluate` scores it (score_problem_set).
import json
from dataclasses import asdict
from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.evaluation.final import score_problem_set
from sv_soar.jsonl import read_jsonl
from sv_soar.models import load_model
from sv_soar.tasks import get_task
model, tok = load_model("smollm2-135m-instruct+e1-format")
engine = TransformersEngine(model, tok, model_name="smollm2-135m-instruct+e1-format", max_batch_size=64)
task = get_task("e1")
rows = list(read_jsonl("runs/student-temp-e1/hardset-all/d_test.jsonl", task.validate_row))
m = score_problem_set(engine, task, rows, 32, adapter=None, seed=0, max_new_tokens=48, batch_size=64,
                      progress=False, temperature=0.25)
json.dump(asdict(m), open("runs/student-temp-e1/base-estimate.json", "w"), indent=1)
print(json.dumps(asdict(m)))
