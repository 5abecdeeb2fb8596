"""The plant's baseline in J, before any gate runs (try 4): the untrained student's J at T 1 on the validation pairs
with a 95 % bootstrap interval over pairs, G1's probe, and D_test's untrained J (what G2 reads). A constant answer has
J exactly 0 on every pair, so Hard-only converging to one "raises" J by minus this mean: G2's Hard-only half can
hold only where this interval includes 0 (try 2-3: -0.022, it did not).

    .venv/bin/python experiments/mechanism/plant_check.py [--config experiments/mechanism/config-try4.toml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gates import TASK, bootstrap, pair_values  # noqa: E402
from mechanism_signal import gate_g1  # noqa: E402

from sv_soar.config import load_config  # noqa: E402
from sv_soar.jsonl import read_jsonl  # noqa: E402
from sv_soar.models import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "config-try4.toml")
    parser.add_argument("--model", default=None, help="a model folder or name instead of the config's student model")
    args = parser.parse_args()
    config = load_config(args.config)
    model, tokenizer = load_model(args.model or config.student.model)
    temperature = config.student_train_config().temperature
    out = {"model": args.model or config.student.model}
    for name, path in (("validation", HERE / "validation.jsonl"), ("d_test", Path(config.data.hard_set) / "d_test.jsonl")):
        values = pair_values(model, tokenizer, read_jsonl(path, TASK.validate_row), temperature)["J"]
        low, high = bootstrap(values)
        out[name] = {"J_T1": float(values.mean()), "low": low, "high": high, "pairs": len(values)}
    out["G1"] = gate_g1(model, tokenizer, 64, seed=7)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
