"""Hybrid search on a kept index, the earlier search paths against the current ones, taking turns query by query.

"before" is how hybrid search ran until 2026-12-06 afternoon: the keyword shards searched in two threads while the
dense side ran in a third, and only filters keeping <= 50,000 units scored exactly (any other filter over-fetched
from HNSW). "after" is the current code: the shards take turns in the searching thread while the dense side runs,
and filters keeping <= 200,000 units are scanned exactly as int8 rows (retrieval/int8_scan.py). Both run in one
process on the same index, each query searched by both (order alternating), with a fresh query embedding each time,
after 20 untimed warm-up queries per filter. Filters and queries are the ones of benchmarks/index_scale.py.

    .venv/bin/python benchmarks/index_scale.py --sizes 1000000 --paths new --keep --workdir /tmp/scale
    .venv/bin/python benchmarks/filter_paths.py --index /tmp/scale/n1000000/index-new --queries 150

Prints one line per filter (p50 / p95 ms of each path, and how often the two top-10 lists are the same), then a
`key: value` block.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from index_scale import FILTERS, SOURCE, WARM, load_base  # noqa: E402

import retrieval.index as index_mod  # noqa: E402
import retrieval.keyword as keyword_mod  # noqa: E402
from retrieval.index import PaperIndex  # noqa: E402

_each_shard = keyword_mod._each_shard


def _shards_in_threads(fn, n, parallel=True):  # the earlier behaviour: shards in parallel even beside the dense side
    return _each_shard(fn, n, parallel=True)


def use(path: str) -> None:
    keyword_mod._each_shard = _each_shard if path == "after" else _shards_in_threads
    index_mod.EXACT_MAX = 200_000 if path == "after" else 50_000


def interleaved(ix, qs: list[str], paths: list[str], use, **search) -> tuple[dict[str, np.ndarray], int]:
    """The paths taking turns on each query (order alternating), after the first WARM queries untimed: per path its
    p50 / p95 ms, and for how many timed queries the two paths' top 10 papers are the same. `use(path)` switches."""
    for q in qs[:WARM]:
        for p in paths:
            use(p)
            ix.search(q, k=10, **search)
    wall: dict[str, list[float]] = {p: [] for p in paths}
    same = 0
    for j, q in enumerate(qs[WARM:]):
        ids = {}
        for p in paths if j % 2 == 0 else paths[::-1]:
            use(p)
            ix.embedder._query_cache.clear()  # each path pays its own query embedding
            t0 = time.perf_counter()
            ids[p] = [h.id for h in ix.search(q, k=10, **search)]
            wall[p].append((time.perf_counter() - t0) * 1000)
        same += ids[paths[0]] == ids[paths[1]]
    return {p: np.percentile(wall[p], [50, 95]) for p in paths}, same


def titles(source: Path, n: int, seed: int) -> list[str]:
    out = [" ".join(r["title"].split()) for r in load_base(source)[::23][:n]]
    random.Random(seed).shuffle(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True, help="a paper index with vectors (index_scale.py --keep)")
    ap.add_argument("--queries", type=int, default=150)
    ap.add_argument("--source", type=Path, default=SOURCE)
    args = ap.parse_args()
    ix = PaperIndex(args.index)
    qs = titles(args.source, args.queries + WARM, seed=17)
    paths = ["before", "after"]
    out: dict[str, float] = {}
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, {len(ix):,} units")
    for name, kw in FILTERS.items():
        row, same = interleaved(ix, qs, paths, use, **kw)
        print(
            f"{name:<28}"
            + "  ".join(f"{p} p50 {row[p][0]:5.2f} p95 {row[p][1]:5.2f}" for p in paths)
            + f"  same top 10: {same}/{len(qs) - WARM}",
            flush=True,
        )
        slug = name.replace(" + ", "_").replace(" ", "_").replace(".", "").replace("-", "")
        for p in paths:
            out[f"{p}_{slug}_p50_ms"] = round(float(row[p][0]), 2)
    print()
    for p in paths:
        worst = max(v for k, v in out.items() if k.startswith(p) and "none" not in k)
        print(f"{p}_worst_filter_p50_ms: {worst}")
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
