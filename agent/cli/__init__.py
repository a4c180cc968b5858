"""The `replicate` command line. `main` is the console script's entry point (pyproject: `agent.cli:main`)."""

from agent.cli.app import app, main

__all__ = ["app", "main"]
