"""Run in the v1 venv (verifiers 0.4 + prime 0.18.0): does `prime train CONFIG` accept CONFIG client-side, and do
its taskset arguments validate against the env's own config classes? Prints one JSON line per config:
{"config": path, "ok": bool, "error": str | None, "sources": [{"env": class, "taskset": {...}}],
"schema_input": what prime's schema worker would be given}.

The prime CLI's checks are its own functions, called in the order `prime train` calls them before anything is
sent (prime_cli/commands/rl.py, create_run and _dispatch_dedicated_run): the TOML parse, the retired
shared-LoRA layout, the SFT sniff, the secrets it forwards (only WANDB_API_KEY and HF_TOKEN), the CLI-only
keys it strips, the request-level strings, and the payload it would post. The platform's own schema check
(`prime train validate`) needs a login and is not run here.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import click
import typer


def prime_checks(path: Path) -> dict:
    from prime_cli.api.training import build_payload_from_toml
    from prime_cli.commands import rl

    raw = rl._load_toml(str(path))
    if rl._looks_like_lora(raw):
        raise ValueError("prime: a shared LoRA training config (a top-level `model = \"...\"` or [[env]]); "
                         "Hosted Training runs prime-rl configs")
    if rl._is_sft(raw, flag=False):
        raise ValueError("prime: dispatched as an SFT config ([data] without [trainer]/[orchestrator])")
    env_files = []
    for key in ("env_file", "env_files"):
        value = raw.get(key)
        env_files += [str(path.parent / p) for p in value] if isinstance(value, list) else (
            [str(path.parent / value)] if isinstance(value, str) else [])
    secrets = rl._collect_secrets(None, env_files)  # typer.Exit on a secret it would not forward
    for key in ("image_tag", "gpu_type", "volume", "volume_size"):
        rl._config_string(raw, key, path)
    rl._selected_source_ref(None, raw.get("source_ref"), path)
    hosted = rl._hosted_config(raw)
    payload = build_payload_from_toml(hosted, name=raw.get("name"), wandb_api_key=secrets.get("WANDB_API_KEY"),
                                      hf_token=secrets.get("HF_TOKEN"))
    json.dumps(payload)  # what the CLI posts must serialise
    return hosted


def rl_schema_input(hosted: dict) -> dict:
    """What `prime train validate` hands prime's schema worker (prime_cli/commands/rl.py: the config without
    the CLI-only keys and `name`); tests/hosted_v1/schema_normalize.py runs the worker on it."""
    from prime_cli.commands import rl

    return rl._schema_input(hosted)


def env_checks(config: dict) -> list[dict]:
    """Each train source's `env` table through verifiers' own narrowing (by env id, else taskset id), the way
    prime-rl's orchestrator and env server load it; an unknown or misspelt taskset argument fails here."""
    import verifiers.v1 as vf
    from verifiers.v1.configs.env import EnvConfig
    from verifiers.v1.env import Env
    from verifiers.v1.utils.generic import concrete_type
    from verifiers.v1.utils.loaders import environment_class

    sources = config.get("orchestrator", {}).get("train", {}).get("source", [])
    if not sources:
        raise ValueError("no [[orchestrator.train.source]]")
    checked = []
    for index, source in enumerate(sources):
        env = source.get("env") or {}
        taskset_id = (env.get("taskset") or {}).get("id", "")
        env_class = environment_class(taskset_id, env.get("id", ""))
        config_class = concrete_type(env_class, EnvConfig, origin=Env) or vf.SingleAgentEnvConfig
        try:
            parsed = config_class.model_validate(env)
        except Exception as exc:
            raise ValueError(f"orchestrator.train.source[{index}].env: {exc}") from exc
        checked.append({"env": env_class.__name__, "config": config_class.__name__,
                        "taskset_config": type(parsed.taskset).__name__,
                        "taskset": parsed.taskset.model_dump(mode="json", exclude={"task", "system_prompt"})})
    return checked


def main(paths: list[str]) -> int:
    failed = 0
    for name in paths:
        path = Path(name)
        result = {"config": name, "ok": False, "error": None, "sources": []}
        try:
            hosted = prime_checks(path)
            result["schema_input"] = rl_schema_input(copy.deepcopy(hosted))  # env_checks narrows in place
            result["sources"] = env_checks(hosted)
            result["ok"] = True
        except (typer.Exit, click.exceptions.Exit, SystemExit) as exc:
            result["error"] = f"prime refused it (exit {getattr(exc, 'exit_code', getattr(exc, 'code', '?'))})"
        except Exception as exc:  # noqa: BLE001 - reported per config
            result["error"] = f"{type(exc).__name__}: {exc}"
        failed += not result["ok"]
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
