"""What `replicate tune` may change in an experiment, and how the experiment is scored.

A tunable target is a folder with an experiment script that follows the mlexp run contract and a `tune.yaml` beside
it that declares the metric (name + direction), the knobs (name, type, range), the baseline config and the protected
files (the fixed evaluation). This module loads and checks that declaration, validates proposed configs against it,
and hashes the protected files so a trial that touches them can be rejected.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from agent.errors import AgentError
from mlexp.guard import hash_file

TUNE_FILE = "tune.yaml"


class TuneError(AgentError):
    """`replicate tune` could not start or continue (bad target, bad options, broken workspace)."""


class TuneTargetError(TuneError):
    """The target does not declare what tune needs (metric, knobs, baseline), or declares it inconsistently."""


class Knob(BaseModel):
    """One tunable setting. Ranges are inclusive; `step` and `log` mean what they mean in Optuna."""

    type: Literal["float", "int", "categorical", "bool"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> Knob:
        if self.type in ("float", "int"):
            if self.low is None or self.high is None or not self.low <= self.high:
                raise ValueError(f"a {self.type} knob needs low <= high, got low={self.low} high={self.high}")
            if self.log and self.low <= 0:
                raise ValueError("a log-scale knob needs low > 0")
        if self.type == "categorical" and not self.choices:
            raise ValueError("a categorical knob needs a non-empty list of choices")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of a float or int knob; the validator has checked that both are set."""
        if self.low is None or self.high is None:
            raise TuneTargetError(f"a {self.type} knob needs low and high")
        return self.low, self.high

    @property
    def options(self) -> list[Any]:
        """The values of a categorical or bool knob."""
        return [False, True] if self.type == "bool" else list(self.choices or [])

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed for this knob, or None when it is."""
        if self.type == "bool":
            return None if isinstance(value, bool) else f"{value!r} is not a boolean"
        if self.type == "categorical":
            return None if value in (self.choices or []) else f"{value!r} is not one of {self.choices}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{value!r} is not a finite number"
        if self.type == "int" and float(value) != int(value):
            return f"{value!r} is not an integer"
        low, high = self.bounds
        if not low <= value <= high:
            return f"{value!r} is outside [{_fmt(self.low)}, {_fmt(self.high)}]"
        return None

    def describe(self) -> str:
        if self.type == "categorical":
            return f"one of {self.choices}"
        if self.type == "bool":
            return "true/false"
        scale = ", log scale" if self.log else ""
        step = f", step {_fmt(self.step)}" if self.step else ""
        return f"{self.type} in [{_fmt(self.low)}, {_fmt(self.high)}]{step}{scale}"


def _fmt(x: float | None) -> str:
    return "None" if x is None else f"{x:g}"


class MetricSpec(BaseModel):
    name: str
    direction: Literal["min", "max"]
    definition: str = ""


class TuneTarget(BaseModel):
    """A loaded tune.yaml plus the folder it describes."""

    name: str
    root: Path  # the experiment's folder (copied into the tune workspace)
    script: str  # relative to root
    metric: MetricSpec
    protected: list[str] = Field(default_factory=list)
    budget_key: str | None = None
    grace_s: float = 120.0
    paths: list[str] = Field(default_factory=list)
    baseline: dict[str, Any] = Field(default_factory=dict)
    knobs: dict[str, Knob]

    def config_problems(self, config: dict[str, Any], knobs: dict[str, Knob] | None = None) -> list[str]:
        """Problems with a proposed config: values out of their knob's range, or non-knob settings changed."""
        knobs = knobs if knobs is not None else self.knobs
        problems = []
        for key, value in config.items():
            if key in knobs:
                why = knobs[key].problem(value)
                if why:
                    problems.append(f"{key}: {why}")
            elif key != self.budget_key and self.baseline.get(key, _MISSING) != value:
                problems.append(f"{key}: not a declared knob (declared: {', '.join(sorted(knobs))})")
        return problems

    def protected_hashes(self, root: Path | None = None) -> dict[str, str]:
        return hash_files(root or self.root, self.protected)


_MISSING = object()


