"""mlexp: experiment tracking and execution. Knows nothing about papers, only runs and metrics."""

from mlexp.errors import ConfigError, ExecutorError, MlexpError, RegistryError, RunDirError, ScriptError

__all__ = ["ConfigError", "ExecutorError", "MlexpError", "RegistryError", "RunDirError", "ScriptError"]
