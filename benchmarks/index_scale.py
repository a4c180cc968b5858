"""Index scale, old and new code side by side: import rate, query latency (p50/p95, with filters), disk, peak memory.

What is measured, exactly:
  * corpus: the shared arXiv CS metadata file (74,728 real records, snapshot layout), repeated with perturbed copies
    to reach the size: copy c>0 of a record gets id "<id>.c<c>" and ~15% of its title/abstract words dropped at random
    (seeded), so every copy is a distinct document with a realistic vocabulary and length. Dates/categories are kept.
  * two code paths on the same corpus, each in two processes of its own, one to build (import, then the vector fill)
    and one to search the built index, as a user's searches do (`peak_rss_gb` is the larger of the two peaks):
    "new" is this checkout (tantivy keyword side, ONNX query encoder); "old" is the `retrieval/` package of
    --baseline (default: the last commit before tantivy, with the sharded BM25 store and torch query encoding),
    extracted with `git archive` into the work folder and put first on sys.path.
  * import rate: `PaperIndex.import_jsonl` on the plain JSONL file, wall clock, end to end (parse + SQLite + the
    keyword index, its final commit/merge included), records/s.
  * dense side at scale: embedding 1M abstracts on this CPU is impossible in the time, so the vectors are FILLED:
    B real embeddings (B = --real-vectors) and unit u gets the real vector of base record (u mod B) plus Gaussian noise
    (sigma --noise), re-normalised, written through the index's own vector file + chromadb collection. Dense
    *relevance* at scale is therefore not meaningful; dense *latency* (HNSW, over-fetch, exact filtered scoring) is.
  * query latency: `PaperIndex.search` end to end (a fresh query embedding each time, keyword search, chromadb HNSW,
    fusion, snippets from SQLite), k=10, in the search process, on an index in the page cache (its files read once
    first), after 20 untimed warm-up queries per row; queries are titles of random real records. Before that, the
    process's first 20 searches (other titles) are timed apart: the cold start (`first_search_s`, `cold_p50_ms`).
  * CPU embedding rate: what `index embed` runs on a CPU (smoothed mha int8 ONNX), torch (sentence-transformers),
    the fused int8 graph it replaced and the plain ONNX Runtime encoders (fp32, int8) on --embed-sample real
    abstracts, the encoders taking turns over --embed-rounds rounds (median round).

    .venv/bin/python benchmarks/index_scale.py --sizes 200000 1000000

The last lines are a `key: value` block: `<path>_<size>_<metric>` for every run, plus the embedding rates.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BASELINE = "ebb3d2f"  # the last commit with the hand-written BM25 store (retrieval/bm25_store.py)

WARM = 20  # untimed warm-up queries per measured row
SOURCE = REPO.parent / "shared" / "data" / "arxiv" / "arxiv-cs-2025-2026.jsonl.gz"  # the base records

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
    if out.exists() and out.with_suffix(".n").exists() and int(out.with_suffix(".n").read_text()) == size:
        return
    rng = random.Random(seed)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i in range(size):
            rec = base[i % len(base)]
            copy = i // len(base)
            if copy:
                abstract = " ".join(w for w in rec["abstract"].split() if rng.random() > 0.15)
                title = " ".join(w for w in rec["title"].split() if rng.random() > 0.15) or rec["title"]
                rec = {**rec, "id": f"{rec['id']}.c{copy}", "title": title, "abstract": abstract}
            fh.write(json.dumps(rec) + "\n")
    tmp.replace(out)
    out.with_suffix(".n").write_text(str(size))


# -- worker: one code path, one size, in its own process ---------------------------------------------------------
def fill_vectors(ix, base_vecs: np.ndarray, noise: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hi = ix.docs.max_uid() + 1
    key = ix._embedded_key() if hasattr(ix, "_embedded_key") else f"embedded_hi:{ix.recipe.hash}"
    t0 = time.perf_counter()
    for lo in range(1, hi, 20_000):
        uids = np.arange(lo, min(lo + 20_000, hi), dtype=np.int64)
        vecs = base_vecs[uids % len(base_vecs)] + rng.normal(0, noise, (len(uids), base_vecs.shape[1]))
        vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
        ix.vectors.write(uids, vecs)
        ix.chroma.upsert(uids, vecs)
        ix.docs.set_meta(key, str(int(uids[-1]) + 1))
    return time.perf_counter() - t0


def peak_rss_bytes() -> int:
    """This process's own peak resident memory: VmHWM, the high-water mark of its address space. Not ru_maxrss: Linux
    carries that across fork and exec, so a worker reported the orchestrator's peak (3.19 GB for every path in the
    2026-12-06 10:48 run) whenever its own was lower."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def kept_fraction(ix, kw: dict) -> float:
    if hasattr(ix, "keyword"):  # new
        return ix._filter(kw.get("category"), kw.get("before"))[2] / max(ix.keyword.n_docs, 1)
    mask = ix._mask(kw.get("category"), kw.get("before"))
    return 1.0 if mask is None else float(mask.sum()) / max(ix.bm25.n_units, 1)


