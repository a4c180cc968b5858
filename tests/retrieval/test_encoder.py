"""The ONNX Runtime encoder: exported locally from the shipped all-MiniLM-L6-v2 (plain, or fused by onnxruntime's BERT
optimiser), int8 for queries and for bulk CPU embedding; its vectors agree with torch's (sentence-transformers)."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval import encoder as encoder_mod
from retrieval import smoothing
from retrieval.dense import Embedder, no_accelerator_present, resolve_model

REPO = Path(__file__).resolve().parents[2]
SHORT = ["short", "", "Attention is all you need", "a" * 3000]  # an empty text, one past the 256-token truncation


@pytest.fixture(autouse=True, scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("REPLICATE_ONNX_CACHE", str(tmp_path_factory.mktemp("onnx")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real abstracts (title + ". " + abstract, what `index embed` embeds) where the shared data is present."""
    src = Path(os.environ.get("REPLICATE_SHARED", REPO.parent / "shared")) / "data/arxiv/arxiv-cs-2025-2026.jsonl.gz"
    rows = []
    if src.exists():
        with gzip.open(src, "rt") as fh:
            rows = [json.loads(line) for line in itertools.islice(fh, 0, 400, 40)]
    return [f"{r['title']}. {r['abstract']}" for r in rows] + SHORT


@pytest.fixture(scope="module")
def torch_vecs(texts: list[str]) -> np.ndarray:
    return Embedder(device="cpu").encode(texts, fast=False)  # sentence-transformers' own loop: the reference


