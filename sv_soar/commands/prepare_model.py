"""`sv-soar prepare-model`: convert and cache a model (the embedded one by default) and print its folder
(sv_soar.models does the work)."""

from __future__ import annotations

import argparse
import logging

from sv_soar.models import ModelError, embedded_names, resolve_model
from sv_soar.soar_defaults import DEFAULT_MODEL

log = logging.getLogger("sv_soar.models")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"embedded model ({embedded_names()}), local folder or HF hub id (default: %(default)s)",
    )
    parser.add_argument("--verify", action="store_true", help="also check the sha256 of every cached file")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        folder = resolve_model(args.model, verify=args.verify)
    except ModelError as exc:
        log.error("%s", exc)
        return 1
    print(folder)
    return 0
