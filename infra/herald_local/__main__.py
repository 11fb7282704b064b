"""`python -m herald_local ...`, the same as the `herald-local` command (see docs/local-stack.md)."""

from .cli import entry

entry(prog="python -m herald_local")
