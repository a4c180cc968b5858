"""The deterministic hypothesis checklist: runs after every comparison, with or without an LLM.

It looks for the reasons a replication most often misses a number without any error being raised:
- setup mismatches: what the paper states (setup items, the `key=value` parameters printed in a claim's table row),
  what the approved spec says, and what the run's resolved config actually used (epochs, iterations, batch size,
  learning rate, optimiser, preprocessing, split, ...);
- silent failures (practices §13): device_map="auto", padding to a huge max_length, pad_token = eos_token, gradient
  accumulation changing the effective batch size, silent truncation, and optimisers stopping before convergence;
- run diagnostics: failed runs, post-run check problems, training curves still improving at the end, NaN losses,
  and results significantly better than the paper (§10: look for a leak before trusting them);
- too few seeds for the gap; metric-definition mismatches (percent vs fraction, error vs accuracy, direction, split).
Each finding is a `Hypothesis` with evidence from this run and, where one exists, a concrete config change.
This module holds the shared helpers, the setup, seed and metric checks and `run_checklist`; the checks that read
the runs' code, logs and curves are in agent.checklist_runs.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent.hypotheses import Ablation, Hypothesis, _flat, sort_hypotheses

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
_CANON = {alias: canon for canon, aliases in ALIASES.items() for alias in aliases}
TRAINING_LENGTH = {"epochs", "iterations"}
_SPLIT_ROLES = {"train": "split:train", "test": "split:test", "val": "split:val", "eval": "split:val"}
_IMPORTANT = TRAINING_LENGTH | {"batch_size", "learning_rate", "optimizer", "preprocessing", "split"}
_IMPORTANT |= set(_SPLIT_ROLES.values())
# "train=60,000; test=10,000" in a paper's split item, not "6,000 per class" (a different quantity).
_SPLIT_COUNT_RE = re.compile(
    r"\b(train|test|val|validation|dev)\w*\s*[=:]\s*([\d,]+)(?![\d,])(?!\s*(?:per|each|/))", re.I
)
_IGNORED_RUN_KEYS = {"seed", "smoke", "data_dir", "data_path", "out_dir", "output_dir", "device", "threads"}

_PARAM_RE = re.compile(r"(?<![\w.])([A-Za-z_][\w]*)\s*=\s*(\[[^\]]*\]|\([^)]*\)|[^\s,;]+)")
_REPEATS_RE = re.compile(
    r"(?:repeated|run|trained|averaged over)\s+(\d+|two|three|four|five|ten)\s+times|"
    r"(?:mean|average|averaged)\s+(?:of|over|across)\s+(\d+|two|three|four|five|ten)\s+"
    r"(?:independent\s+)?(?:runs|seeds|trials|repetitions|random seeds)",
    re.IGNORECASE,
)
_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "ten": 10}

# --------------------------------------------------------------------------- small helpers


def canonical(key: str) -> str:
    """The setting a config key names: aliases collapse ("lr" -> learning_rate), split sizes keep their role
    ("n_train" -> split:train, "n_test" -> split:test)."""
    name = re.sub(r"[^a-z0-9]+", "_", key.rsplit(".", 1)[-1].lower()).strip("_")
    canon = _CANON.get(name, name)
    if canon == "split" and name != "split":
        for word, role in _SPLIT_ROLES.items():
            if word in name:
                return role
    return canon


def _num(value: Any) -> float | None:
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


def _parse_value(value: Any) -> Any:
    """Values printed in a paper come as text: "1e-3", "[100, 10]", "None", "'ovr'"."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.strip("'\"")


