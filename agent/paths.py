"""Where things live and which LLM to use. Read from the environment so every process agrees.

One home directory (`REPLICATE_HOME`, default `~/.replicate`) holds the paper index, the LangGraph checkpointer
database and the run registry. A replication's own artefacts (`papers/`, `specs/`, `runs/`) live under the working
directory the user runs from, so a project folder is self-contained.
"""

from __future__ import annotations

import os
from pathlib import Path


def replicate_home() -> Path:
    """The tool's home directory, created on first use."""
    home = Path(os.environ.get("REPLICATE_HOME") or Path.home() / ".replicate").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def index_dir() -> Path:
    return replicate_home() / "index"


def checkpoint_db() -> Path:
    return replicate_home() / "checkpoints.sqlite"


def registry_dir() -> Path:
    return replicate_home() / "registry"


def project_dir() -> Path:
    """The directory a replication's papers/, specs/ and runs/ go under: the current working directory."""
    return Path(os.environ.get("REPLICATE_PROJECT_DIR") or Path.cwd())


def papers_dir() -> Path:
    return project_dir() / "papers"


def specs_dir() -> Path:
    return project_dir() / "specs"


def runs_dir() -> Path:
    return project_dir() / "runs"
