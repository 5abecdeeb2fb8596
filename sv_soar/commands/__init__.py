"""The `sv-soar` subcommands, one module a verb: each `add_arguments(parser)` and `run(args) -> int`
(sv_soar.cli). The library modules they call carry no argparse."""