def latency(ix, queries: list[str], **kw) -> tuple[float, float, float, list[float]]:
    """Wall p50 / p95, the CPU-time p50 (this process, all threads: what a shared machine cannot inflate much) and
    every query's wall time (ms, in query order: the RESULT line keeps them for a look at the tail)."""
    warm, queries = queries[-WARM:], queries[:-WARM]
    for q in warm:  # the first searches load the HNSW graph and page in the engine's files; never timed
        ix.search(q, k=10, **kw)
    wall, cpu = [], []
    for q in queries:
        ix.embedder._query_cache.clear()  # every timed query pays its own embedding, as a fresh query would
        t0, c0 = time.perf_counter(), time.process_time()
        ix.search(q, k=10, **kw)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return float(np.percentile(wall, 50)), float(np.percentile(wall, 95)), float(np.percentile(cpu, 50)), wall


def cold_start(ix, queries: list[str], no_dense: bool) -> dict[str, float]:
    """The first searches of the process, timed apart from the latency rows, on other queries: the first loads the
    encoder and the HNSW graph, and the ones after it read the index files from disk wherever the page cache has lost
    them (the build's last minutes wrote other files; this machine's kernel also pages out file pages untouched for
    about a minute: DAMON reclaim)."""
    mode = "bm25" if no_dense else "hybrid"
    wall = []
    for q in queries:
        t0 = time.perf_counter()
        ix.search(q, k=10, mode=mode)
        wall.append((time.perf_counter() - t0) * 1000)
    return {"first_search_s": wall[0] / 1000, "cold_p50_ms": float(np.median(wall[1:])), "cold_max_ms": max(wall[1:])}


def prewarm(index: Path) -> float:
    """Read every file of the index once, so the latency rows measure searches on an index in the page cache, as in
    a process that has been searching it (without this, the first row's queries pay the reads the later rows reuse:
    unfiltered hybrid at 1M, first 20 timed queries p50 21.9 ms against 11.3 for the other 80, 2026-12-06 16:49 UTC).
    Seconds taken."""
    t0 = time.perf_counter()
    buf = bytearray(1 << 24)
    for path in sorted(p for p in index.rglob("*") if p.is_file()):
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    return time.perf_counter() - t0


