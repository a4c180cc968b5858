"""Named exceptions of the retrieval package. The CLI turns any `RetrievalError` into one clear line."""


class RetrievalError(Exception):
    """Base class: a problem with the user's input or environment, reported as one line."""


class IngestError(RetrievalError):
    """A PDF could not be ingested (not a PDF, encrypted, no text layer, truncated, ...)."""


class PaperIndexError(RetrievalError):
    """The paper index cannot answer: empty, unreachable Chroma server, unknown embedding model, recipe mismatch."""


class OfflineError(RetrievalError):
    """A network fetch (arXiv API) was asked for while offline."""
