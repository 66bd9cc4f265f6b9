"""Subcommands of the ``ferrymq`` command line; each module has ``register(subparsers)``."""
