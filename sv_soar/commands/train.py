"""`sv-soar train`: run SOAR's outer loop from a TOML config (sv_soar.soar_loop), or resume a run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sv_soar.config import ConfigError, apply_overrides, config_diff, load_config, parse_config
from sv_soar.run_dir import RunDirError, open_run
from sv_soar.soar_loop import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="experiment config (TOML), e.g. configs/cpu-demo.toml")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a run after its last completed step (with --config: refused if they differ)")
    parser.add_argument("--out", type=Path, help="run folder (with --config; default runs/<config name>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set soar.q_r=8 (JSON values)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (resume later)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if not (args.config or args.resume):
        print("sv-soar train: give --config FILE.toml (a new run) or --resume RUN_DIR")
        return 2
    try:
        overrides = dict(_override(item) for item in args.set)
        if args.resume:
            config = open_run(args.resume).config
            if args.config or overrides:  # the same config, or nothing: a run never changes its config
                asked = load_config(args.config, overrides) if args.config else parse_config(
                    apply_overrides(config.resolved(), overrides))
                differing = config_diff(config.resolved(), asked.resolved())
                if differing:
                    raise ConfigError(f"{args.resume}: refusing to resume with a different config; differing keys:\n  "
                                      + "\n  ".join(differing))
            folder = args.resume
        else:
            config = load_config(args.config, overrides)
            folder = args.out or Path("runs") / args.config.stem
        train(config, folder, resume=bool(args.resume), progress=not args.no_progress, max_steps=args.max_steps)
    except (ConfigError, RunDirError) as exc:
        print(f"sv-soar train: {exc}")
        return 2
    return 0


def _override(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. soar.q_r=8")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string such as a model name
