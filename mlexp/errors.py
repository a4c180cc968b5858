"""Named exceptions of mlexp. The CLI turns any `MlexpError` into one clear line."""


class MlexpError(Exception):
    """Base class: a problem with a run's input or environment, reported as one line."""


class ConfigError(MlexpError):
    """The experiment config is invalid (bad type, unknown key, value out of range)."""


class RunDirError(MlexpError):
    """The run directory cannot be created or written (permissions, disk full)."""


class ScriptError(MlexpError):
    """The experiment script is missing or not runnable."""


class RegistryError(MlexpError):
    """The registry could not be read or updated."""


class ExecutorError(MlexpError):
    """The executor (local process or Ray cluster) could not start or follow the run."""


class SandboxError(MlexpError):
    """The sandbox cannot be set up here (bubblewrap missing or not permitted)."""
