"""Common-terms keyword search against the exact query: speed and agreement (retrieval/keyword.py, "Common terms").

Two measurements, both with the two paths taking turns query by query (order alternating) in one process:

1. `--index`: a kept paper index (benchmarks/index_scale.py --keep). Searches as a user runs them (`PaperIndex.search`,
   k = 10, keyword-only and hybrid, unfiltered and cs.LG), "exact" with the common-terms path switched off
   (`COMMON_MIN_POSTINGS` out of reach) and "common" as shipped; p50 / p95 ms and how often the top 10 papers agree.
   Queries: titles of real records, as in index_scale.py. The scale corpus is perturbed copies of real records, so
   each query's own record has ~13 near-copies at 1M; the second measurement has none.
2. `--distinct`: a keyword index of the 74,728 distinct real arXiv records (built once under --workdir), searched
   with the common-terms path forced on at any size (`COMMON_MIN_POSTINGS = 0`) against the exact query, for titles
   and for first sentences of abstracts; agreement of the top 10 and top n, and how often the record a query was
   taken from is in the top 10 by each path.

    .venv/bin/python benchmarks/common_terms.py --index /tmp/scale/n1000000/index-new --distinct

Prints one line per row, then a `key: value` block.
"""

from __future__ import annotations

import argparse
import gzip
import json
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

from filter_paths import interleaved, titles  # noqa: E402
from index_scale import FILTERS, SOURCE, WARM  # noqa: E402

import retrieval.keyword as keyword_mod  # noqa: E402
from retrieval.index import PaperIndex  # noqa: E402
from retrieval.keyword import KeywordIndex, KeywordUnit  # noqa: E402

SHIPPED = keyword_mod.COMMON_MIN_POSTINGS
PATHS = ("exact", "common")


def use(path: str, shipped: int = SHIPPED) -> None:
    keyword_mod.COMMON_MIN_POSTINGS = 10**15 if path == "exact" else shipped


def on_index(index: Path, n_queries: int, out: dict[str, str]) -> None:
    ix = PaperIndex(index)
    qs = titles(SOURCE, n_queries + WARM, seed=17)
    print(f"# {index}: {len(ix):,} units, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    for mode in ("bm25", "hybrid"):
        for name in ("none", "category cs.LG"):
            row, same = interleaved(ix, qs, list(PATHS), use, mode=mode, **FILTERS[name])
            print(
                f"{mode:<7}{name:<16}"
                + "  ".join(f"{p} p50 {row[p][0]:5.2f} p95 {row[p][1]:5.2f}" for p in PATHS)
                + f"  same top 10: {same}/{n_queries}",
                flush=True,
            )
            slug = f"{mode}_{name.replace(' ', '_').replace('.', '')}"
            for p in PATHS:
                out[f"{slug}_{p}_p50_ms"] = f"{row[p][0]:.2f}"
            out[f"{slug}_same_top10"] = f"{same}/{n_queries}"
    use("common")


def distinct_index(workdir: Path) -> tuple[KeywordIndex, list[dict]]:
    with gzip.open(SOURCE, "rt") as fh:
        recs = [json.loads(line) for line in fh]
    folder = workdir / f"distinct-{len(recs)}"
    if not (folder / "done").exists():
        ki = KeywordIndex(folder, title_boost=2)
        ki.add(
            KeywordUnit(i, r["id"], " ".join(r["title"].split()), r["abstract"], r["categories"], "")
            for i, r in enumerate(recs, 1)
        )
        ki.commit(final=True)
        (folder / "done").write_text("")
    return KeywordIndex(folder, title_boost=2), recs


def on_distinct(workdir: Path, n_queries: int, out: dict[str, str]) -> None:
    ki, recs = distinct_index(workdir)
    rng = random.Random(5)
    picks = [rng.randrange(len(recs)) for _ in range(n_queries)]
    sets = {
        "titles": [" ".join(recs[i]["title"].split()) for i in picks],
        "first sentences": [recs[i]["abstract"].split(". ")[0][:300] for i in picks],
    }
    print(f"# distinct real records: {ki.n_docs:,} units, common-terms path forced on", flush=True)
    for name, qs in sets.items():
        for n in (10, 100):
            same = 0
            overlap = []
            found = {p: 0 for p in PATHS}
            for own, q in zip(picks, qs, strict=True):
                res = {}
                for p in PATHS:
                    use(p, shipped=0)
                    res[p] = ki.search(q, n, parallel=False)[0].tolist()
                    found[p] += own + 1 in res[p][:10]
                same += res["exact"][:10] == res["common"][:10]
                overlap.append(len(set(res["exact"]) & set(res["common"])) / max(1, len(res["exact"])))
            print(
                f"{name:<16} n={n:<4} top 10 identical {same}/{n_queries}, top {n} overlap {np.mean(overlap):.4f} "
                f"(min {min(overlap):.2f}); own record in the top 10: exact {found['exact']}, common {found['common']}",
                flush=True,
            )
            slug = f"distinct_{name.replace(' ', '_')}_n{n}"
            out[f"{slug}_same_top10"] = f"{same}/{n_queries}"
            out[f"{slug}_overlap"] = f"{np.mean(overlap):.4f}"
            out[f"{slug}_own_in_top10_exact_common"] = f"{found['exact']}/{found['common']}"
    use("common")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, help="a kept paper index with vectors (index_scale.py --keep)")
    ap.add_argument("--queries", type=int, default=150, help="timed queries per row on --index")
    ap.add_argument("--distinct", action="store_true", help="also: agreement on the distinct real records")
    ap.add_argument("--distinct-queries", type=int, default=400)
    ap.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "common_terms")
    ap.add_argument("--cutoff", type=float, default=None, help="the fraction above which a term is common")
    args = ap.parse_args()
    if args.cutoff is not None:
        keyword_mod.COMMON = args.cutoff
    if args.index is None and not args.distinct:
        ap.error("give --index, --distinct or both")
    out: dict[str, str] = {"cutoff_fraction": str(keyword_mod.COMMON), "min_common_postings": str(SHIPPED)}
    if args.index is not None:
        on_index(args.index, args.queries, out)
    if args.distinct:
        on_distinct(args.workdir, args.distinct_queries, out)
    print()
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
