"""Logistic regression on a subset of Fashion-MNIST, written to the mlexp run contract.

Config keys (RUN_CONFIG, see config.yaml beside this file): data_dir (the IDX .gz files), n_train, n_test, steps,
iters_per_step, C, shuffle_train (the seed draws the training subset); with SMOKE=1 the smoke_* sizes are used.
Each "step" continues the L-BFGS optimisation from the previous one (warm start) so progress, ETA and per-step
metrics are real. The smoke run exercises the whole lifecycle: training, evaluation, checkpoint save +
reload (predictions must match), predictions and metrics.
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

import mlexp.log
from mlexp.split import save_split

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path, count: int) -> np.ndarray:
    """The first `count` records of an IDX file (images or labels), reading only what is needed."""
    with gzip.open(path, "rb") as handle:
        magic = struct.unpack(">I", handle.read(4))[0]
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "I" * ndim, handle.read(4 * ndim))
        count = min(count, dims[0])
        per_item = int(np.prod(dims[1:])) if ndim > 1 else 1
        data = np.frombuffer(handle.read(count * per_item), dtype=np.uint8)
    return data.reshape(count, per_item) if ndim > 1 else data


def main() -> None:
    log = mlexp.log.RunLogger()
    cfg = log.config
    data_dir = Path(cfg.get("data_dir") or os.environ.get("FASHION_MNIST_DIR", "../shared/data/fashion-mnist"))
    n_train = int(cfg["smoke_n_train"] if log.smoke else cfg["n_train"])
    n_test = int(cfg["smoke_n_test"] if log.smoke else cfg["n_test"])
    steps = int(cfg["smoke_steps"] if log.smoke else cfg["steps"])
    log.info(f"config: n_train={n_train} n_test={n_test} steps={steps} C={cfg['C']} smoke={log.smoke} seed={log.seed}")

    # shuffle_train: the seed draws which n_train of the 60,000 training images are used, so seeds differ the way
    # the paper's repeats do ("repeated 5 times by shuffling the training data"); otherwise the first n_train.
    pool = 60_000 if cfg.get("shuffle_train") else n_train
    x_train = read_idx(data_dir / "train-images-idx3-ubyte.gz", pool).astype(np.float32) / 255.0
    y_train = read_idx(data_dir / "train-labels-idx1-ubyte.gz", pool)
    chosen = np.arange(n_train)
    if pool > n_train:
        chosen = np.random.default_rng(log.seed).permutation(len(y_train))[:n_train]
    x_train, y_train = x_train[chosen], y_train[chosen]
    x_test = read_idx(data_dir / "t10k-images-idx3-ubyte.gz", n_test).astype(np.float32) / 255.0
    y_test = read_idx(data_dir / "t10k-labels-idx1-ubyte.gz", n_test)
    # Split unit = one image (i.i.d.); the official train/test files are the split, saved explicitly (§7).
    save_split({"unit": "image", "train": [f"train-{i}" for i in chosen],
                "test": [f"test-{i}" for i in range(n_test)]}, log.run_dir / "split.json")  # fmt: skip
    log.info(f"data: train {x_train.shape}, test {x_test.shape}, classes in test {len(np.unique(y_test))}")

    model = LogisticRegression(C=float(cfg["C"]), max_iter=int(cfg["iters_per_step"]), warm_start=True,
                               random_state=log.seed)  # fmt: skip
    with warnings.catch_warnings():
        # Each step deliberately stops L-BFGS early and warm-starts the next: not a convergence problem.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for step in range(1, steps + 1):
            model.fit(x_train, y_train)
            proba = model.predict_proba(x_test)
            log.step(step, steps, train_loss=log_loss(y_train, model.predict_proba(x_train), labels=range(10)),
                     test_loss=log_loss(y_test, proba, labels=range(10)),
                     test_accuracy=accuracy_score(y_test, proba.argmax(1)))  # fmt: skip

    log.save_checkpoint(model, "model")
    reloaded = log.load_checkpoint("model")
    proba = reloaded.predict_proba(x_test)
    if not np.array_equal(proba.argmax(1), model.predict_proba(x_test).argmax(1)):
        raise RuntimeError("checkpoint reload changed the predictions")
    log.info("checkpoint reloaded: predictions identical")

    pred = proba.argmax(1)
    frame = pd.DataFrame({
        "id": [f"test-{i}" for i in range(n_test)],
        "y_true": [CLASSES[c] for c in y_test],
        "y_pred": [CLASSES[c] for c in pred],
        "confidence": proba.max(1),
        "p_true": proba[np.arange(n_test), y_test],
    })  # fmt: skip
    log.save_predictions(frame, "id", "y_true", "y_pred", group_col="y_true", score_col="confidence",
                         expected_count=n_test)  # fmt: skip
    log.final(accuracy=accuracy_score(y_test, pred), test_loss=log_loss(y_test, proba, labels=range(10)),
              n_test=n_test, n_train=n_train)  # fmt: skip


if __name__ == "__main__":
    main()
