"""CLI commands: `replicate llm serve MODEL`, a vLLM server on this GPU machine that later commands use."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import typer
from rich.console import Console

from agent.errors import AgentError
from mlexp import atomic

out = Console(highlight=False, soft_wrap=True, markup=False)  # data is printed verbatim, never as markup

llm_app = typer.Typer(help="LLM endpoints.", no_args_is_help=True)


def _gpu_present() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@llm_app.command("serve")
def serve(
    model: str = typer.Argument(..., help="A Hugging Face model id or local path for vLLM."),
    port: int = typer.Option(8000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
    startup_timeout: float = typer.Option(900, "--startup-timeout", help="Seconds to wait for the server."),
    extra: str = typer.Option("", "--vllm-args", help="More arguments for `vllm serve`, as one string."),
) -> None:
    """Start `vllm serve MODEL` on this GPU machine and point later `replicate` commands at it (Ctrl-C stops it)."""
    from agent.llm.seam import endpoint_file

    vllm = shutil.which("vllm") or (str(Path(sys.executable).parent / "vllm"))
    if not Path(vllm).exists():
        raise AgentError("vllm is not installed: pip install 'replicate[gpu]' (or pip install vllm) on a GPU machine")
    if not _gpu_present():
        raise AgentError("no NVIDIA GPU found (nvidia-smi missing or failing): vllm serve needs a CUDA GPU")
    command = [vllm, "serve", model, "--host", host, "--port", str(port), *shlex.split(extra)]
    out.print(f"Starting: {' '.join(command)}")
    process = subprocess.Popen(command, start_new_session=True)
    url = f"http://{host}:{port}/v1"
    deadline = time.monotonic() + startup_timeout
    while True:
        if process.poll() is not None:
            raise AgentError(f"vllm serve exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGTERM)
            raise AgentError(f"vllm serve not ready after {startup_timeout:.0f}s; stopped it")
        time.sleep(3)
    path = endpoint_file()
    spec = f"vllm:{model}@{url}"
    atomic.write_text(path, json.dumps({"spec": spec, "pid": process.pid}) + "\n")
    out.print(f"Serving {model} at {url}; later commands use it ({path}). Ctrl-C stops the server.")
    try:
        process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        path.unlink(missing_ok=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `replicate` app (agent.cli.app calls it)."""
    app.add_typer(llm_app, name="llm")