def worker(args: argparse.Namespace) -> None:
    """One phase of one code path in this process: "build" (import, then the vector fill) or "search" (every latency
    row on the built index). The searches get their own process, as a user's do: `replicate search` and an agent's
    session open an index that `index import` / `index embed` built in other processes. In the process that had just
    filled 1M vectors, the same searches ran slower (2026-12-06 16:35 UTC, 3 rounds of 100 queries each: cs.LG
    15.9-18.3 ms against 12.6-13.5 in a fresh process right after; docs/index.md), a state of the benchmark's own fill
    that no user's search process is in."""
    from retrieval.index import PaperIndex

    if args.phase == "build":
        shutil.rmtree(args.index, ignore_errors=True)
        ix = PaperIndex(args.index)
        t0, c0 = time.perf_counter(), time.process_time()
        stats = ix.import_jsonl(args.corpus, progress=False)
        import_s, import_cpu = time.perf_counter() - t0, time.process_time() - c0
        out: dict = {"import_records_per_s": stats.imported / import_s}
        out["import_records_per_cpu_s"] = stats.imported / import_cpu
        print(
            f"    import {stats.imported:,} records in {import_s:.1f} s wall, {import_cpu:.1f} s CPU (all threads) = "
            f"{stats.imported / import_cpu:,.0f} records per CPU-second; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        if not args.no_dense:
            out["fill_s"] = fill_vectors(ix, np.load(args.vectors), args.noise)
            print(f"    filled vectors in {out['fill_s']:.0f} s", flush=True)
        ix.close()
        os.sync()  # the searches' process finds the fill's writes on disk
        out["build_peak_rss_gb"] = peak_rss_bytes() / 1e9
        print("RESULT " + json.dumps(out), flush=True)
        return
    titles = [r["title"] for r in load_base(args.source)]  # only the titles: the rest would count in peak_rss_gb
    ix = PaperIndex(args.index)
    rng = random.Random(1)
    drawn = [" ".join(titles[rng.randrange(len(titles))].split()) for _ in range(args.queries + 2 * WARM)]
    queries, cold = drawn[: args.queries + WARM], drawn[args.queries + WARM :]  # the cold start gets other titles
    out = cold_start(ix, cold, args.no_dense)
    out["prewarm_s"] = prewarm(args.index)
    print(
        f"    cold start: first search {out['first_search_s']:.2f} s, the next {WARM - 1} p50 "
        f"{out['cold_p50_ms']:.1f} ms (max {out['cold_max_ms']:.1f}); index files read in {out['prewarm_s']:.1f} s",
        flush=True,
    )
    rows = []
    for mode in ["bm25"] if args.no_dense else ["hybrid", "bm25"]:
        for name, kw in FILTERS.items():
            p50, p95, cpu50, wall = latency(ix, queries, mode=mode, **kw)
            row = {"mode": mode, "filter": name, "kept": kept_fraction(ix, kw), "p50": p50, "p95": p95, "cpu50": cpu50}
            row["wall_ms"] = [round(w, 2) for w in wall]
            rows.append(row)
            load = os.getloadavg()[0]
            print(
                f"    {mode:<6} {name:<26} p50 {p50:6.1f} p95 {p95:6.1f} ms, CPU p50 {cpu50:5.1f} ms; load {load:.1f}",
                flush=True,
            )
    out |= {"rows": rows, "search_peak_rss_gb": peak_rss_bytes() / 1e9}
    out["disk_gb"] = sum(p.stat().st_size for p in args.index.rglob("*") if p.is_file()) / 1e9
    ix.close()
    print("RESULT " + json.dumps(out), flush=True)


# -- orchestrator ------------------------------------------------------------------------------------------------
def embedding_rates(base: list[dict], n: int, rounds: int) -> dict[str, float]:
    """CPU abstracts/s: what `index embed` runs on a CPU now (`Embedder.encode`: the smoothed mha int8 ONNX graph),
    torch as it ran before ONNX (sentence-transformers), the fused int8 graph shipped before the smoothing, and the
    plain ONNX Runtime graphs. All cores; the encoders take turns in each round, and the median round counts."""
    from retrieval.dense import Embedder, resolve_model
    from retrieval.encoder import OnnxEncoder

    texts = [f"{r['title']}. {r['abstract']}" for r in base[:n]]
    emb = Embedder()
    model = resolve_model(None)[1]
    runs = {
        "embed_index_cpu": emb.encode,
        "embed_torch": lambda t: emb.encode(t, fast=False),
        "embed_onnx_fused_int8": OnnxEncoder(model, int8=True, graph="fused").encode,
        "embed_onnx_fp32": OnnxEncoder(model, int8=False, graph="plain").encode,
        "embed_onnx_int8": OnnxEncoder(model, int8=True, graph="plain").encode,
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run(texts[:8])  # warm-up (and the ONNX export on first use)
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(texts)
            seconds[name].append(time.perf_counter() - t0)
    return {f"{name}_abstracts_per_s": n / float(np.median(s)) for name, s in seconds.items()}


def baseline_tree(work: Path, rev: str) -> Path:
    dest = work / f"baseline-{rev}"
    if not (dest / "retrieval" / "index.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "retrieval"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def run_path(kind: str, code: Path, size: int, corpus: Path, vecs: Path, args: argparse.Namespace) -> dict | None:
    """Both phases of one code path, each in its own process; `peak_rss_gb` is the larger of their peaks."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--corpus", str(corpus), "--vectors", str(vecs)]
    cmd += ["--index", str(args.workdir / f"n{size}" / f"index-{kind}"), "--source", str(args.source)]
    cmd += ["--queries", str(args.queries), "--noise", str(args.noise)]
    dense_max = args.old_dense_max if kind == "old" and args.old_dense_max is not None else args.dense_max
    if dense_max is not None and size > dense_max:
        cmd.append("--no-dense")
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    print(f"  {kind} code ({code}):", flush=True)
    result: dict = {}
    for phase in ("build", "search"):
        proc = subprocess.Popen([*cmd, "--phase", phase], env=env, stdout=subprocess.PIPE, text=True, cwd=code)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                result |= json.loads(line[7:])
            else:
                print(line, end="", flush=True)
        if proc.wait() != 0:
            print(f"    the {phase} phase failed (exit {proc.returncode})", flush=True)
            return None
    result["peak_rss_gb"] = max(result["build_peak_rss_gb"], result["search_peak_rss_gb"])
    (args.workdir / f"n{size}" / f"result-{kind}.json").write_text(json.dumps(result))  # per-query times included
    if not args.keep:
        shutil.rmtree(args.workdir / f"n{size}" / f"index-{kind}", ignore_errors=True)
    return result


def summarise(kind: str, size: int, res: dict) -> dict[str, float]:
    rows = {(r["mode"], r["filter"]): r for r in res["rows"]}
    p = f"{kind}_{size}_"
    out = {p + "import_records_per_s": res["import_records_per_s"]}
    if "import_records_per_cpu_s" in res:
        out[p + "import_records_per_cpu_s"] = res["import_records_per_cpu_s"]
    filtered = [r for r in res["rows"] if r["mode"] == "hybrid" and r["filter"] != "none"]
    if filtered:  # the dense side was measured
        worst = max(filtered, key=lambda r: r["p50"])
        out[p + "hybrid_p50_ms"] = rows[("hybrid", "none")]["p50"]
        out[p + "hybrid_cpu_p50_ms"] = rows[("hybrid", "none")].get("cpu50", float("nan"))
        out[p + "hybrid_p95_ms"] = rows[("hybrid", "none")]["p95"]
        out[p + "hybrid_filtered_p50_ms"] = worst["p50"]
        out[p + "hybrid_filtered_p95_ms"] = worst["p95"]
    out |= {p + k: res[k] for k in ("first_search_s", "cold_p50_ms", "prewarm_s") if k in res}
    return out | {
        p + "bm25_p50_ms": rows[("bm25", "none")]["p50"],
        p + "bm25_cpu_p50_ms": rows[("bm25", "none")].get("cpu50", float("nan")),
        p + "bm25_filtered_p50_ms": max(r["p50"] for r in res["rows"] if r["mode"] == "bm25"),
        p + "disk_gb": res["disk_gb"],
        p + "peak_rss_gb": res["peak_rss_gb"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--paths", nargs="+", default=["new", "old"], choices=["new", "old"])
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the old code path")
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "scale")
    ap.add_argument("--embed-sample", type=int, default=128, help="real abstracts embedded to measure the rate")
    ap.add_argument("--embed-rounds", type=int, default=3, help="timed rounds of the embedding rates")
    ap.add_argument("--real-vectors", type=int, default=512, help="real embeddings the filled vectors derive from")
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the built indexes")
    ap.add_argument("--dense-max", type=int, default=None, help="no vectors (keyword side only) above this size")
    ap.add_argument("--old-dense-max", type=int, default=None, help="the same, for the old path only")
    ap.add_argument("--no-dense", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--phase", choices=["build", "search"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    base = load_base(args.source)
    print(f"base corpus: {len(base):,} real records from {args.source}; started {started}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared: wall is pessimistic)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, float] = embedding_rates(base, args.embed_sample, args.embed_rounds)
    for k, v in summary.items():
        print(f"  {k}: {v:.1f}", flush=True)
    vecs = args.workdir / f"base-vectors-{args.real_vectors}.npy"
    if not vecs.exists():
        from retrieval.dense import Embedder

        np.save(vecs, Embedder().encode([f"{r['title']}. {r['abstract']}" for r in base[: args.real_vectors]]))
    code = {"new": REPO, "old": baseline_tree(args.workdir, args.baseline)}
    for size in args.sizes:
        corpus = args.workdir / f"n{size}" / "corpus.jsonl"
        corpus.parent.mkdir(parents=True, exist_ok=True)
        make_corpus(base, size, corpus)
        print(f"\n== {size:,} records ==", flush=True)
        for kind in args.paths:
            res = run_path(kind, code[kind], size, corpus, vecs, args)
            if res is not None:
                summary.update(summarise(kind, size, res))
    print(f"\n# {started}, {os.cpu_count()} cores; load average now {os.getloadavg()[0]:.1f}")
    summary.update(headline(summary, args))
    for k, v in summary.items():
        print(f"{k}: {v:.3f}" if v < 100 else f"{k}: {v:,.0f}")


HEADLINE = ("import_records_per_s", "hybrid_p50_ms", "hybrid_p95_ms", "hybrid_filtered_p50_ms", "bm25_p50_ms",
            "bm25_filtered_p50_ms", "disk_gb", "peak_rss_gb")  # fmt: skip


def headline(summary: dict[str, float], args: argparse.Namespace) -> dict[str, float]:
    """The issue's keys without a prefix: the first path measured (the new code by default) at the largest size."""
    kind, size = args.paths[0], max(args.sizes)
    return {k: summary[f"{kind}_{size}_{k}"] for k in HEADLINE if f"{kind}_{size}_{k}" in summary}


if __name__ == "__main__":
    main()
