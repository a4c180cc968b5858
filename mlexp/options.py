"""`RunOptions`: everything `mlexp.run_script` needs beyond the script and its config, in one typed object.

    from mlexp import RunOptions, run_script
    opts = RunOptions(runs_root=Path("runs"), name="baseline", wall_limit_s=600)
    record = run_script(Path("train.py"), {"lr": 0.1}, opts)
    record = run_script(Path("train.py"), {"lr": 0.1}, opts, seed=1)      # fields override the object's
    record = run_script(Path("train.py"), {"lr": 0.1}, runs_root=..., name=...)  # or fields alone

Containment (docs/sandbox.md): `sandbox=True` (the default) runs the script in bubblewrap; `allow_network` gives the
sandboxed run the host's network; `data_paths` are extra read-only paths the run is given (existing paths among the
config's values are found by themselves); `protected_paths` are evaluation files hashed before and checked after the
run. `sandbox=False` (`--no-sandbox`) is for a person's own trusted script and is written into README.txt and the
record; `no_network` then cuts the network with `unshare -n` where the OS allows it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlexp.errors import ConfigError, ScriptError
from mlexp.record import ExecutorName

NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class RunOptions:
    runs_root: Path
    name: str
    smoke: bool = False
    seed: int = 0
    executor: ExecutorName = "local"
    ray_address: str | None = None
    num_gpus: float | None = None  # GPUs requested per run on Ray
    wall_limit_s: float | None = None
    silence_limit_s: float | None = 300
    max_eta_s: float | None = None  # kill as soon as a progress line's ETA exceeds it
    memory_limit_mb: int | None = None  # for the whole process tree where cgroups allow (mlexp.cgroup)
    min_free_mb: float = 100.0  # pre-flight: refuse to start with less free disk under the runs root
    force: bool = False  # rerun an identity that already completed
    allow_env: Sequence[str] = ()  # environment variables passed through by name (secrets only this way)
    sandbox: bool = True
    allow_network: bool = False
    no_network: bool = False
    data_paths: Sequence[str | Path] = ()
    protected_paths: Sequence[str | Path] = ()
    readme: dict | None = None  # purpose, scope, data, model, metrics definitions for README.txt
    notes: str | None = None  # into runs.yaml
    on_line: Callable[[str], None] | None = field(default=None, repr=False)

    def limits(self) -> dict[str, float | None]:
        return {"wall_limit_s": self.wall_limit_s, "silence_limit_s": self.silence_limit_s,
                "memory_limit_mb": self.memory_limit_mb, "max_eta_s": self.max_eta_s}  # fmt: skip


def make_options(options: RunOptions | None, fields: Mapping[str, Any]) -> RunOptions:
    """`options` with `fields` applied, or RunOptions(**fields); an unknown field is a TypeError (our bug)."""
    if options is None:
        return RunOptions(**fields)
    return dataclasses.replace(options, **fields) if fields else options


def validate(script: Path, opts: RunOptions) -> Path:
    """The resolved script path; ConfigError/ScriptError (one line) for bad input."""
    script = Path(script).expanduser()
    if not script.exists():
        raise ScriptError(f"experiment script {script} does not exist")
    if not script.is_file():
        raise ScriptError(f"experiment script {script} is not a file")
    if not NAME_OK.match(opts.name or ""):
        raise ConfigError(f"run name {opts.name!r} must be 1-100 characters of letters, digits, '.', '_' or '-'")
    if opts.executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {opts.executor!r}; use 'local' or 'ray'")
    if opts.executor == "ray" and not opts.ray_address:
        raise ConfigError("executor 'ray' needs ray_address (the dashboard URL, e.g. http://127.0.0.1:8265)")
    for key, value in opts.limits().items():
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value <= 0):
            raise ConfigError(f"{key} must be a positive number, got {value!r}")
    if opts.allow_network and opts.no_network:
        raise ConfigError("allow_network and no_network contradict each other; choose one")
    if opts.allow_network and not opts.sandbox:
        raise ConfigError("allow_network applies to the sandbox; without it (--no-sandbox) the network is open")
    return script.resolve()
