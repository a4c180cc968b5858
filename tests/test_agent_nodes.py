"""Single nodes, run directly: find_related against a real (small) paper index, and an empty index."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

from agent import config
from agent.nodes_spec import find_related, ingest_paper


def _ingested_state(fashion_pdf: Path) -> dict:
    state = {"id": "t-1", "pdf": str(fashion_pdf), "warnings": []}
    command = ingest_paper(state, {})
    assert command.goto == "find_related"
    return {**state, **command.update}


def test_find_related_keeps_hits_with_quotes(fashion_pdf: Path, arxiv_jsonl: Path, tmp_path: Path) -> None:
    # A real subset of the shared arXiv snapshot: every record that mentions Fashion-MNIST, plus 300 others.
    subset = tmp_path / "subset.jsonl"
    with gzip.open(arxiv_jsonl, "rt", encoding="utf-8") as source, subset.open("w", encoding="utf-8") as out:
        lines = list(itertools.islice(source, 300))
        lines += [line for line in source if "fashion-mnist" in line.lower()]
        out.writelines(lines)
    from retrieval.index import PaperIndex

    PaperIndex(config.index_dir()).import_jsonl(subset, progress=False)
    state = _ingested_state(fashion_pdf)
    command = find_related(state, {})
    assert command.goto == "draft_spec"
    related = command.update["related"]
    assert related and all(hit["quote"].strip() for hit in related)
    assert len({hit["id"] for hit in related}) == len(related)
    assert {hit["purpose"] for hit in related} >= {"method"}
    assert any("fashion" in (hit["title"] + hit["quote"]).lower() for hit in related)
    assert not any("index" in w for w in command.update["warnings"])


def test_find_related_with_an_empty_index_warns(fashion_pdf: Path) -> None:
    from retrieval.index import PaperIndex

    PaperIndex(config.index_dir())  # creates the (empty) index on disk
    state = _ingested_state(fashion_pdf)
    command = find_related(state, {})
    assert command.goto == "draft_spec" and command.update["related"] == []
    assert any("empty" in w or "no paper index" in w for w in command.update["warnings"]), command.update["warnings"]
