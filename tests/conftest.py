"""Shared fixtures. Tests run offline; every test gets its own REPLICATE_HOME and project directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REPLICATE_SHARED", REPO.parent / "shared"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb must not try to phone home


@pytest.fixture(autouse=True)
def replicate_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point REPLICATE_HOME and the project dir at temp dirs so no test touches ~/.replicate or the repo."""
    home = tmp_path / "replicate-home"
    project = tmp_path / "project"
    home.mkdir()
    project.mkdir()
    monkeypatch.setenv("REPLICATE_HOME", str(home))
    monkeypatch.setenv("REPLICATE_PROJECT_DIR", str(project))
    for key in ("REPLICATE_LLM", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENROUTER_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return home


def _shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set REPLICATE_SHARED or place ../shared beside the repo)")
    return path


@pytest.fixture
def shared_dir() -> Path:
    return _shared("")


@pytest.fixture
def fashion_pdf() -> Path:
    return _shared("papers/fashion-mnist-xiao2017.pdf")


@pytest.fixture
def fashion_mnist_dir() -> Path:
    return _shared("data/fashion-mnist")


@pytest.fixture
def arxiv_jsonl() -> Path:
    return _shared("data/arxiv/arxiv-cs-2025-2026.jsonl.gz")


@pytest.fixture
def scitldr_dir() -> Path:
    return _shared("data/scitldr")


@pytest.fixture
def shakespeare_txt() -> Path:
    return _shared("data/tinyshakespeare/input.txt")