def hash_files(root: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each named file under root ("missing" when it does not exist), keyed by the name relative to root
    so one trial's worktree compares with another's; the hashing itself is the harness guard's (one home)."""
    return {name: hash_file(root / name) if (root / name).is_file() else "missing" for name in names}


def find_tune_file(target: Path) -> Path:
    """The tune.yaml for TARGET: the file itself, the one in a folder, or the one beside a script."""
    target = Path(target).expanduser()
    if not target.exists():
        raise TuneTargetError(f"tune target not found: {target}")
    if target.is_file() and target.suffix in (".yaml", ".yml"):
        return target
    folder = target if target.is_dir() else target.parent
    candidate = folder / TUNE_FILE
    if candidate.is_file():
        return candidate
    # A replication's run dir: its config.json names the code dir it ran (mlexp README/record), tune.yaml lives there.
    code_dir = _code_dir_of_run(folder)
    if code_dir is not None and (code_dir / TUNE_FILE).is_file():
        return code_dir / TUNE_FILE
    raise TuneTargetError(
        f"{target} declares no tunable knobs or metric: add a {TUNE_FILE} beside the script "
        "(see examples/tinyshakespeare_gpt/tune.yaml)"
    )


def _run_record(folder: Path) -> dict | None:
    """A replication's mlexp run dir: its record.json names the script it ran and the config it ran with."""
    path = folder / "record.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _code_dir_of_run(folder: Path) -> Path | None:
    record = _run_record(folder)
    script = (record or {}).get("script")
    return Path(script).parent if script else None


def load_target(target: str | Path, *, overrides: dict[str, Any] | None = None) -> TuneTarget:
    """Load and check a target's tune.yaml. Raises TuneTargetError with one line saying what is wrong."""
    tune_file = find_tune_file(Path(target))
    asked = set(overrides or {})  # the researcher's --set keys, checked against the target below
    record = _run_record(Path(target)) if Path(target).is_dir() else None
    if record and isinstance(record.get("config"), dict):  # tuning a replication's run: start from its config
        run_config = {k: v for k, v in record["config"].items() if k not in ("seed", "smoke")}
        overrides = {**run_config, **(overrides or {})}
    try:
        raw = yaml.safe_load(tune_file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:  # a binary file is not YAML either
        raise TuneTargetError(f"{tune_file} is not readable YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TuneTargetError(f"{tune_file} must be a mapping")
    root = tune_file.parent.resolve()
    if not raw.get("metric"):
        raise TuneTargetError(f"{tune_file} declares no metric: add `metric: {{name: ..., direction: min|max}}`")
    if isinstance(raw["metric"], str):
        raise TuneTargetError(
            f"{tune_file}: metric needs a direction: `metric: {{name: {raw['metric']}, direction: min|max}}`"
        )
    if not raw.get("knobs"):
        raise TuneTargetError(
            f"{tune_file} declares no knobs: add `knobs: {{name: {{type: float, low: .., high: ..}}}}`"
        )
    raw.setdefault("name", root.name)
    raw.setdefault("script", "train.py")
    try:
        spec = TuneTarget(root=root, **raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TuneTargetError(f"{tune_file}: {where}: {first['msg']}") from exc
    if not (root / spec.script).is_file():
        raise TuneTargetError(f"{tune_file}: script {spec.script} not found in {root}")
    for name in spec.protected:
        if not (root / name).is_file():
            raise TuneTargetError(f"{tune_file}: protected file {name} not found in {root}")
    if spec.script in spec.protected:
        raise TuneTargetError(f"{tune_file}: the script {spec.script} cannot be protected (proposals edit it)")
    known = set(spec.baseline) | set(spec.knobs) | set(spec.paths) | set((record or {}).get("config") or {})
    if spec.budget_key:
        known.add(spec.budget_key)
    unknown = sorted(asked - known)
    if unknown:  # a typo would otherwise reach the script, which ignores it: a silent no-op
        raise TuneTargetError(
            f"--set {', '.join(unknown)}: not a baseline key or knob of {tune_file} (known: {', '.join(sorted(known))})"
        )
    baseline = dict(spec.baseline)
    baseline.update(overrides or {})
    for key in spec.paths:  # relative paths are relative to the target folder, which the workspace copy leaves
        if isinstance(baseline.get(key), str) and not Path(baseline[key]).is_absolute():
            baseline[key] = str((root / baseline[key]).resolve())
    spec.baseline = baseline
    bad = [f"{k}: {w}" for k, knob in spec.knobs.items() if k in baseline and (w := knob.problem(baseline[k]))]
    if bad:
        raise TuneTargetError(f"{tune_file}: baseline outside the declared knob ranges: {'; '.join(bad)}")
    return spec


def parse_duration(text: str | float | int) -> float:
    """'90', '90s', '5m', '1.5h' -> seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        units = {"s": 1, "m": 60, "h": 3600}
        try:
            seconds = float(s[:-1]) * units[s[-1]] if s and s[-1] in units else float(s)
        except ValueError as exc:
            raise TuneError(f"not a duration: {text!r} (use e.g. 90s, 5m, 1h)") from exc
    if not math.isfinite(seconds) or seconds <= 0:
        raise TuneError(f"duration must be positive, got {text!r}")
    return seconds


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs from the command line; values parsed as YAML scalars (numbers, true/false, strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TuneError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out
