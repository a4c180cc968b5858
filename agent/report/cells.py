"""How the report shows a number, a verdict's measurement and its interval: one rule for the HTML, the markdown
and EXPERIMENT_LOG.md."""

from __future__ import annotations

import math
import os
from pathlib import Path

from mlexp.compare import Verdict


def number(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a" if x is None else str(x)
    return f"{x:.{digits}g}"


def measured(v: Verdict) -> str:
    if v.measured_mean is None:
        return "—"
    std = f" ± {v.measured_std:.2g}" if v.measured_std is not None else ""
    return f"{v.measured_mean:.4g}{std} (n={v.n})"


def reported(v: Verdict) -> str:
    if v.reported is None:
        return "—"
    return f"{v.reported:.4g}" + (f" ± {v.reported_std:.2g}" if v.reported_std is not None else "")


def ci(v: Verdict) -> str:
    return "—" if v.ci_low is None or v.ci_high is None else f"[{v.ci_low:.4g}, {v.ci_high:.4g}]"


def gap(v: Verdict) -> str:
    return "—" if v.gap is None else f"{v.gap:+.4g}"


def relative_link(path: str, out_dir: Path) -> str:
    """`path` relative to the report's folder, so links still work when the project folder moves."""
    try:
        return os.path.relpath(path, out_dir)
    except ValueError:  # another drive (Windows): keep it absolute
        return path