def same_value(a: Any, b: Any) -> bool:
    a, b = _parse_value(a), _parse_value(b)
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None:
        return math.isclose(na, nb, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    norm = lambda v: re.sub(r"\s+", "", str(v).lower())  # noqa: E731
    return norm(a) == norm(b)


def _comparable(value: Any) -> bool:
    """A paper's free-text setup value ("the official 60k/10k split") cannot be compared with a config value."""
    parsed = _parse_value(value)
    if _num(parsed) is not None or isinstance(parsed, list | tuple | bool) or parsed is None:
        return True
    return isinstance(parsed, str) and len(parsed.split()) == 1 and len(parsed) <= 30


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _claim(paper: Any, claim_id: str) -> Any:
    for claim in _get(paper, "claims", None) or []:
        if claim.id == claim_id:
            return claim
    return None


def _completed(runs: Iterable[Any]) -> list[Any]:
    return [r for r in runs if _get(r, "status") == "completed" and not _get(r, "smoke", False)]


def _runs_for(runs: Any, claim_id: str, spec: Any = None) -> list[Any]:
    """The runs that measured a claim: from a claim_id -> runs mapping, or picked out of a flat list by the
    target's own config overrides when the spec has several target groups (one Table 3 row = one config)."""
    if isinstance(runs, Mapping):
        return list(runs.get(claim_id, []))
    runs = list(runs or [])
    targets = _get(spec, "targets", None) or []
    own = next((t for t in targets if t.claim_id == claim_id), None)
    overrides = dict(_get(own, "config", None) or {}) if own is not None else {}
    if overrides and len({json.dumps(dict(_get(t, "config", None) or {}), sort_keys=True) for t in targets}) > 1:
        mine = [
            r for r in runs if all(same_value((_get(r, "config", {}) or {}).get(k), v) for k, v in overrides.items())
        ]
        return mine or runs
    return runs


def _run_config(run: Any) -> dict[str, Any]:
    return {k: v for k, v in _flat(dict(_get(run, "config", {}) or {})).items() if k not in _IGNORED_RUN_KEYS}


def _toward(verdict: Any) -> str:
    """The direction a fix that closes the gap should move the metric's value."""
    if verdict is None or verdict.gap is None or verdict.verdict not in ("diverged", "better"):
        return "unknown"
    return "increase" if verdict.gap < 0 else "decrease"


def _priority(verdicts: Sequence[Any], important: bool) -> str:
    if any(v.verdict in ("diverged", "better") for v in verdicts):
        return "high" if important else "medium"
    return "medium" if important else "low"


def paper_repeats(paper: Any) -> int | None:
    """How many runs the paper averages, from a setup item or a sentence like "repeated 5 times"."""
    setup = _get(paper, "setup", None)
    for item in getattr(setup, "items", []) or []:
        if canonical(item.key) == "seeds":
            match = re.search(r"\d+", item.value)
            if match:
                return int(match.group())
    text = " ".join(p.text for p in (_get(paper, "pages", None) or []))
    match = _REPEATS_RE.search(re.sub(r"\s+", " ", text))
    if match:
        word = (match.group(1) or match.group(2)).lower()
        return int(_WORDS.get(word, word))
    return None


# --------------------------------------------------------------------------- setup mismatches


def _expected_settings(paper: Any, spec: Any, target: Any, claim: Any) -> list[tuple[str, Any, str, bool]]:
    """(key, value, where it is stated, from the paper?) in precedence order: paper first, then the spec."""
    out: list[tuple[str, Any, str, bool]] = []
    if claim is not None:
        row_text = " ".join(str(x) for x in (claim.row, claim.method, claim.column) if x)
        label = f"{claim.table or 'p.' + str(claim.page)} row {claim.row!r}" if claim.row else f"claim {claim.id}"
        for key, value in _PARAM_RE.findall(row_text):
            out.append((key, value, f"the paper ({label})", True))
    setup = _get(paper, "setup", None)
    for item in getattr(setup, "items", []) or []:
        where = f"the paper (p.{item.page}: {item.quote.strip()[:120]!r})"
        if canonical(item.key) == "split":
            for role, count in _SPLIT_COUNT_RE.findall(item.value):
                role = {"validation": "val", "dev": "val"}.get(role.lower(), role.lower())
                out.append((f"n_{role}", int(count.replace(",", "")), where, True))
        elif canonical(item.key) in _IMPORTANT and _comparable(item.value):
            out.append((item.key, item.value, where, True))
    for hp in _get(spec, "hyperparameters", None) or []:
        if hp.source == "paper":
            out.append((hp.name, hp.value, f"the spec, from the paper (p.{hp.page}: {(hp.quote or '')[:120]!r})", True))
        else:
            out.append((hp.name, hp.value, f"the approved spec (assumed: {hp.reason})", False))
    if spec is not None and hasattr(spec, "run_config") and target is not None and not isinstance(target, Mapping):
        try:
            approved = _flat(spec.run_config(smoke=False, target=target))
        except Exception:  # a duck-typed spec without the full Spec API
            approved = {}
        stated = {canonical(key): value for key, value, _, _ in out}
        for key, value in approved.items():
            if key not in _IGNORED_RUN_KEYS and not same_value(stated.get(canonical(key), object()), value):
                out.append((key, value, "the approved spec's run config", False))
    return out


def setup_mismatches(paper: Any, spec: Any, verdicts: Sequence[Any], runs: Any) -> list[Hypothesis]:
    targets = {t.claim_id: t for t in (_get(spec, "targets", None) or [])}
    found: dict[str, dict[str, Any]] = {}
    for verdict in verdicts:
        completed = _completed(_runs_for(runs, verdict.claim_id, spec))
        if not completed:
            continue
        actual = _run_config(completed[0])
        by_canon: dict[str, list[str]] = {}
        for key in actual:
            by_canon.setdefault(canonical(key), []).append(key)
        claim = _claim(paper, verdict.claim_id)
        for key, expected, where, from_paper in _expected_settings(paper, spec, targets.get(verdict.claim_id), claim):
            canon = canonical(key)
            if canon == "seeds":
                continue  # seeds are the number of runs, checked by `seed_checks`
            run_keys = by_canon.get(canon, [])
            if not run_keys:
                if from_paper and (canon in _IMPORTANT or claim is not None and key in str(claim.row or "")):
                    entry = found.setdefault(
                        f"setup-unset-{canon}",
                        dict(key=key, run_key=None, expected=expected, actual=None, verdicts=[], evidence=[]),
                    )
                    entry["verdicts"].append(verdict)
                    entry["evidence"].append(f"{where} states {key}={expected}; the run config has no {key!r} key")
                continue
            for run_key in run_keys:
                if same_value(actual[run_key], expected):
                    continue
                if canon.startswith("split:") and min(_num(actual[run_key]) or 0, _num(expected) or 0) <= 1:
                    continue  # a fraction (train_size=0.8) is not comparable with a count
                entry = found.setdefault(
                    f"setup-{run_key}",
                    dict(
                        key=key,
                        run_key=run_key,
                        expected=expected,
                        actual=actual[run_key],
                        verdicts=[],
                        evidence=[],
                        from_paper=from_paper,
                    ),  # fmt: skip
                )
                if verdict not in entry["verdicts"]:
                    entry["verdicts"].append(verdict)
                line = f"{where} says {key}={expected}; the run used {run_key}={actual[run_key]}"
                if line not in entry["evidence"]:
                    entry["evidence"].append(line)
    out = []
    for hid, entry in found.items():
        canon, vs = canonical(entry["key"]), entry["verdicts"]
        claim_ids = sorted({v.claim_id for v in vs})
        evidence = entry["evidence"] + [f"{v.claim_id}: {v.verdict}, gap {v.gap:+.4g}" for v in vs if v.gap is not None]
        if entry["run_key"] is None:
            statement = (
                f"The paper's {entry['key']}={entry['expected']} is not set by the run config; the code's own "
                f"default may differ from the paper's setting"
            )
            out.append(
                Hypothesis(
                    id=hid,
                    statement=statement,
                    category="setup_mismatch",
                    claim_ids=claim_ids,
                    evidence=evidence,
                    priority=_priority(vs, canon in _IMPORTANT) if canon in _IMPORTANT else _priority(vs, False),
                )
            )
            continue
        shorter = ""
        a, e = _num(entry["actual"]), _num(_parse_value(entry["expected"]))
        if canon in TRAINING_LENGTH and a is not None and e is not None and a < e:
            shorter = f" (trained for {a:g} instead of {e:g} {entry['run_key']}: under-trained)"
        out.append(
            Hypothesis(
                id=hid,
                statement=f"The run's {entry['run_key']}={entry['actual']} differs from {entry['key']}="
                f"{entry['expected']} stated in {'the paper' if entry['from_paper'] else 'the approved spec'}{shorter}",
                category="setup_mismatch",
                claim_ids=claim_ids,
                evidence=evidence,
                ablation=Ablation(
                    change={entry["run_key"]: _parse_value(entry["expected"])},
                    # A different test/validation set changes what is measured, not how well the model learns.
                    expected_direction="unknown" if canon in ("split:test", "split:val") else _toward(vs[0]),
                    metric=vs[0].metric,
                    description=f"rerun with {entry['run_key']}={entry['expected']} as stated",
                ),
                priority=_priority(vs, canon in _IMPORTANT),
            )
        )
    return out


# --------------------------------------------------------------------------- seeds and metric definitions

_Z_975, _Z_80 = 1.959964, 0.841621  # two-sided 5 % test, 80 % power


def seeds_needed(std: float, gap: float) -> int:
    """Seeds for a one-sample test to detect `gap` with 80 % power at 5 %: ((z_.975 + z_.8) * s / gap)^2, +1."""
    if gap == 0 or std <= 0:
        return 2
    return min(100, max(2, math.ceil(((_Z_975 + _Z_80) * std / abs(gap)) ** 2) + 1))


def seed_checks(paper: Any, spec: Any, verdicts: Sequence[Any], runs: Any) -> list[Hypothesis]:
    out = []
    repeats = paper_repeats(paper)
    for v in verdicts:
        if v.verdict == "not run" or v.gap is None or not math.isfinite(v.gap):
            continue
        outside = abs(v.gap) > v.tolerance
        paper_note = f"the paper averages {repeats} runs" if repeats else "the paper does not say how many runs"
        if v.n < 2 and outside:
            want = max(3, repeats or 0)
            out.append(
                Hypothesis(
                    id=f"seeds-single-{v.claim_id}",
                    statement=f"{v.claim_id}: a single run cannot separate a {v.gap:+.3g} gap from seed noise",
                    category="seeds",
                    claim_ids=[v.claim_id],
                    evidence=[f"n=1, gap {v.gap:+.4g} > tolerance {v.tolerance:.3g}; {paper_note}"],
                    ablation=Ablation(
                        seeds=want,
                        expected_direction="no change",
                        metric=v.metric,
                        description=f"rerun with {want} seeds",
                    ),
                    priority="high" if v.verdict != "replicated" else "medium",
                )
            )
        elif outside and v.verdict == "replicated" and v.measured_std is not None:
            need = max(v.n + 1, seeds_needed(v.measured_std or (v.reported_std or 0.0), v.gap))
            out.append(
                Hypothesis(
                    id=f"seeds-inconclusive-{v.claim_id}",
                    statement=f"{v.claim_id}: the {v.gap:+.3g} gap exceeds the tolerance but is within the noise of "
                    f"{v.n} seeds; about {need} seeds are needed to tell",
                    category="seeds",
                    claim_ids=[v.claim_id],
                    evidence=[f"std {v.measured_std:.3g} over n={v.n}, p={v.p_value:.3g}; {paper_note}"],
                    ablation=Ablation(
                        seeds=need,
                        expected_direction="no change",
                        metric=v.metric,
                        description=f"rerun with {need} seeds",
                    ),
                    priority="medium",
                )
            )
        elif v.verdict == "diverged" and repeats and v.n < repeats:
            out.append(
                Hypothesis(
                    id=f"seeds-fewer-{v.claim_id}",
                    statement=f"{v.claim_id}: fewer runs ({v.n}) than the paper averages ({repeats})",
                    category="seeds",
                    claim_ids=[v.claim_id],
                    evidence=[f"n={v.n}; {paper_note}"],
                    ablation=Ablation(seeds=repeats, expected_direction="no change", metric=v.metric),
                    priority="low",
                )
            )
    return out


_FAMILIES = {
    "accuracy": ("accuracy", "acc"),
    "error": ("error", "err"),
    "f1": ("f1",),
    "auc": ("auc", "auroc"),
    "loss": ("loss", "nll"),
    "perplexity": ("perplexity", "ppl"),
    "bleu": ("bleu",),
    "rouge": ("rouge",),
    "mae": ("mae",),
    "mse": ("mse", "rmse"),
}


def _family(text: str) -> str | None:
    tokens = set(re.findall(r"[a-z0-9]+", text.lower()))
    for fam, words in _FAMILIES.items():
        if tokens & set(words) or any(w in text.lower() for w in words if len(w) > 3):
            return fam
    return None


def metric_checks(paper: Any, spec: Any, verdicts: Sequence[Any], runs: Any) -> list[Hypothesis]:
    out = []
    for v in verdicts:
        if v.measured_mean is None or v.reported is None or not math.isfinite(v.measured_mean):
            continue
        m, r, tol = v.measured_mean, v.reported, max(v.tolerance, 1e-9)
        found: list[tuple[str, str, str]] = []  # (id suffix, statement, evidence)
        if abs(m - r) > tol:
            if 0 <= r <= 1 and 1 < m <= 100 and abs(m / 100 - r) <= max(tol, 0.05):
                found.append(
                    (
                        "scale",
                        "the run reports a percentage where the paper reports a fraction",
                        f"measured {m:.4g} vs reported {r:.4g} (x100 = {r * 100:.4g})",
                    )
                )
            elif 0 <= m <= 1 and 1 < r <= 100 and abs(m * 100 - r) <= max(tol, 5):
                found.append(
                    (
                        "scale",
                        "the run reports a fraction where the paper reports a percentage",
                        f"measured {m:.4g} vs reported {r:.4g}",
                    )
                )
            elif 0 <= m <= 1 and 0 <= r <= 1 and abs((1 - m) - r) <= max(tol, 0.01):
                found.append(
                    (
                        "complement",
                        "the run measures the complement of the paper's metric (error rate vs accuracy)",
                        f"1 - measured = {1 - m:.4g} ~ reported {r:.4g}",
                    )
                )
        claim = _claim(paper, v.claim_id)
        if claim is not None:
            described = " ".join(str(x) for x in (claim.metric, claim.column, claim.table) if x)
            if claim.higher_is_better is not None and claim.higher_is_better != (v.direction == "max"):
                found.append(
                    (
                        "direction",
                        f"the target's direction {v.direction!r} contradicts the paper "
                        f"(higher is better: {claim.higher_is_better})",
                        f"claim {claim.id}: {claim.text}",
                    )
                )
            fam_paper, fam_run = _family(described), _family(v.metric)
            if fam_paper and fam_run and fam_paper != fam_run:
                found.append(
                    (
                        "name",
                        f"the paper reports {fam_paper} ({described!r}) but the run measures {fam_run} ({v.metric!r})",
                        f"claim {claim.id}: {claim.quote[:120]!r}",
                    )
                )
            paper_split = "test" if re.search(r"\btest", described, re.I) else None
            run_split = (
                "validation"
                if re.search(r"val|dev", v.metric, re.I)
                else ("train" if re.search(r"train", v.metric, re.I) else None)
            )
            if paper_split and run_split:
                found.append(
                    (
                        "split",
                        f"the paper reports {paper_split}-set numbers but the run's metric "
                        f"{v.metric!r} is measured on the {run_split} set",
                        f"claim {claim.id}: {described!r}",
                    )
                )
        for suffix, statement, evidence in found:
            out.append(
                Hypothesis(
                    id=f"metric-{suffix}-{v.claim_id}",
                    statement=f"{v.claim_id}: metric definition mismatch: {statement}",
                    category="metric_definition",
                    claim_ids=[v.claim_id],
                    evidence=[evidence, f"verdict {v.verdict}: {v.reason}"],
                    priority="high" if v.verdict in ("diverged", "better") else "medium",
                )
            )
    return out


def run_checklist(paper: Any, spec: Any, verdicts: Sequence[Any], runs: Any) -> list[Hypothesis]:
    """Every deterministic check, highest priority first. Never calls an LLM; never raises on odd inputs."""
    from agent.checklist_runs import run_diagnostics, silent_failures

    found: list[Hypothesis] = []
    for check in (setup_mismatches, silent_failures, run_diagnostics, seed_checks, metric_checks):
        try:
            found.extend(check(paper, spec, verdicts, runs))
        except Exception as exc:  # a bug in one check must not hide the others, nor pass unnoticed
            found.append(
                Hypothesis(
                    id=f"checklist-error-{check.__name__}",
                    statement=f"The checklist step {check.__name__} could not run; its findings are missing",
                    category="diagnostics",
                    evidence=[f"{type(exc).__name__}: {exc}"],
                    priority="low",
                )
            )
    return sort_hypotheses(found)
