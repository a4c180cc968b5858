"""Keyword search with one tantivy index vs `SHARDS` shards searched in parallel, over the units of a paper index.

Builds both layouts from an existing index's docs.sqlite (e.g. one `benchmarks/index_scale.py --keep` left), then
times `KeywordIndex.search` (top 100, what the fusion asks) on real arXiv titles, the variants interleaved query by
query so a noisy machine slows both alike, and compares the rankings.

    .venv/bin/python benchmarks/keyword_shards.py --index /tmp/scale/n1000000/index-new --workdir /tmp/kwshards

Ends with a `key: value` block.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import retrieval.keyword as keyword_mod  # noqa: E402
from retrieval.docstore import DocStore  # noqa: E402
from retrieval.keyword import KeywordIndex, KeywordUnit  # noqa: E402


def build(folder: Path, docs: DocStore, shards: int) -> tuple[KeywordIndex, float]:
    keyword_mod.SHARDS = shards
    shutil.rmtree(folder, ignore_errors=True)
    ki = KeywordIndex(folder, title_boost=int(docs.get_meta("title_boost") or 2))
    t0 = time.perf_counter()
    for rows in docs.iter_keyword_units(1, docs.max_uid() + 1):
        ki.add(KeywordUnit(*r[:6]) for r in rows)
    ki.commit(final=True)
    return ki, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, required=True, help="a paper index folder (its docs.sqlite is read)")
    ap.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "keyword-shards")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--titles", type=Path, default=REPO.parent / "shared" / "data" / "arxiv" / "arxiv-cs-2025-2026.jsonl.gz"
    )
    args = ap.parse_args()
    docs = DocStore(args.index / "docs.sqlite")
    shards = keyword_mod.SHARDS
    one, t_one = build(args.workdir / "one", docs, 1)
    many, t_many = build(args.workdir / f"shards-{shards}", docs, shards)
    print(f"built: 1 index {t_one:.0f} s, {shards} shards {t_many:.0f} s; {one.n_docs:,} units", flush=True)
    with gzip.open(args.titles, "rt") as fh:
        titles = [json.loads(line)["title"] for line in fh]
    rng = random.Random(1)
    queries = [" ".join(titles[rng.randrange(len(titles))].split()) for _ in range(args.queries + 20)]
    variants = {"one_index": one, f"shards_{shards}": many}
    for q in queries[:20]:  # warm-up: page in the segments, fill the document-frequency caches
        for ki in variants.values():
            ki.search(q, 100)
    wall: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for q in queries[20:]:
            for name, ki in variants.items():
                t0 = time.perf_counter()
                ki.search(q, 100)
                wall[name].append((time.perf_counter() - t0) * 1000)
    top10, top100 = [], []
    for q in queries:
        a, b = one.search(q, 100)[0], many.search(q, 100)[0]
        top10.append(len(set(a[:10].tolist()) & set(b[:10].tolist())) / max(min(len(a), 10), 1))
        top100.append(len(set(a.tolist()) & set(b.tolist())) / max(len(a), 1))
    out = {"units": one.n_docs}
    for name, w in wall.items():
        out[f"{name}_p50_ms"] = float(np.percentile(w, 50))
        out[f"{name}_p95_ms"] = float(np.percentile(w, 95))
    out["speedup_p50"] = out["one_index_p50_ms"] / out[f"shards_{shards}_p50_ms"]
    out["top10_overlap"] = float(np.mean(top10))
    out["top100_overlap"] = float(np.mean(top100))
    print()
    for k, v in out.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
