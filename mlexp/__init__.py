"""mlexp: experiment tracking and execution. Knows nothing about papers, only runs and metrics.

Public API: `run_script` (with `RunOptions`), `smoke_then_full`, `run_series`,
`RunRecord`, `CheckResult`, `post_run_check`, `summarize_log`, `Registry`, `list_runs`,
`StabilityLog`; modules `mlexp.log` (script side), `mlexp.guard` (tamper guard), `mlexp.sandbox`,
`mlexp.early_stopping`, `mlexp.batch_infer`, `mlexp.split`.
"""

from mlexp.errors import (
    ConfigError,
    ExecutorError,
    MlexpError,
    RegistryError,
    RunDirError,
    SandboxError,
    ScriptError,
)
from mlexp.options import RunOptions
from mlexp.record import CheckResult, RunRecord
from mlexp.summary import summarize_log

__all__ = [
    "CheckResult",
    "ConfigError",
    "ExecutorError",
    "MlexpError",
    "Registry",
    "RegistryError",
    "RunDirError",
    "RunOptions",
    "RunRecord",
    "SandboxError",
    "ScriptError",
    "StabilityLog",
    "list_runs",
    "post_run_check",
    "run_script",
    "run_series",
    "show_run",
    "smoke_then_full",
    "summarize_log",
]


def __getattr__(name: str):
    """Heavy parts (pandas, pyarrow) load on first use, so `import mlexp.log` stays cheap inside scripts."""
    if name in ("run_script", "show_run", "smoke_then_full", "run_series"):
        from mlexp import api

        return getattr(api, name)
    if name == "post_run_check":
        from mlexp.checks import post_run_check

        return post_run_check
    if name in ("Registry", "list_runs", "StabilityLog"):
        from mlexp import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'mlexp' has no attribute {name!r}")
