"""Entry point of a run on a Ray worker: the same runner as locally, then the run dir shipped back via the log.

Started by `mlexp.executors.RayExecutor` as the job's entrypoint, in the uploaded working dir (the code dir).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from mlexp import atomic
from mlexp.errors import SandboxError
from mlexp.executors import EXIT_MARK, RESULT_BEGIN, RESULT_END, pack_dir
from mlexp.runner import Redactor, run_process
from mlexp.sandbox import SandboxPolicy, config_paths, find_bwrap

MAX_FILE_MB = float(os.environ.get("MLEXP_RAY_MAX_FILE_MB", "64"))


def _policy(args: argparse.Namespace, run_dir: Path, code_dir: Path, config: dict) -> SandboxPolicy | None:
    """The worker's sandbox: the same rules as a local run, with the worker's own paths."""
    if args.no_sandbox:
        return None
    find_bwrap()
    data = [Path(p) for p in args.data if Path(p).exists()] + config_paths(config, [code_dir])
    return SandboxPolicy(run_dir=run_dir, code_dir=code_dir, read_only=tuple(sorted(set(data))),
                         network=args.allow_network)  # fmt: skip


def _report(info: dict) -> None:
    print(EXIT_MARK + json.dumps(info), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--script", required=True)
    parser.add_argument("--wall-limit", type=float)
    parser.add_argument("--silence-limit", type=float)
    parser.add_argument("--memory-limit-mb", type=int)
    parser.add_argument("--no-network", action="store_true")
    parser.add_argument("--max-eta", type=float)
    parser.add_argument("--no-sandbox", action="store_true")
    parser.add_argument("--allow-network", action="store_true")
    parser.add_argument("--data", action="append", default=[])
    args = parser.parse_args(argv)
    script = Path(args.script).resolve()
    run_dir = Path(tempfile.mkdtemp(prefix="mlexp-run-"))
    config = json.loads(os.environ.pop("MLEXP_CONFIG_JSON", "{}"))
    atomic.write_json(run_dir / "config.json", config)
    try:
        policy = _policy(args, run_dir, script.parent, config)
    except SandboxError as exc:  # bwrap missing on this worker: refuse, as a local run would
        _report({"exit_code": None, "exit_reason": "error", "message": str(exc), "worker_run_dir": str(run_dir)})
        return 1
    env = dict(os.environ)
    env.update({"RUN_DIR": str(run_dir), "RUN_CONFIG": str(run_dir / "config.json"), "PYTHONUNBUFFERED": "1"})
    if env.get("DEVICE") == "cuda":
        try:
            import torch

            env["DEVICE"] = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            env["DEVICE"] = "cpu"

    def echo(line: str) -> None:
        print(line, flush=True)

    result = run_process(
        [sys.executable, str(script)], cwd=run_dir, env=env, log_path=run_dir / "console.log",
        wall_limit_s=args.wall_limit, silence_limit_s=args.silence_limit, on_line=echo,
        memory_limit_mb=args.memory_limit_mb, no_network=args.no_network, redact=Redactor(), max_eta_s=args.max_eta,
        sandbox=policy,
    )  # fmt: skip
    (run_dir / "config.json").unlink(missing_ok=True)  # the driver keeps its own frozen copy
    left = []
    for item in run_dir.rglob("*"):
        if item.is_file() and item.stat().st_size > MAX_FILE_MB * 1024 * 1024:
            left.append(f"{item.relative_to(run_dir)} ({item.stat().st_size / 1e6:.0f} MB) left on the worker")
            item.unlink()
    if left:
        atomic.write_text(run_dir / "left_on_worker.txt", "\n".join(left) + "\n")
    info = {
        "exit_code": result.exit_code, "exit_reason": result.exit_reason, "eta_s": result.eta_s,
        "s_per_step": result.s_per_step, "gpu_memory": result.gpu_memory, "network": result.network,
        "message": result.message, "worker_run_dir": str(run_dir), "sandbox": result.sandbox,
        "memory_limit": result.memory_limit,
    }  # fmt: skip
    _report(info)
    packed = pack_dir(run_dir)
    print(RESULT_BEGIN, flush=True)
    for i in range(0, len(packed), 4096):
        print(packed[i : i + 4096])
    print(RESULT_END, flush=True)
    return 0 if result.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
