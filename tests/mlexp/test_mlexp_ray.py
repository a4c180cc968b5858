"""The Ray executor on a real local Ray head (started here, on 127.0.0.1, and stopped afterwards).

Teardown kills the head's own process group rather than calling `ray stop`, which would stop every Ray process on
the machine, including other people's clusters.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

import mlexp
from tests.mlexp.test_mlexp_e2e import EXAMPLE, README_INFO, check_run_dir, small_config

VENV_BIN = Path(sys.executable).parent
RAY = VENV_BIN / "ray"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_head():
    if not RAY.exists():
        pytest.skip("ray CLI not installed")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 chars
    dash = free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [str(RAY), "start", "--head", "--port", str(free_port()), "--node-ip-address", "127.0.0.1",
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
           "--num-cpus", "1", "--temp-dir", temp, "--disable-usage-stats",
           "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
           "--min-worker-port", "0", "--max-worker-port", "0"]  # fmt: skip
    starter = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pgid = starter.pid  # every daemon `ray start` launches stays in this process group
    try:
        out, _ = starter.communicate(timeout=180)
        if starter.returncode != 0:
            pytest.fail(f"ray start failed: {out.decode(errors='replace')[-2000:]}")
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 60
        while True:  # the Jobs API is served by the dashboard: wait until it answers
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("Ray dashboard did not come up within 60 s")
                time.sleep(0.5)
        yield address
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)
        _kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _kill_leftovers(temp: str) -> None:
    """Workers run in their own process groups; kill those that belong to this cluster (by its temp dir)."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + " ".join((proc.info["environ"] or {}).values())
        except (psutil.Error, TypeError):
            continue
        if temp in text and proc.pid != os.getpid():
            try:
                proc.kill()
            except psutil.Error:
                pass


def test_ray_executor_gives_the_same_run_dir_as_local(ray_head: str, fashion_mnist_dir: Path, tmp_path: Path):
    code = tmp_path / "code"
    shutil.copytree(EXAMPLE, code)
    cfg = small_config(fashion_mnist_dir)
    lines: list[str] = []
    t0 = time.monotonic()
    remote = mlexp.run_script(code / "train.py", cfg, runs_root=tmp_path / "ray-runs", name="fm", smoke=True,
                              executor="ray", ray_address=ray_head, on_line=lines.append,
                              readme=README_INFO)  # fmt: skip
    ray_s = time.monotonic() - t0
    assert remote.status == "completed" and remote.exit_reason == "ok" and remote.exit_code == 0, remote.digest
    assert remote.executor == "ray" and remote.check is not None and remote.check.ok
    assert remote.sandbox and remote.sandbox.startswith("bwrap"), "the worker runs the script in the same sandbox"
    assert any("submitted Ray job" in line for line in lines), "job submitted through the Jobs API"
    assert any("step 1/2" in line for line in lines), "logs tailed live"
    assert any("first step seen" in line for line in lines) and remote.s_per_step
    check_run_dir(Path(remote.run_dir), n_test=200, smoke=True)

    local = mlexp.run_script(code / "train.py", cfg, runs_root=tmp_path / "local-runs", name="fm", smoke=True)
    assert local.identity == remote.identity
    # Ray sets OMP_NUM_THREADS=1 in its workers: BLAS sums in another order, so the last digits may differ.
    assert local.metrics == pytest.approx(remote.metrics, rel=1e-4)

    def layout(run_dir: str) -> set[str]:
        return {str(p.relative_to(run_dir)) for p in Path(run_dir).rglob("*") if p.is_file()}

    assert layout(remote.run_dir) == layout(local.run_dir)
    print(f"ray executor smoke run: {ray_s:.1f}s")
