"""Script-side helper: the run contract as seen from inside an experiment script (§12 progress monitoring).

    import mlexp.log
    log = mlexp.log.RunLogger()            # reads RUN_DIR, RUN_CONFIG, SMOKE, SEED, DEVICE from the environment
    cfg = log.config
    for step in range(1, total + 1):
        ...
        log.step(step, total, loss=loss)   # step 1 is logged at once with s/step and ETA
    log.save_predictions(df, "id", "y_true", "y_pred", group_col="label")
    log.final(accuracy=acc)                # prints the `=== FINAL METRICS ===` block the harness parses

Every line goes to stdout (flushed, so the runner's silence watchdog sees it) and to RUN_DIR/training.log with a
timestamp, written and flushed line by line (`tail -f training.log` works). Per-step metrics go to metrics.jsonl.
Works without the harness too: RUN_DIR defaults to the current directory.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from mlexp import atomic

FINAL_MARK = "=== FINAL METRICS ==="


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def load_config() -> dict:
    """The frozen, resolved config of this run (RUN_CONFIG), or {} when run by hand without one."""
    path = os.environ.get("RUN_CONFIG")
    if not path:
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8"))


class RunLogger:
    """Progress, predictions and final metrics of one run, following the harness's run contract."""

    def __init__(self, run_dir: str | Path | None = None, *, min_interval_s: float = 2.0, echo: bool = True):
        self.run_dir = Path(run_dir or os.environ.get("RUN_DIR") or Path.cwd())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config = load_config()
        self.smoke = os.environ.get("SMOKE", "0") == "1" or bool(self.config.get("smoke", False))
        self.seed = int(os.environ.get("SEED") or self.config.get("seed", 0))
        self.device = os.environ.get("DEVICE") or "cpu"
        self.min_interval_s = min_interval_s
        self.echo = echo
        self._t0 = time.perf_counter()
        self._first_step_at: float | None = None
        self._last_printed = -math.inf
        # Line-buffered appends: each line reaches the file as soon as it is written.
        self._log = open(self.run_dir / "training.log", "a", encoding="utf-8", buffering=1)
        self._metrics = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8", buffering=1)

    # -- plain logging ---------------------------------------------------------------------------------------------
    def info(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if self.echo:
            print(line, flush=True)
        self._log.write(line + "\n")

    def warning(self, msg: str) -> None:
        self.info(f"WARNING: {msg}")

    # -- progress --------------------------------------------------------------------------------------------------
    def step(self, step: int, total: int, **metrics: Any) -> None:
        """Record one step. Step 1 and the last step are always logged; others at most every `min_interval_s`."""
        now = time.perf_counter()
        elapsed = now - self._t0
        s_per_step = elapsed / max(step, 1)
        eta = s_per_step * max(total - step, 0)
        row = {"step": step, "total": total, "time": round(time.time(), 3), "elapsed_s": round(elapsed, 4)}
        row.update({k: (float(v) if isinstance(v, int | float) else v) for k, v in metrics.items()})
        self._metrics.write(json.dumps(row, default=str) + "\n")
        if step == 1 or step >= total or now - self._last_printed >= self.min_interval_s:
            self._last_printed = now
            parts = " ".join(f"{k}={_fmt_value(v)}" for k, v in metrics.items())
            self.info(
                f"step {step}/{total} {parts} | {s_per_step:.3g} s/step | elapsed {_fmt_duration(elapsed)}"
                f" | ETA {_fmt_duration(eta)}".replace("  ", " ")
            )

    def batch(self, done: int, total: int, *, parse_failures: int = 0, unit: str = "items") -> None:
        """Progress of batched inference: N/total, rate, ETA, parse failures so far (§12)."""
        elapsed = time.perf_counter() - self._t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("nan")
        eta_text = _fmt_duration(eta) if math.isfinite(eta) else "?"
        self.info(
            f"{done}/{total} {unit} | {rate:.3g} {unit}/s | elapsed {_fmt_duration(elapsed)} | ETA {eta_text}"
            f" | parse failures {parse_failures}"
        )

    # -- outputs ---------------------------------------------------------------------------------------------------
    def save_predictions(
        self,
        df: Any,
        id_col: str,
        y_true: str,
        y_pred: str,
        group_col: str | None = None,
        score_col: str | None = None,
        *,
        task: str | None = None,
        valid_range: tuple[float, float] | None = None,
        expected_count: int | None = None,
        input_col: str | None = None,
        raw_output_col: str | None = None,
    ) -> Path:
        """Write predictions.parquet at the run root plus the CSV drill-down (groups/, diagnostics/) built from it.

        A missing/NaN `y_pred` counts as a parse failure. `expected_count` (how many inputs there were) lets the
        post-run check catch silent data loss.
        """
        from mlexp.rundir import PredictionSpec, build_views, save_prediction_table

        spec = PredictionSpec(
            id_col=id_col,
            y_true=y_true,
            y_pred=y_pred,
            group_col=group_col,
            score_col=score_col,
            task=task,
            valid_range=list(valid_range) if valid_range else None,
            expected_count=expected_count,
            input_col=input_col,
            raw_output_col=raw_output_col,
        )
        path = save_prediction_table(self.run_dir, df, spec)
        build_views(self.run_dir)
        self.info(f"saved {len(df)} predictions to {path.name} (+ groups/, diagnostics/)")
        return path

    def save_checkpoint(self, obj: Any, name: str = "model") -> Path:
        """Pickle (or torch.save for torch objects) into RUN_DIR/checkpoints/, atomically."""
        target = self.run_dir / "checkpoints" / f"{name}.pt"
        if type(obj).__module__.startswith("torch") or hasattr(obj, "state_dict") and "torch" in sys.modules:
            import io

            import torch

            buffer = io.BytesIO()
            torch.save(obj.state_dict() if hasattr(obj, "state_dict") else obj, buffer)
            atomic.write_bytes(target, buffer.getvalue())
        else:
            target = target.with_suffix(".pkl")
            atomic.write_bytes(target, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        self.info(f"checkpoint saved: {target.relative_to(self.run_dir)}")
        return target

    def load_checkpoint(self, name: str = "model") -> Any:
        pkl = self.run_dir / "checkpoints" / f"{name}.pkl"
        if pkl.exists():
            return pickle.loads(pkl.read_bytes())
        import torch

        return torch.load(self.run_dir / "checkpoints" / f"{name}.pt", map_location="cpu", weights_only=False)

    def final(self, **metrics: Any) -> None:
        """Print the final `key: value` block (parsed by the harness) and write metrics.json."""
        clean = {
            k: (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v) for k, v in metrics.items()
        }
        lines = [FINAL_MARK] + [f"{k}: {_fmt_value(v)}" for k, v in clean.items()]
        for line in lines:
            self._log.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
            if self.echo:
                print(line, flush=True)
        atomic.write_json(self.run_dir / "metrics.json", clean)

    def close(self) -> None:
        self._log.close()
        self._metrics.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
