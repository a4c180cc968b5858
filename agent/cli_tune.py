"""CLI commands: tune. Registers its commands on `agent.cli.app`."""

from __future__ import annotations
