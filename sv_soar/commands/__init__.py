"""The `sv-soar` subcommands that have no library module of their own: each `add_arguments(parser)` and
`run(args) -> int` (sv_soar.cli)."""
