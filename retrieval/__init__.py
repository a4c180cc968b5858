"""Paper ingestion (PDF parsing, tables, claims ledger, setup) and the paper index (BM25 + chromadb)."""

from retrieval.errors import IngestError, OfflineError, PaperIndexError, RetrievalError
from retrieval.models import Caption, Claim, PageText, Paper, Reference, Section, Setup, SetupItem, Table

__all__ = [
    "Caption",
    "Claim",
    "PaperIndexError",
    "IngestError",
    "OfflineError",
    "PageText",
    "Paper",
    "Reference",
    "RetrievalError",
    "Section",
    "Setup",
    "SetupItem",
    "Table",
]


def __getattr__(name: str):
    """`retrieval.PaperIndex`, imported on first use: it pulls in numpy, scipy and the BM25 stack."""
    if name == "PaperIndex":
        from retrieval.index import PaperIndex

        return PaperIndex
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
