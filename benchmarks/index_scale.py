"""Index scale: import rate, embedding rate and query latency (p50/p95) at 100k and 1M records, with/without filters.

What is measured, exactly:
  * corpus: the shared arXiv CS metadata file (74,728 real records, snapshot layout), repeated with perturbed copies
    to reach the size: copy c>0 of a record gets id "<id>.c<c>" and ~15% of its title/abstract words dropped at random
    (seeded), so every copy is a distinct document with a realistic vocabulary and length. Dates/categories are kept.
  * import rate: `PaperIndex.import_jsonl` on that plain JSONL file, wall clock, BM25 shards included (the whole
    "BM25 side"), reported as records/s; the SQLite phase and the BM25 phase are also shown separately.
  * embedding rate: the real model (all-MiniLM-L6-v2) embedding a sample of real abstracts via `Embedder.encode` on
    this machine's device (CPU here: a GPU figure is NOT measured by this script unless it runs on a GPU).
  * dense side at scale: embedding 1M abstracts on this CPU is impossible in the time, so the vectors are FILLED:
    B real embeddings of distinct records (B = --real-vectors), and unit u gets the real vector of base record
    (u mod B) plus Gaussian noise (sigma --noise per dimension), re-normalised. They go through the same chromadb
    collection + local vector file as `replicate index embed` writes. Dense *relevance* at scale is therefore not
    meaningful; dense *latency* (HNSW search, over-fetch, exact filtered scoring) is what is measured.
  * query latency: `PaperIndex.search` end to end (query embedding on the CPU, BM25 over all shards, chromadb HNSW,
    fusion, snippets from SQLite), after 5 warm-up queries; queries are the titles of random real records.

    .venv/bin/python benchmarks/index_scale.py --sizes 100000 [1000000] [--workdir benchmarks/out/scale]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrieval.index import PaperIndex  # noqa: E402

FILTERS = {  # kept fractions on the shared corpus: cs.LG ~15%, dates: 10% before 2025-05-08, 50% before 2025-11-26
    "none": {},
    "category cs.LG": {"category": "cs.LG"},
    "before 2025-11-26": {"before": "2025-11-26"},
    "before 2025-05-08": {"before": "2025-05-08"},
    "cs.CL + before 2025-05-08": {"category": "cs.CL", "before": "2025-05-08"},
}


def load_base(src: Path) -> list[dict]:
    with gzip.open(src, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def make_corpus(base: list[dict], size: int, out: Path, seed: int = 0) -> None:
    if out.exists() and out.stat().st_size > 0 and out.with_suffix(".n").exists():
        if int(out.with_suffix(".n").read_text()) == size:
            return
    rng = random.Random(seed)
    tmp = out.with_suffix(".tmp")
    t0 = time.perf_counter()
    with open(tmp, "w", encoding="utf-8") as fh:
        for i in range(size):
            rec = base[i % len(base)]
            copy = i // len(base)
            if copy:
                words = rec["abstract"].split()
                abstract = " ".join(w for w in words if rng.random() > 0.15)
                title = " ".join(w for w in rec["title"].split() if rng.random() > 0.15) or rec["title"]
                rec = {**rec, "id": f"{rec['id']}.c{copy}", "title": title, "abstract": abstract}
            fh.write(json.dumps(rec) + "\n")
    tmp.replace(out)
    out.with_suffix(".n").write_text(str(size))
    print(f"  wrote {size:,} records to {out} in {time.perf_counter() - t0:.0f} s", flush=True)


def fill_vectors(ix: PaperIndex, base_vecs: np.ndarray, noise: float, seed: int = 0) -> float:
    """Write filled vectors for every unit through the index's own vector file + chroma collection; returns secs."""
    rng = np.random.default_rng(seed)
    hi = ix.docs.max_uid() + 1
    t0 = time.perf_counter()
    block = 20_000
    for lo in range(1, hi, block):
        uids = np.arange(lo, min(lo + block, hi), dtype=np.int64)
        vecs = base_vecs[uids % len(base_vecs)] + rng.normal(0, noise, (len(uids), base_vecs.shape[1]))
        vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
        ix.vectors.write(uids, vecs)
        ix.chroma.upsert(uids, vecs)
        ix.docs.set_meta(f"embedded_hi:{ix.recipe.hash}", str(int(uids[-1]) + 1))
        done = int(uids[-1])
        if done % 200_000 < block:
            print(f"    {done:,} vectors in chroma, {time.perf_counter() - t0:.0f} s", flush=True)
    return time.perf_counter() - t0


