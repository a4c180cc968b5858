"""CPU bulk embedding rate of arXiv abstracts: torch vs the ONNX Runtime encoders, with cosine against torch.

Embeds N real abstracts (title + ". " + abstract, the text `PaperIndex.embed` builds) from the shared arXiv CS file
with each encoder, timing the whole `encode` call (tokenising included) in wall time and in CPU time of this
process, after one warm-up batch; `--rounds` timed rounds with the encoders taking turns in each, the median round
reported. Cosine is against torch's vectors (sentence-transformers, fp32) of the same texts; `--scitldr` also reads
the cosine over the 3,229 SciTLDR abstracts (the issue's gate, ~3 minutes more).

    flock /tmp/bench.lock .venv/bin/python benchmarks/embed_rate.py --n 512 --scitldr

Encoders: torch (sentence-transformers' loop, batch 64), then ONNX Runtime graphs (retrieval/encoder.py `GRAPHS`) in
fp32 and int8: plain (torch.onnx export as is), fused (onnxruntime's BERT fusions, packed Q/K/V projection inside
one fp32 Attention kernel), mha (the same with MultiHeadAttention and separate Q/K/V MatMuls; its int8 is smoothed
first, retrieval/smoothing.py: the bulk CPU encoder and the query encoder), and mha-int8raw (mha int8 without the
smoothing). Every ONNX encoder runs unpadded (equal-length texts per run, the rewritten graph, retrieval/encoder.py)
except mha-int8-padded: the shipped encoder's path before, padded batches of 16 on one session with intra-op threads.
Prints one line per encoder, then a `key: value` block.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ENCODERS = (
    "torch", "plain-fp32", "plain-int8", "fused-fp32", "fused-int8", "mha-fp32", "mha-int8", "mha-int8raw",
    "mha-int8-padded",
)  # fmt: skip


def arxiv_texts(path: Path, n: int, stride: int) -> list[str]:
    out = []
    with gzip.open(path, "rt") as fh:
        for line in itertools.islice(fh, 0, None, stride):
            r = json.loads(line)
            out.append(f"{r.get('title') or ''}. {r.get('abstract') or ''}")
            if len(out) >= n:
                break
    return out


def scitldr_texts(folder: Path) -> list[str]:
    with open(folder / "corpus.jsonl") as fh:
        return [f"{d['title']}. {d['text']}" for d in map(json.loads, fh)]


def make(name: str, model_dir: str, threads: int, batch: int):
    """A function texts -> unit vectors for encoder `name`."""
    if name == "torch":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        st = SentenceTransformer(model_dir, device="cpu")

        def enc(texts: list[str]) -> np.ndarray:
            with torch.inference_mode():
                return st.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)

        return enc
    from retrieval.encoder import OnnxEncoder

    graph, prec, *how = name.split("-")
    smooth = False if prec == "int8raw" else None  # "raw": int8 without the activation smoothing
    unpadded = how != ["padded"]  # "padded": the path before unpadded runs (padded batches, intra-op threads)
    e = OnnxEncoder(
        model_dir, int8=prec.startswith("int8"), threads=threads, graph=graph, smooth=smooth, unpadded=unpadded
    )
    if e.graph != graph:
        raise SystemExit(f"{name}: the BERT optimiser did not fuse this model ({e.path})")
    return lambda texts: e.encode(texts, batch_size=batch)


def timed(enc, texts: list[str]) -> tuple[np.ndarray, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    vecs = np.asarray(enc(texts), dtype=np.float32)
    return vecs, time.perf_counter() - t0, time.process_time() - c0


def cos_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    c = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(c.mean()), float(np.percentile(c, 1)), float(c.min())


def cosine_summary(vecs: np.ndarray, ref: np.ndarray) -> str:
    m, p1, lo = cos_stats(vecs, ref)
    return f"mean {m:.4f} p1 {p1:.4f} min {lo:.4f}"


def main() -> None:
    shared = Path(os.environ.get("REPLICATE_SHARED", REPO.parent / "shared"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arxiv", type=Path, default=shared / "data/arxiv/arxiv-cs-2025-2026.jsonl.gz")
    ap.add_argument("--n", type=int, default=512, help="abstracts to embed per encoder")
    ap.add_argument("--stride", type=int, default=50, help="take every STRIDE-th record (a spread of the file)")
    ap.add_argument("--encoders", default=",".join(ENCODERS), help=f"comma-separated, of {', '.join(ENCODERS)}")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=None, help="texts per ONNX run (default: the encoder's)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds, the encoders interleaved in each")
    ap.add_argument(
        "--scitldr",
        type=Path,
        nargs="?",
        const=shared / "data/scitldr",
        default=None,
        help="also: cosine vs torch over the SciTLDR corpus (folder; default the shared copy)",
    )
    args = ap.parse_args()
    if not args.arxiv.exists():
        sys.exit(f"arXiv data not found at {args.arxiv}")
    from retrieval.dense import resolve_model
    from retrieval.encoder import BATCH, RUN_TOKENS

    batch = args.batch_size
    runs = f"{batch} texts" if batch else f"{RUN_TOKENS} tokens (unpadded), {BATCH} texts (padded)"
    model_dir = resolve_model(None)[1]
    texts = arxiv_texts(args.arxiv, args.n, args.stride)
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    if unknown := set(names) - set(ENCODERS):
        sys.exit(f"unknown encoders: {', '.join(sorted(unknown))}")
    if "torch" not in names:
        names.insert(0, "torch")  # the reference for the cosine
    sci = scitldr_texts(args.scitldr) if args.scitldr else None
    print(
        f"{len(texts)} arXiv abstracts, {args.threads} threads, ONNX runs of {runs}, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results: dict[str, str] = {"abstracts": str(len(texts)), "threads": str(args.threads), "onnx_runs": runs}
    encoders = {name: make(name, model_dir, args.threads, batch) for name in names}
    for enc in encoders.values():
        enc(texts[:32])  # warm-up: first-run allocations
    # Rounds: each encoder once per round, in turn, so a machine that drifts (rates moved by up to 8% between runs
    # on an idle machine) slows every encoder alike; the rate is the median round's.
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    vecs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, enc in encoders.items():
            vecs[name], wall, cpu = timed(enc, texts)
            walls[name].append(wall)
            cpus[name].append(cpu)
    ref = vecs[names[0]]  # torch: the reference for the cosines
    sci_ref = np.asarray(encoders[names[0]](sci), dtype=np.float32) if sci is not None else None
    for name, enc in encoders.items():
        rate, per_cpu = len(texts) / float(np.median(walls[name])), len(texts) / float(np.median(cpus[name]))
        line = f"{name:<11} {rate:7.1f} abstracts/s wall, {per_cpu:6.1f} per CPU-second"
        if args.rounds > 1:
            line += f" (rounds: {', '.join(f'{len(texts) / w:.1f}' for w in walls[name])})"
        results[f"{name}_abstracts_per_s"] = f"{rate:.1f}"
        results[f"{name}_abstracts_per_cpu_s"] = f"{per_cpu:.1f}"
        if name != names[0]:
            stats = cosine_summary(vecs[name], ref)
            line += f" | arXiv cosine vs torch {stats}"
            results[f"{name}_cosine_arxiv"] = stats
            if sci is not None and sci_ref is not None:
                stats = cosine_summary(np.asarray(enc(sci), dtype=np.float32), sci_ref)
                line += f" | SciTLDR ({len(sci)}) {stats}"
                results[f"{name}_cosine_scitldr"] = stats
        print(line, flush=True)
    from retrieval.dense import Embedder

    bulk = Embedder(device="cpu").bulk_encoder
    results["bulk_cpu_encoder"] = "torch" if bulk is None else f"{bulk.graph}-{'int8' if bulk.int8 else 'fp32'}"
    results["load_after"] = f"{os.getloadavg()[0]:.2f}"
    print()
    for k, v in results.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
