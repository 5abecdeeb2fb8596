"""Run in a prime-rl schema venv (Python 3.12, prime-rl's own `prime-rl-configs` package at some commit and
verifiers 0.4.0: `bash scripts/build_prime_rl_schema_venv.sh`): does prime 0.18.0's schema worker normalise each
config, as `prime train validate` does before anything is sent?

    python schema_normalize.py WORKER.py INPUTS.json
    WORKER.py: prime_cli/utils/training_schema_worker.py of prime 0.18.0 (from the v1 venv)
    INPUTS:    {"config name": schema input (tests/hosted_v1/check_config.py's "schema_input"), ...}
    prints one JSON line a config: {"config", "ok", "error", "sources": [unknown source keys]}

The worker's `normalize` is called as is; its `main` is not, because that first checks that prime-rl-configs
came from the commit the platform names (a login fetches it), and here it came from a local checkout. The
worker defers the train sources to the env server (they need the env plugins); their env tables are checked
against the envs' own config classes by check_config.py, and their other keys here against prime-rl's own
TrainSourceConfig fields.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path


def main(worker_path: str, inputs_path: str) -> int:
    from pydantic import TypeAdapter

    from prime_rl.configs.orchestrator import TrainSourceConfig

    spec = importlib.util.spec_from_file_location("prime_schema_worker", worker_path)  # prime's file, as a module
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    worker = vars(module)
    failed = 0
    for name, config in json.loads(Path(inputs_path).read_text(encoding="utf-8")).items():
        result = {"config": name, "ok": False, "error": None, "sources": []}
        try:
            worker["normalize"]({"config": config, "mode": "rl", "schema_commit": "local",
                                 "sft_online_eval_keys": ["eval", "inference", "weight_broadcast"]})
            for source in config.get("orchestrator", {}).get("train", {}).get("source", []):
                unknown = sorted(set(source) - set(TrainSourceConfig.model_fields))
                if unknown:
                    raise ValueError(f"orchestrator.train.source: unknown keys {unknown}")
                for key, value in source.items():
                    if key != "env":
                        TypeAdapter(TrainSourceConfig.model_fields[key].annotation).validate_python(value)
            result["ok"] = True
        except Exception as exc:  # noqa: BLE001 - reported per config
            result["error"] = f"{type(exc).__name__}: {exc}"[:3000]
        failed += not result["ok"]
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
