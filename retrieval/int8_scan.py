"""Exact dense search over a filter's units: int8 vectors scanned by one ONNX Runtime graph, the best re-scored.

A filter that keeps a mid-sized part of the index (say 10-20% of 1M units) is the expensive case for HNSW: chromadb
cannot filter inside the graph, so the dense side over-fetches `n / kept-fraction` candidates and keeps those that
pass, and the cost of a chromadb query grows with the number fetched (~12 ms for 1,500 at 1M units). Scoring every
kept unit instead is exact, but a float32 matrix-vector product over 150k x 384 takes ~17 ms (memory-bound) and
holds 230 MB per filter.

So a filter's vectors are kept as int8 rows with one scale per row (symmetric, 7 bits: see `LEVELS`), stored
transposed (dimension-major: 58 MB for 150k units), and scored by onnxruntime's `MatMulInteger` on a uint8 query
(the query's int8 values + 128; the 128 x column sums are subtracted after, which is exact in int32: with a
zero-point input instead, onnxruntime leaves its fast kernel and takes 4-5x longer), scaled per row, and `TopK`
picks the best `depth` in the same run: ~3 ms for 150k units on one core, against ~17 ms for float32 in numpy.
The best `n + 50` are re-scored exactly from the float16 vector file (read with pread: retrieval/dense.py
`VectorFile.gather`), more while an int8 score left is within 5 standard deviations of the int8 rounding error
(~0.002) of the n-th exact score, and the best `n` are returned in exact order; the tests check the ranking
against brute force in float32, near-duplicate groups included.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LEVELS = 63  # int8 range used by the rows: 7 bits, so u8 x s8 pairs never saturate int16 in the kernels of CPUs
# without VNNI (onnxruntime's "reduce range" case); the query uses the full 8 bits
SHORTLIST, SHORTLIST_MIN = 4, 200  # int8 candidates per search: 4n + 200 (TopK over 150k costs ~0.1 ms)
RESCORE_MIN = 50  # candidates re-scored exactly at first: n + 50, doubled while one left could still be in the top n
ERR_SIGMAS = 5.0  # how far (in standard deviations of the int8 rounding error) a candidate left must lie below
CHUNK = 16_384  # rows quantised at a time (bounds the float32 temporaries)
_SESSION = None


class Int8Rows:
    """A set of unit vectors (`uids` ascending) as per-row-scaled int8, dimension-major, for exact top-n search."""

    def __init__(self, uids: np.ndarray, dim: int, gather: Callable[[np.ndarray], np.ndarray]):
        """`gather`: ascending uids -> their float32 vectors (the float16 vector file): read once for the whole set,
        then for each search's candidates."""
        self.uids = uids
        self.gather = gather
        self.mat = np.empty((dim, len(uids)), dtype=np.int8)
        self.scale = np.empty((1, len(uids)), dtype=np.float32)
        self.shift = np.empty((1, len(uids)), dtype=np.int32)  # 128 x each row's sum: the uint8 query's offset
        for s in range(0, len(uids), CHUNK):
            vecs = gather(uids[s : s + CHUNK])
            top = np.maximum(np.abs(vecs).max(axis=1), 1e-12)
            part = np.rint(vecs * (LEVELS / top)[:, None]).astype(np.int8)
            self.scale[0, s : s + len(vecs)] = top / LEVELS
            self.shift[0, s : s + len(vecs)] = 128 * part.sum(axis=1, dtype=np.int32)
            self.mat[:, s : s + len(vecs)] = part.T

    def top(self, qvec: np.ndarray, n: int) -> np.ndarray:
        """uids of the `n` rows with the highest cosine to the unit vector `qvec`, best first (ties: lower uid).

        The scan shortlists `SHORTLIST` candidates by int8 score; they are re-scored exactly, best first, until
        every candidate left has an int8 score more than `ERR_SIGMAS` standard deviations of the int8 error below
        the n-th exact score found (so it cannot belong to the top n); near-ties beyond the shortlist (more than
        4n + 200 units within ~0.01 of the n-th score) are the one case left to the int8 order."""
        if not len(self.uids):
            return self.uids
        depth = min(len(self.uids), SHORTLIST * n + SHORTLIST_MIN)
        q_top = max(float(np.abs(qvec).max()), 1e-12)
        q8 = (np.rint(qvec * (127.0 / q_top)) + 128).astype(np.uint8)[None, :]  # int8 values + 128
        feeds = {"q": q8, "m": self.mat, "shift": self.shift, "scale": self.scale, "k": np.array([depth])}
        vals, idx = _session().run(["vals", "idx"], feeds)
        approx = vals[0] * (q_top / 127.0)  # int8 cosines, best first
        idx = idx[0]
        # rounding errors of the row (step: scale) and the query (step: q_top / 127), uniform: sigma = step / sqrt(12)
        err = ERR_SIGMAS * (float(self.scale.max()) + q_top / 127.0) / np.sqrt(12.0)
        exact = np.empty(0, dtype=np.float32)
        done = 0
        while True:
            m = min(depth, max(2 * done, n + RESCORE_MIN))
            part = idx[done:m]
            order = np.argsort(part)  # the reader wants ascending uids
            scores = np.empty(len(part), dtype=np.float32)
            scores[order] = self.gather(self.uids[part[order]]) @ qvec
            exact = np.concatenate([exact, scores])
            done = m
            nth = np.partition(-exact, n - 1)[n - 1] * -1 if len(exact) >= n else -np.inf
            if done == depth or approx[done] + err < nth:
                break
        cand = idx[:done]
        best = np.lexsort((self.uids[cand], -exact))[:n]
        return self.uids[cand[best]]


def _session():
    """One onnxruntime session (one thread; the other core runs the keyword side) for every filter's scan:
    MatMulInteger(u8 query, s8 rows) - shift -> float x row scales -> TopK indices."""
    global _SESSION
    if _SESSION is None:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        nodes = [
            helper.make_node("MatMulInteger", ["q", "m"], ["raw"]),
            helper.make_node("Sub", ["raw", "shift"], ["dots"]),
            helper.make_node("Cast", ["dots"], ["dotsf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["dotsf", "scale"], ["scores"]),
            helper.make_node("TopK", ["scores", "k"], ["vals", "idx"], axis=1, largest=1, sorted=1),
        ]
        graph = helper.make_graph(
            nodes,
            "int8_scan",
            [
                helper.make_tensor_value_info("q", TensorProto.UINT8, [1, None]),
                helper.make_tensor_value_info("m", TensorProto.INT8, [None, None]),
                helper.make_tensor_value_info("shift", TensorProto.INT32, [1, None]),
                helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1, None]),
                helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
            ],
            [
                helper.make_tensor_value_info("vals", TensorProto.FLOAT, [1, None]),
                helper.make_tensor_value_info("idx", TensorProto.INT64, [1, None]),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        _SESSION = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return _SESSION
