"""How close import and CPU embedding run to what this machine allows: each part of the work measured alone.

The import targets ask for 20,000 records/s end to end and CPU embedding for 80 abstracts/s on a 2-core machine. This
script times the parts those rates are made of, on real arXiv records, so a miss can be read as "the code wastes time"
or "the parts alone already need more than the budget":

  * import, per record: the JSON parse (`read_batches`, one thread), the SQLite batch insert (`DocStore`, one thread),
    and the keyword index alone (`KeywordIndex.add` + its final commit on already parsed records: Python builds the
    documents, tantivy's writers index them on both cores). `keyword_only_records_per_s` is the import's ceiling
    even if parsing and SQLite cost nothing. The analyser (tokenise, lower-case, stop words, Snowball English
    stemming) is timed with and without its stemming filter, to show what the stemming the issue asks for costs:
    through `TextAnalyzer.analyze` (which also builds a Python list of the terms), inside tantivy's writers (the
    keyword index alone), and in a whole import (`PaperIndex.import_jsonl`). The runs without stemming are an
    ablation only (the analyser is swapped in this process); with and without take turns, `--rounds` times each.
  * CPU embedding: onnxruntime's int8 GEMM (`MatMulInteger`, one thread) on the encoder's layer shapes, against the
    rate the shipped bulk encoder's quantised MatMuls reach inside the model (onnxruntime's profiler, one thread,
    real abstracts, their linear-layer multiply-adds counted from the token lengths), and each operator's share of
    the encoder's time.

    .venv/bin/python benchmarks/cpu_ceilings.py --records 74728 --abstracts 128 --rounds 3

Ends with a `key: value` block.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embed_rate import arxiv_texts  # noqa: E402
from index_scale import SOURCE  # noqa: E402

LINEAR_MACS = {"hidden": 384, "ffn": 1536, "layers": 6}  # all-MiniLM-L6-v2: Q, K, V, O (d x d) and the FFN (d x 4d x 2)


def lines_file(src: Path, n: int, out: Path) -> Path:
    """The first `n` records of `src` as a plain JSONL file (what `index import` reads)."""
    with gzip.open(src, "rb") as fh, open(out, "wb") as dst:
        for line in itertools.islice(fh, n):
            dst.write(line)
    return out


def import_parts(path: Path, work: Path, rounds: int) -> dict[str, float]:
    """Parse and SQLite (once each, one thread); then, with and without stemming taking turns `rounds` times, the
    keyword index alone (wall and CPU of tantivy's writers) and the whole import; means over the rounds."""
    from retrieval.arxiv_import import read_batches
    from retrieval.docstore import DocStore
    from retrieval.index import TITLE_BOOST, PaperIndex
    from retrieval.keyword import KeywordIndex, KeywordUnit

    t0 = time.perf_counter()
    batches = list(read_batches(path))
    parse_s = time.perf_counter() - t0
    records = [r for b in batches for r in b.records]
    docs = DocStore(work / "docs.sqlite")
    state = {"offset": 0, "lines": 0, "imported": 0, "duplicates": 0, "malformed": 0, "done": 0}
    t0 = time.perf_counter()
    for b in batches:
        docs.add_arxiv_batch(b.records, "ceilings", state)
    sqlite_s = time.perf_counter() - t0
    docs.close()
    n = len(records)
    units = [
        KeywordUnit(i, r.id, r.title, r.abstract, " ".join(r.categories), r.date) for i, r in enumerate(records, 1)
    ]
    runs: dict[str, list[float]] = defaultdict(list)
    for i in range(rounds):
        for on in (True, False) if i % 2 == 0 else (False, True):
            tag = "" if on else "no_stem_"
            folder = work / f"stem-{on}"
            with stemming(on):
                kw = KeywordIndex(folder / "keyword", title_boost=TITLE_BOOST)
                t0, c0 = time.perf_counter(), time.process_time()
                kw.add(units)
                kw.commit(final=True)
                runs[f"{tag}keyword_only_s"].append(time.perf_counter() - t0)
                runs[f"{tag}keyword_only_cpu_us_per_record"].append((time.process_time() - c0) / n * 1e6)
                kw.close()
                shutil.rmtree(folder)
                ix = PaperIndex(folder)
                t0 = time.perf_counter()
                stats = ix.import_jsonl(path, progress=False)
                runs[f"{tag}import_records_per_s"].append(stats.imported / (time.perf_counter() - t0))
                ix.close()
                shutil.rmtree(folder)
    mean = {key: float(np.mean(v)) for key, v in runs.items()}
    kw_s = mean["keyword_only_s"]
    texts = [f"{(r.title + ' . ') * TITLE_BOOST}{r.abstract}" for r in records[:20_000]]
    with_stem, without = analyser_us(texts)
    return {
        "records": n,
        "parse_records_per_s": n / parse_s,
        "sqlite_records_per_s": n / sqlite_s,
        "keyword_only_records_per_s": n / kw_s,
        "keyword_only_cpu_us_per_record": mean["keyword_only_cpu_us_per_record"],
        "analyser_us_per_record": with_stem,
        "analyser_no_stem_us_per_record": without,
        "serial_sum_records_per_s": 1 / (parse_s / n + sqlite_s / n + kw_s / n),
        "import_records_per_s": mean["import_records_per_s"],
        "no_stem_keyword_only_cpu_us_per_record": mean["no_stem_keyword_only_cpu_us_per_record"],
        "no_stem_import_records_per_s": mean["no_stem_import_records_per_s"],
    }


@contextlib.contextmanager
def stemming(on: bool) -> Iterator[None]:
    """The keyword index built with (as shipped) or without its stemming filter, in this process only."""
    import retrieval.keyword as keyword

    shipped = keyword.analyser
    if not on:
        keyword.analyser = lambda stem=True: shipped(stem=False)  # what KeywordIndex calls when it opens
    try:
        yield
    finally:
        keyword.analyser = shipped


def analyser_us(texts: list[str]) -> tuple[float, float]:
    """Microseconds per text through the keyword index's analyser, with and without its stemming filter."""
    from retrieval.keyword import analyser

    out = []
    for a in (analyser(), analyser(stem=False)):
        t0 = time.perf_counter()
        for t in texts:
            a.analyze(t)
        out.append((time.perf_counter() - t0) / len(texts) * 1e6)
    return out[0], out[1]


def gemm_gmacs(m: int, k: int, n: int, reps: int = 40) -> float:
    """onnxruntime MatMulInteger (uint8 x int8 -> int32), one thread: billions of multiply-adds per second."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        [helper.make_tensor("w", TensorProto.INT8, [k, n], np.random.default_rng(0).integers(-127, 127, k * n))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).integers(0, 255, (m, k)).astype(np.uint8)
    for _ in range(5):
        sess.run(None, {"a": a})
    t0 = time.perf_counter()
    for _ in range(reps):
        sess.run(None, {"a": a})
    return m * k * n * reps / (time.perf_counter() - t0) / 1e9


def encoder_profile(texts: list[str], work: Path) -> dict[str, float]:
    """The shipped bulk encoder on one thread under onnxruntime's profiler: abstracts/s, each operator's share, and
    the multiply-add rate of its quantised MatMuls."""
    import onnxruntime as ort

    from retrieval.dense import resolve_model
    from retrieval.encoder import BULK_GRAPH, INT8_FOR_BULK, OnnxEncoder

    enc = OnnxEncoder(resolve_model(None)[1], int8=INT8_FOR_BULK, threads=1, graph=BULK_GRAPH)
    enc.encode(texts[:16])  # warm-up
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / "encoder")
    # the same session options as OnnxEncoder's unpadded path (retrieval/encoder.py), with the profiler on
    enc.session = ort.InferenceSession(
        str(enc.path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
    )
    warm = texts[:2]
    enc.encode(warm)  # a session's first run sets its kernels up: profiled, not timed
    t0 = time.perf_counter()
    enc.encode(texts)
    rate = len(texts) / (time.perf_counter() - t0)
    events = json.loads(Path(enc.session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1e6
    total = sum(per_op.values())
    tokens = sum(len(e.ids) for e in enc.tokenizer.encode_batch(warm + texts))
    d, ff, layers = LINEAR_MACS["hidden"], LINEAR_MACS["ffn"], LINEAR_MACS["layers"]
    macs = tokens * layers * (4 * d * d + 2 * d * ff)
    int8_s = per_op.get("DynamicQuantizeMatMul", 0.0) + per_op.get("MatMulIntegerToFloat", 0.0)
    out = {"encoder_one_thread_abstracts_per_s": rate, "encoder_tokens_per_abstract": tokens / len(warm + texts)}
    out["encoder_int8_matmul_gmacs"] = macs / int8_s / 1e9 if int8_s else float("nan")
    for op, s in sorted(per_op.items(), key=lambda kv: -kv[1])[:6]:
        out[f"encoder_share_{op}"] = s / total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--records", type=int, default=60_000, help="records for the import parts")
    ap.add_argument("--abstracts", type=int, default=128, help="abstracts for the encoder profile")
    ap.add_argument("--rounds", type=int, default=2, help="turns of each stemming setting")
    args = ap.parse_args()
    if not args.source.exists():
        raise SystemExit(f"no arXiv records at {args.source} (the shared data folder)")
    work = Path(tempfile.mkdtemp(prefix="ceilings-"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out: dict[str, float] = {}
    try:
        records = lines_file(args.source, args.records, work / "records.jsonl")
        out |= import_parts(records, work, args.rounds)
        for m, k, n in ((512, 384, 384), (512, 384, 1536), (512, 1536, 384)):
            out[f"gemm_int8_{m}x{k}x{n}_gmacs"] = gemm_gmacs(m, k, n)
        out |= encoder_profile(arxiv_texts(args.source, args.abstracts, 50), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"# {started}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    for key, v in out.items():
        print(f"{key}: {v:.3f}" if abs(v) < 100 else f"{key}: {v:,.0f}")


if __name__ == "__main__":
    main()
