"""The vocabulary the checklist compares settings in: config keys that name the same setting, values as printed.

A paper says "learning rate 1e-3", a spec says `lr: 0.001`, a run config says `learning_rate_init=0.001`: `canonical`
maps each key to the setting it names and `same_value` compares values the way they are printed ("1e-3" = 0.001,
"[100, 10]" = [100, 10], "'ovr'" = "OVR").
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from typing import Any

# Config keys that name the same setting. A key not listed is matched by its exact (normalised) name.
ALIASES: dict[str, set[str]] = {
    "epochs": {"epochs", "epoch", "n_epochs", "num_epochs", "max_epochs", "num_train_epochs", "training_epochs"},
    "iterations": {
        "max_iter",
        "max_iters",
        "iterations",
        "n_iter",
        "n_iters",
        "num_iterations",
        "iters",
        "steps",
        "max_steps",
        "train_steps",
        "num_steps",
        "n_steps",
        "num_train_steps",
    },
    "batch_size": {
        "batch_size",
        "batch",
        "bs",
        "train_batch_size",
        "per_device_train_batch_size",
        "minibatch_size",
        "mini_batch_size",
    },
    "learning_rate": {"learning_rate", "lr", "learning_rate_init", "step_size", "eta0"},
    "optimizer": {"optimizer", "optim", "solver", "optimiser"},
    "weight_decay": {"weight_decay", "wd"},
    "preprocessing": {
        "preprocessing",
        "preprocess",
        "normalize",
        "normalise",
        "normalization",
        "normalisation",
        "scaler",
        "scaling",
        "standardize",
        "standardise",
        "augmentation",
        "augment",
        "transform",
        "transforms",
    },
    "split": {
        "split",
        "train_size",
        "test_size",
        "val_size",
        "validation_split",
        "n_train",
        "train_subset",
        "subset",
        "max_train_samples",
        "n_train_samples",
        "train_samples",
        "train_fraction",
        "n_test",
        "n_val",
        "n_valid",
        "test_samples",
        "n_test_samples",
        "max_test_samples",
        "max_eval_samples",
    },
    "seeds": {"seeds", "n_seeds", "num_seeds", "repeats", "n_repeats", "n_runs", "num_runs", "repetitions"},
    "dropout": {"dropout", "dropout_rate", "drop_rate", "dropout_p"},
}
CANON = {alias: canon for canon, aliases in ALIASES.items() for alias in aliases}
TRAINING_LENGTH = {"epochs", "iterations"}
SPLIT_ROLES = {"train": "split:train", "test": "split:test", "val": "split:val", "eval": "split:val"}
IMPORTANT = TRAINING_LENGTH | {"batch_size", "learning_rate", "optimizer", "preprocessing", "split"}
IMPORTANT |= set(SPLIT_ROLES.values())
IGNORED_RUN_KEYS = {"seed", "smoke", "data_dir", "data_path", "out_dir", "output_dir", "device", "threads"}


def canonical(key: str) -> str:
    """The setting a config key names: aliases collapse ("lr" -> learning_rate), split sizes keep their role
    ("n_train" -> split:train, "n_test" -> split:test)."""
    name = re.sub(r"[^a-z0-9]+", "_", key.rsplit(".", 1)[-1].lower()).strip("_")
    canon = CANON.get(name, name)
    if canon == "split" and name != "split":
        for word, role in SPLIT_ROLES.items():
            if word in name:
                return role
    return canon


def num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "")
        try:
            return float(text)
        except ValueError:
            return None
    return None


def parse_value(value: Any) -> Any:
    """Values printed in a paper come as text: "1e-3", "[100, 10]", "None", "'ovr'"."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.strip("'\"")


def same_value(a: Any, b: Any) -> bool:
    a, b = parse_value(a), parse_value(b)
    na, nb = num(a), num(b)
    if na is not None and nb is not None:
        return math.isclose(na, nb, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    norm = lambda v: re.sub(r"\s+", "", str(v).lower())  # noqa: E731
    return norm(a) == norm(b)


def comparable(value: Any) -> bool:
    """A paper's free-text setup value ("the official 60k/10k split") cannot be compared with a config value."""
    parsed = parse_value(value)
    if num(parsed) is not None or isinstance(parsed, list | tuple | bool) or parsed is None:
        return True
    return isinstance(parsed, str) and len(parsed.split()) == 1 and len(parsed) <= 30


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out
