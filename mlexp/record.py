"""The typed values mlexp hands out: `RunRecord` (one run, JSON round-trip) and `CheckResult` (post-run review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlexp import atomic
from mlexp.errors import RunDirError

Status = Literal["completed", "failed", "running"]
ExitReason = Literal["ok", "error", "silence", "wall_limit", "killed", "memory"]
ExecutorName = Literal["local", "ray"]
RECORD_FILE = "record.json"


class CheckResult(BaseModel):
    """Outcome of the post-run check (§10): `ok` is False when any problem was found; notes are informational."""

    ok: bool
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class RunRecord(BaseModel):
    """Everything known about one run. Stored in the registry and as `record.json` in the run dir."""

    identity: str
    name: str
    status: Status
    skipped: bool = False
    exit_code: int | None = None
    exit_reason: ExitReason | None = None
    run_dir: str
    metrics: dict[str, float] = Field(default_factory=dict)  # finite values only (mlexp.metrics)
    invalid_metrics: dict[str, str] = Field(default_factory=dict)  # non-finite / non-numeric values, as printed
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    code_commit: str = ""
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    error: str | None = None
    digest: str = ""
    env: dict[str, Any] = Field(default_factory=dict)
    # Beyond the contract: what the harness needs to follow and judge the run.
    script: str | None = None
    smoke: bool = False
    seed: int = 0
    executor: ExecutorName = "local"
    check: CheckResult | None = None
    eta_s: float | None = None
    s_per_step: float | None = None
    gpu_memory: str | None = None
    network: str | None = None
    sandbox: str | None = None  # how the run was contained (mlexp.sandbox), "none: --no-sandbox ..." when opted out
    memory_limit: str | None = None  # whole-tree (cgroup) or, said plainly, per-process
    runner_pid: int | None = None
    runner_host: str | None = None
    runner_start_time: float | None = None
    child_pgid: int | None = None

    @classmethod
    def load(cls, run_dir: str | Path) -> RunRecord:
        """Read `record.json` from a run dir (or the file itself)."""
        path = Path(run_dir)
        if path.is_dir():
            path = path / RECORD_FILE
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise RunDirError(f"no run record at {path}") from exc
        except (OSError, ValueError) as exc:
            raise RunDirError(f"cannot read run record {path}: {exc}") from exc

    def save(self, run_dir: str | Path | None = None) -> Path:
        target = Path(run_dir or self.run_dir) / RECORD_FILE
        return atomic.write_text(target, self.model_dump_json(indent=2) + "\n")

    def short(self) -> str:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(self.metrics.items())[:4])
        return f"{self.identity} {self.name} {self.status}/{self.exit_reason} {metrics}"
