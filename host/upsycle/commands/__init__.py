"""One module per `upsycle` subcommand; each defines register(subparsers)."""