def latency(ix: PaperIndex, queries: list[str], **kw) -> tuple[float, float, float, float, float]:
    """Wall-clock and CPU-time (this process, all threads) p50/p95 in ms, and hits per query."""
    for q in queries[:5]:
        ix.search(q, k=10, **kw)
    wall, cpu = [], []
    n_hits = 0
    for q in queries:
        ix.embedder._query_cache.clear()  # every timed query pays its own embedding, as a fresh query would
        t0, c0 = time.perf_counter(), time.process_time()
        n_hits += len(ix.search(q, k=10, **kw))
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    pct = lambda xs, p: float(np.percentile(xs, p))  # noqa: E731
    return pct(wall, 50), pct(wall, 95), pct(cpu, 50), pct(cpu, 95), n_hits / len(queries)


def profile(ix: PaperIndex, queries: list[str], **kw) -> None:
    """Per-stage wall-clock p50/p95 (ms) of one hybrid search, and chroma HNSW latency at several fetch depths."""
    from retrieval.index import CANDIDATES

    stages: dict[str, list[float]] = {}

    def timed(name, fn, *a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        stages.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return out

    for q in queries:
        ix.embedder._query_cache.clear()
        qvec = timed("query embedding", ix.embedder.encode_query, q)
        mask = timed("mask", ix._mask, kw.get("category"), kw.get("before"))
        bm = timed("bm25 rank", ix._bm25_rank, q, mask, CANDIDATES)
        dn = timed("dense rank (no embedding)", ix._dense_rank, q, mask, CANDIDATES)
        fused: dict[int, float] = {}
        for rank, row in enumerate(bm, 1):
            fused[int(row)] = fused.get(int(row), 0.0) + 1 / rank
        for rank, row in enumerate(dn, 1):
            fused[int(row)] = fused.get(int(row), 0.0) + 1 / rank
        timed("hits (sqlite + snippets)", ix._hits, q, fused, 10)
        for fetch in (100, 1000, 1500, 2000, 4000):
            timed(f"chroma query fetch={fetch}", ix.chroma.query, qvec, fetch)
    for name, xs in stages.items():
        print(f"    {name:<28} p50 {np.percentile(xs, 50):6.1f}  p95 {np.percentile(xs, 95):6.1f} ms", flush=True)


def dense_recall(ix: PaperIndex, queries: list[str], fetches: list[int], **kw) -> None:
    """Over-fetch quality of a filter: for each fetch depth F (FETCH_CAP set to F), the recall of the filtered dense
    top-n against exact filtered scoring of every kept unit, and the overlap of the final hybrid top-10 with the
    top-10 the exact dense ranking gives. Exact scoring is the reference, so F large enough reads 1.0/1.0."""
    import retrieval.index as index_mod

    n = index_mod.CANDIDATES
    mask = ix._mask(kw.get("category"), kw.get("before"))
    saved = index_mod.FETCH_CAP, index_mod.EXACT_MAX
    res: dict[int, list[tuple[float, float]]] = {f: [] for f in fetches}
    try:
        for q in queries:
            index_mod.EXACT_MAX = 10**9  # reference: exact scoring of all kept units
            ref = ix._dense_rank(q, mask, n)
            ref_top = [h.id for h in ix.search(q, k=10, **kw)]
            index_mod.EXACT_MAX = 0
            for f in fetches:
                index_mod.FETCH_CAP = f
                got = ix._dense_rank(q, mask, n)
                top = [h.id for h in ix.search(q, k=10, **kw)]
                res[f].append((len(set(got) & set(ref)) / max(len(ref), 1), len(set(top) & set(ref_top)) / 10))
    finally:
        index_mod.FETCH_CAP, index_mod.EXACT_MAX = saved
    for f, xs in res.items():
        a = np.array(xs)
        print(
            f"    fetch cap {f:5d}: dense recall@{n} mean {a[:, 0].mean():.3f} (min {a[:, 0].min():.2f}); "
            f"hybrid top-10 overlap mean {a[:, 1].mean():.3f} (min {a[:, 1].min():.1f})",
            flush=True,
        )


def run_size(size: int, base: list[dict], base_vecs: np.ndarray, args: argparse.Namespace) -> None:
    work = args.workdir / f"n{size}"
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    print(f"\n== {size:,} records ==", flush=True)
    if args.reuse:  # query-only: re-measure latency on an index kept by an earlier --keep run
        ix = PaperIndex(work / "index")
        query_phase(ix, base, args, dense=ix._ever_embedded())
        ix.close()
        return
    make_corpus(base, size, corpus)
    shutil.rmtree(work / "index", ignore_errors=True)
    ix = PaperIndex(work / "index")
    t0, c0 = time.perf_counter(), time.process_time()
    stats = ix.import_jsonl(corpus, progress=args.progress)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sqlite_s = stats.seconds - stats.bm25_seconds
    print(
        f"  import: {stats.imported:,} records in {wall:.1f} s wall = {stats.imported / wall:,.0f} records/s "
        f"(SQLite phase {sqlite_s:.1f} s, BM25 shards {stats.bm25_seconds:.1f} s, {len(ix.bm25.shards)} shards); "
        f"CPU time {cpu:.1f} s = {stats.imported / cpu:,.0f} records per CPU-second; load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    dense = args.dense_max is None or size <= args.dense_max
    if dense:
        print("  filling FILLED vectors (real embeddings of a subset + noise, see docstring) into chromadb ...")
        fill_s = fill_vectors(ix, base_vecs, args.noise)
        print(f"  vectors: {size:,} written to chromadb + vector file in {fill_s:.0f} s ({size / fill_s:,.0f}/s)")
    else:
        print(f"  NO dense vectors at this size (--dense-max {args.dense_max}): only BM25 latency is measured")
    query_phase(ix, base, args, dense)
    st = ix.stats()
    print(f"  disk: {st['disk_bytes'] / 1e9:.2f} GB ({st['papers']:,} papers)")
    ix.close()
    if not args.keep:
        shutil.rmtree(work / "index", ignore_errors=True)


def query_phase(ix: PaperIndex, base: list[dict], args: argparse.Namespace, dense: bool) -> None:
    rng = random.Random(1)
    queries = [" ".join(base[rng.randrange(len(base))]["title"].split()) for _ in range(args.queries)]
    n_units = ix.bm25.n_units
    filters = {k: v for k, v in FILTERS.items() if not args.filters or k in args.filters}
    if args.profile:
        for name, kw in filters.items():
            print(f"  profile, filter {name} ({len(queries)} queries):", flush=True)
            profile(ix, queries, **kw)
        return
    if args.recall:
        for name, kw in filters.items():
            print(f"  dense over-fetch recall vs exact, filter {name} ({len(queries)} queries):", flush=True)
            dense_recall(ix, queries, args.recall, **kw)
        return
    print(f"  query latency over {len(queries)} title queries, k=10 (ms):")
    print("  | mode   | filter                    | kept  | wall p50 | wall p95 | CPU p50 | CPU p95 | hits/q | load |")
    print("  |---|---|---|---|---|---|---|---|---|")
    modes = [m for m in ("hybrid", "bm25") if dense or m == "bm25"]
    for mode in [m for m in modes if m in args.modes]:
        for name, kw in filters.items():
            mask = ix._mask(kw.get("category"), kw.get("before"))
            kept = 1.0 if mask is None else mask.sum() / n_units
            w50, w95, c50, c95, hits = latency(ix, queries, mode=mode, **kw)
            print(
                f"  | {mode:<6} | {name:<25} | {kept:5.1%} | {w50:8.1f} | {w95:8.1f} | {c50:7.1f} | {c95:7.1f} "
                f"| {hits:6.1f} | {os.getloadavg()[0]:4.1f} |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument(
        "--source", type=Path, default=REPO.parent / "shared" / "data" / "arxiv" / "arxiv-cs-2025-2026.jsonl.gz"
    )
    ap.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "scale")
    ap.add_argument("--embed-sample", type=int, default=256, help="real abstracts embedded to measure the rate")
    ap.add_argument("--real-vectors", type=int, default=1024, help="real embeddings the filled vectors derive from")
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--dense-max", type=int, default=None, help="skip the dense side for sizes above this")
    ap.add_argument("--keep", action="store_true", help="keep the built indexes")
    ap.add_argument("--reuse", action="store_true", help="query-only: re-measure latency on indexes kept by --keep")
    ap.add_argument("--filters", nargs="+", default=None, help=f"only these filter names: {list(FILTERS)}")
    ap.add_argument("--modes", nargs="+", default=["hybrid", "bm25"], choices=["hybrid", "bm25"])
    ap.add_argument("--profile", action="store_true", help="with --reuse: per-stage timings instead of the table")
    ap.add_argument("--recall", type=int, nargs="+", default=None, help="with --reuse: over-fetch recall at these caps")
    args = ap.parse_args()
    base = load_base(args.source)
    print(f"base corpus: {len(base):,} real records from {args.source}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared: wall is pessimistic)")

    from retrieval.dense import Embedder

    emb = Embedder()
    cache = args.workdir / f"base-vectors-{args.real_vectors}.npy"
    args.workdir.mkdir(parents=True, exist_ok=True)
    sample = [f"{r['title']}. {r['abstract']}" for r in base[: args.embed_sample]]
    emb.encode(sample[:8])  # load + warm up
    t0, c0 = time.perf_counter(), time.process_time()
    emb.encode(sample)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"embedding rate: {len(sample) / secs:,.1f} abstracts/s wall on {emb.device} ({len(sample)} real abstracts; "
        f"{len(sample) / cpu:,.1f} per CPU-second; load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    if cache.exists():
        base_vecs = np.load(cache)
    else:
        texts = [f"{r['title']}. {r['abstract']}" for r in base[: args.real_vectors]]
        base_vecs = emb.encode(texts)
        np.save(cache, base_vecs)
    for size in args.sizes:
        run_size(size, base, base_vecs, args)


if __name__ == "__main__":
    main()
