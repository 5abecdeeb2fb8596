"""`sv-soar`: the project's command line.

Each subcommand is a module of `sv_soar.commands` (the verb, `-` written `_`) that exposes
`add_arguments(parser)` and `run(args) -> int` and calls the library modules that do the work (they carry
no argparse). Modules are imported only when their command runs, so `sv-soar --help` stays fast (no torch
import).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "hardset": ("sv_soar.commands.hardset", "mine the fail@K hard set and write a cold-start report"),
    "serve-model": ("sv_soar.commands.serve_model", "serve a model as an OpenAI-compatible API on loopback"),
    "serve-students": ("sv_soar.commands.serve_students", "train and score students for a remote teacher rubric (HTTP, token, loopback)"),
    "score": ("sv_soar.commands.score", "score teacher datasets by the grounded improvement of students trained on them"),
    "train": ("sv_soar.commands.train", "run SOAR's outer loop from a TOML config, or resume a run folder"),
    "evaluate": ("sv_soar.commands.evaluate", "train fresh students on promoted questions, score them on D_test (or --adapter, --loop-student)"),
    "export-vf": ("sv_soar.commands.export_vf", "write a run's final-student training set and a vf-train (or prime-rl) config"),
    "package-env": ("sv_soar.commands.package_env", "put a hard set (or a student training set) into a verifiers v1 env as package data"),
    "report": ("sv_soar.commands.report", "write a markdown report with plots for one run or a comparison of runs"),
    "prepare-model": ("sv_soar.commands.prepare_model", "convert/cache a model (the embedded one by default) and print its folder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sv-soar", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints help or the "invalid choice" error and exits
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"sv-soar {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
