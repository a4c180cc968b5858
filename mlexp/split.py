"""Train/test split hygiene (§7): split at the unit of independence, save the split once, load it everywhere.

    split = make_split(ids, units=patient_ids, test_fraction=0.2, seed=0)
    save_split(split, run_dir / "split.json")           # explicit train/test id lists
    split = load_split(path)                            # every stage loads the same file

Ids of one unit (patient, document, user) always land in the same side; `check_split` verifies that and that no
id is on both sides.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlexp import atomic


def make_split(
    ids: Sequence[Any],
    *,
    units: Sequence[Any] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """A reproducible split of `ids`. With `units`, whole units go to one side; with `stratify`, units are
    split within each stratum (the stratum of a unit is that of its first id)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be between 0 and 1")
    ids = list(ids)
    units = list(units) if units is not None else ids
    if len(units) != len(ids):
        raise ValueError("units must have one entry per id")
    strata_of_unit: dict[Any, Any] = {}
    for i, unit in enumerate(units):
        strata_of_unit.setdefault(unit, stratify[i] if stratify is not None else None)
    rng = random.Random(seed)
    test_units: set[Any] = set()
    by_stratum: dict[Any, list[Any]] = {}
    for unit, stratum in strata_of_unit.items():
        by_stratum.setdefault(stratum, []).append(unit)
    for stratum in sorted(by_stratum, key=str):
        members = sorted(by_stratum[stratum], key=str)
        rng.shuffle(members)
        test_units.update(members[: max(1, round(len(members) * test_fraction))] if len(members) > 1 else [])
    train = [i for i, u in zip(ids, units, strict=True) if u not in test_units]
    test = [i for i, u in zip(ids, units, strict=True) if u in test_units]
    unit_name = "id" if units is ids else "unit"
    return {"unit": unit_name, "seed": seed, "test_fraction": test_fraction, "train": train, "test": test}


def save_split(split: dict[str, Any], path: Path) -> Path:
    return atomic.write_json(Path(path), split, indent=None)


def load_split(path: Path) -> dict[str, Any]:
    split = json.loads(Path(path).read_text(encoding="utf-8"))
    if not {"train", "test"} <= set(split):
        raise ValueError(f"{path} is not a split file: it needs 'train' and 'test' id lists")
    return split


def check_split(split: dict[str, Any], units: dict[Any, Any] | None = None) -> list[str]:
    """Problems with a split: ids on both sides, units straddling both sides."""
    problems = []
    both = set(split["train"]) & set(split["test"])
    if both:
        problems.append(f"{len(both)} ids are in both train and test")
    if units:
        train_units = {units[i] for i in split["train"] if i in units}
        test_units = {units[i] for i in split["test"] if i in units}
        leaked = train_units & test_units
        if leaked:
            problems.append(f"{len(leaked)} units have samples in both train and test (split is not by unit)")
    return problems