def int8_name(graph: str, *, unpadded: bool = True) -> str:
    smooth = f"-smooth{smoothing.ALPHA}" if graph in encoder_mod.SMOOTHED else ""
    return f"model-{graph}-int8{smooth}{'-unpadded' if unpadded else ''}.onnx"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bulk_cpu_path_is_int8_onnx_and_agrees_with_torch(texts, torch_vecs) -> None:
    emb = Embedder(device="cpu")
    bulk = emb.bulk_encoder
    assert bulk is not None and bulk.graph == encoder_mod.BULK_GRAPH and bulk.int8 == encoder_mod.INT8_FOR_BULK
    assert bulk.path.name == int8_name(encoder_mod.BULK_GRAPH)
    vecs = emb.encode(texts, batch_size=4)  # the bulk path: several length-sorted batches
    assert vecs.shape == (len(texts), 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    cos = cosines(vecs, torch_vecs)
    n = len(texts) - len(SHORT)
    assert cos[:n].min() >= 0.99, cos  # the gate, read per abstract
    assert cos[n:].min() >= 0.97, cos  # a word, an empty text, 3,000 times one letter: measured 0.977-0.986
    assert emb.encode([]).shape == (0, 384)


@pytest.mark.parametrize("unpadded", [True, False])
@pytest.mark.parametrize("graph", ["fused", "mha"])
def test_fused_fp32_matches_torch(graph: str, unpadded: bool, texts, torch_vecs) -> None:
    """In fp32 both paths compute torch's function: padded batches, and unpadded runs on the rewritten graph (no
    padding mask, Add + LayerNormalization), from two worker threads."""
    enc = encoder_mod.OnnxEncoder(resolve_model(None)[1], int8=False, threads=2, graph=graph, unpadded=unpadded)
    assert enc.graph == graph and enc.path.name == f"model-{graph}{'-unpadded' if unpadded else ''}.onnx"
    assert cosines(enc.encode(texts, batch_size=3), torch_vecs).min() > 0.9999
    assert cosines(enc.encode(texts), torch_vecs).min() > 0.9999


def test_unpadded_runs_are_never_padded(texts) -> None:
    """The rewritten graph has no padding mask, so it is only right when every text of a run has the same length:
    each run the encoder makes is checked here, and the rewrite itself (no SkipLayerNormalization left, no mask)."""
    import onnx

    enc = encoder_mod.OnnxEncoder(resolve_model(None)[1], int8=True, threads=2, graph="mha")
    nodes = onnx.load(str(enc.path)).graph.node
    assert not [n for n in nodes if n.op_type == "SkipLayerNormalization"]
    assert all(len(n.input) <= 4 for n in nodes if n.op_type == "MultiHeadAttention")
    seen: list[tuple[int, int]] = []
    real = enc.session

    class Recording:
        def run(self, outputs, feed):
            assert feed["attention_mask"].all()  # no padding anywhere in the run
            seen.append(feed["input_ids"].shape)
            return real.run(outputs, feed)

    enc.session = Recording()
    vecs = enc.encode(texts)
    assert len(vecs) == len(texts) and sum(b for b, _ in seen) == len(texts)
    assert all(b == 1 or b * width <= encoder_mod.RUN_TOKENS for b, width in seen)


def test_smoothing_moves_activation_ranges_into_the_weights_without_changing_the_function(texts, tmp_path) -> None:
    """In fp32 the smoothed graph computes what the original does: each smoothed input is divided channel by
    channel and the weights it meets multiplied back (a Mul before the Q/K/V and first FFN projections, nothing
    before the second FFN projection, the attention context's scale folded into V)."""
    import onnx
    import onnxruntime as ort

    model_dir = Path(resolve_model(None)[1])
    src = encoder_mod.export(model_dir, int8=False, graph="mha")
    dst = tmp_path / "smoothed.onnx"
    tokenizer = encoder_mod.load_tokenizer(model_dir)
    feeds = encoder_mod.calibration_feeds(tokenizer, texts, batch=4)
    smoothing.smooth_model(src, dst, lambda _calibration: feeds[:2])
    layers = 6
    nodes = onnx.load(str(dst)).graph.node
    muls = [n for n in nodes if n.op_type == "Mul" and n.name.endswith("/smooth")]
    assert len(muls) == 2 * layers
    consumers = {n.input[0]: n for n in nodes if n.op_type == "MatMul"}
    assert not any("intermediate_act_fn" in m.input[0] for m in muls)  # the GELU output is left alone
    assert all(consumers[m.output[0]].op_type == "MatMul" for m in muls)

    def run(path: Path) -> list[np.ndarray]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return [session.run(None, {k: f[k] for k in names})[0] for f in feeds]

    for before, after in zip(run(src), run(dst), strict=True):
        assert np.abs(before - after).max() < 1e-3 * np.abs(before).max()


def test_smoothed_int8_keeps_what_plain_int8_loses(texts, torch_vecs) -> None:
    """Smoothing is why int8 Q/K/V projections pass the cosine gate: the smoothed mha int8 encoder is closer to torch
    than the plain int8 graph (the query encoder before) on real abstracts, on average and at its worst."""
    model_dir = resolve_model(None)[1]
    n = len(texts) - len(SHORT)
    if n == 0:
        pytest.skip("needs real abstracts: ../shared/data/arxiv is absent")
    smoothed = encoder_mod.OnnxEncoder(model_dir, int8=True, threads=1, graph="mha")
    plain = encoder_mod.OnnxEncoder(model_dir, int8=True, threads=1, graph="plain")
    assert smoothed.path.name == int8_name("mha")
    cos_s = cosines(smoothed.encode(texts[:n]), torch_vecs[:n])
    cos_p = cosines(plain.encode(texts[:n]), torch_vecs[:n])
    assert cos_s.mean() > cos_p.mean() and cos_s.min() > cos_p.min(), (cos_s, cos_p)


def test_query_encoder_agrees_with_torch(texts, torch_vecs) -> None:
    emb = Embedder(device="cpu")
    q = emb.query_encoder
    assert q is not None and q.graph == encoder_mod.QUERY_GRAPH and q.int8 == encoder_mod.INT8_FOR_QUERIES
    assert float(emb.encode_query(texts[0]) @ torch_vecs[0]) >= 0.99
    assert float(emb.encode_query(SHORT[2]) @ torch_vecs[-2]) >= 0.98


def test_gpu_device_keeps_torch() -> None:
    emb = Embedder(device="cuda")  # never loaded here: only the choice of encoder is checked
    assert emb.bulk_encoder is None and emb.query_encoder is None


def test_unfusable_model_falls_back_to_the_plain_export(monkeypatch, tmp_path: Path, texts, torch_vecs) -> None:
    """When the optimiser does not fuse one Attention per layer, the plain export is used (and the attempt is
    remembered, not repeated)."""
    import onnxruntime.transformers.optimizer as opt

    monkeypatch.setenv("REPLICATE_ONNX_CACHE", str(tmp_path))
    calls = []

    class NoFusion:
        def get_fused_operator_statistics(self) -> dict:
            return {"Attention": 0, "MultiHeadAttention": 0}

    def fake(*args, **kwargs):
        calls.append(args)
        return NoFusion()

    monkeypatch.setattr(opt, "optimize_model", fake)
    model_dir = Path(resolve_model(None)[1])
    path = encoder_mod.export(model_dir, int8=True, graph="mha")
    assert path.name == "model-int8.onnx" and (path.parent / "model-mha.unavailable").exists()
    assert not (path.parent / "model-eager.onnx").exists()
    assert encoder_mod.export(model_dir, int8=True, graph="mha") == path and len(calls) == 1
    enc = encoder_mod.OnnxEncoder(model_dir, int8=False, threads=1, graph="mha")
    assert enc.graph == "plain" and cosines(enc.encode(texts[:4]), torch_vecs[:4]).min() > 0.9999


@pytest.mark.skipif(not no_accelerator_present(), reason="this machine has a GPU device node")
def test_a_search_on_a_cpu_machine_never_imports_torch() -> None:
    # torch costs a searching process ~0.4 GB and ~1.5 s; on a machine without a GPU nothing in the query path needs
    # it (device choice, the ONNX cache key, the query encoder) once the ONNX export exists: make it here first
    Embedder().encode_query("warm the export cache")
    code = (
        "import sys; from retrieval.dense import Embedder; e = Embedder(); e.encode_query('graph neural networks'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False"
