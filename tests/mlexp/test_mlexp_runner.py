"""The runner's watchdog and containment: silence rule, wall limit, crash digest, secrets, a killed runner."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mlexp
from mlexp.runner import Redactor, network_isolation, scrubbed_env


def script(tmp_path: Path, body: str, name: str = "job.py") -> Path:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    path = code / name
    path.write_text(textwrap.dedent(body))
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def test_hanging_script_is_killed_by_the_silence_rule_with_its_children(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        """
        import subprocess, sys, time
        # The child proves it is alive by writing a file into RUN_DIR (its pid means nothing outside the sandbox).
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3); open('child_alive', 'w')"])
        print("started, now hanging", flush=True)
        time.sleep(300)
    """,
    )
    t0 = time.monotonic()
    record = mlexp.run_script(job, {}, runs_root=tmp_path / "runs", name="hang", silence_limit_s=1.5)
    assert time.monotonic() - t0 < 20
    assert record.status == "failed" and record.exit_reason == "silence"
    assert "no output for 1.5s" in record.digest and "started, now hanging" in record.digest
    time.sleep(3.5)
    assert not (Path(record.run_dir) / "child_alive").exists(), "the whole process tree must be killed"
    assert json.loads((tmp_path / "runs" / "registry.json").read_text())["runs"][record.identity]["status"] == "failed"


def test_long_script_is_killed_by_the_wall_limit(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        """
        import time
        i = 0
        while True:
            i += 1
            print(f"tick {i}", flush=True)
            time.sleep(0.05)
    """,
    )
    record = mlexp.run_script(job, {}, runs_root=tmp_path / "runs", name="long", wall_limit_s=2, silence_limit_s=60)
    assert record.status == "failed" and record.exit_reason == "wall_limit"
    assert 2 <= record.duration_s < 15
    assert "[first of" in record.digest or "repeated" in record.digest  # ticks collapsed, not 40 lines


def test_crash_is_recorded_failed_with_the_whole_traceback_in_the_digest(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        """
        import warnings
        for i in range(5000):
            print(f"UserWarning: feature {i} is deprecated and will be removed", flush=False)
        def inner():
            raise ValueError("boom: shapes (3, 4) and (5,) do not match")
        def outer():
            inner()
        outer()
    """,
    )
    record = mlexp.run_script(job, {"lr": 0.1}, runs_root=tmp_path / "runs", name="crash")
    assert record.status == "failed" and record.exit_reason == "error" and record.exit_code == 1
    assert "Traceback (most recent call last)" in record.error and "ValueError: boom" in record.error
    digest = record.digest
    assert "repeated 5000x" in digest
    assert len(digest.splitlines()) < 60
    for needle in ("Traceback (most recent call last)", "in outer", "in inner", "ValueError: boom: shapes (3, 4)"):
        assert needle in digest, needle
    run_dir = Path(record.run_dir)
    assert "ValueError: boom" in (run_dir / "diagnostics" / "log_digest.txt").read_text()
    assert "failed" in (run_dir / "README.txt").read_text()
    stability = (tmp_path / "runs.yaml").read_text()
    assert "unstable" in stability
    # a failed run is recorded, and rerunning it is allowed (not skipped)
    again = mlexp.run_script(job, {"lr": 0.1}, runs_root=tmp_path / "runs", name="crash")
    assert not again.skipped and again.status == "failed"
    assert any(p.name.startswith(record.identity + ".attempt-") for p in run_dir.parent.iterdir())


def test_secrets_are_scrubbed_from_the_env_and_redacted_from_logs(tmp_path: Path, monkeypatch) -> None:
    secret = "sk-test-" + "A1b2C3d4E5f6G7h8I9j0" * 2
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-1234567890abcdef")
    job = script(
        tmp_path,
        f"""
        import os
        print("key in env:", os.environ.get("OPENAI_API_KEY"), flush=True)
        print("token in env:", os.environ.get("MY_SERVICE_TOKEN"), flush=True)
        print("found on disk: {secret}", flush=True)
        print("contract:", os.environ["RUN_DIR"] == os.getcwd(), os.environ["SMOKE"], os.environ["SEED"],
              os.environ["DEVICE"], os.path.exists(os.environ["RUN_CONFIG"]), flush=True)
        print("=== FINAL METRICS ===")
        print("score: 1.5")
    """,
    )
    record = mlexp.run_script(job, {}, runs_root=tmp_path / "runs", name="secret", seed=7, smoke=True)
    assert record.status == "completed" and record.metrics == {"score": 1.5}
    run_dir = Path(record.run_dir)
    console = (run_dir / "console.log").read_text()
    assert "key in env: None" in console and "token in env: None" in console
    assert "contract: True 1 7 cpu True" in console
    for text in (console, record.digest, (run_dir / "diagnostics" / "log_digest.txt").read_text(),
                 (run_dir / "record.json").read_text(), (tmp_path / "runs" / "registry.json").read_text()):  # fmt: skip
        assert secret not in text
    assert "[REDACTED]" in console
    # allowed by name: passed to the script, still redacted in every log
    allowed = mlexp.run_script(job, {"v": 2}, runs_root=tmp_path / "runs", name="secret", allow_env=["OPENAI_API_KEY"])
    console = (Path(allowed.run_dir) / "console.log").read_text()
    assert "key in env: [REDACTED]" in console and secret not in console


def test_scrubbed_env_and_redactor_units(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "abc/def+ghijklmnop")
    env = scrubbed_env()
    assert "HF_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env and env["PYTHONUNBUFFERED"] == "1"
    assert "PATH" in env
    redact = Redactor()
    assert redact("x abc/def+ghijklmnop y") == "x [REDACTED] y"
    assert "ghp_" not in redact("token ghp_" + "a" * 36) and "Bearer [REDACTED]" in redact(
        "Authorization: Bearer " + "z" * 30
    )


def test_memory_limit_is_enforced(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        """
        print("allocating", flush=True)
        block = bytearray(1500 * 1024 * 1024)
        print("allocated", flush=True)
    """,
    )
    record = mlexp.run_script(job, {}, runs_root=tmp_path / "runs", name="mem", memory_limit_mb=400)
    assert record.status == "failed" and record.exit_reason == "memory"
    # A cgroup limit ends in the OOM killer (the harness says so); a per-process limit in MemoryError.
    assert "memory limit" in record.error or "MemoryError" in record.error


def test_no_network_cuts_access_or_says_it_could_not(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    job = script(
        tmp_path,
        f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
            print("network: reachable", flush=True)
        except OSError as exc:
            print("network: blocked", type(exc).__name__, flush=True)
    """,
    )
    try:
        default = mlexp.run_script(job, {}, runs_root=tmp_path / "runs", name="net")
        assert default.network == "cut (bwrap --unshare-net)"
        assert "network: blocked" in (Path(default.run_dir) / "console.log").read_text()
        allowed = mlexp.run_script(job, {"y": 1}, runs_root=tmp_path / "runs", name="net", allow_network=True)
        assert allowed.network == "allowed (by name)"
        assert "network: reachable" in (Path(allowed.run_dir) / "console.log").read_text()
        open_run = mlexp.run_script(job, {"z": 1}, runs_root=tmp_path / "runs", name="net", sandbox=False)
        assert "network: reachable" in (Path(open_run.run_dir) / "console.log").read_text()
        lines: list[str] = []
        cut = mlexp.run_script(job, {"x": 1}, runs_root=tmp_path / "runs", name="net", no_network=True,
                               sandbox=False, on_line=lines.append)  # fmt: skip
    finally:
        server.close()
    prefix, why = network_isolation()
    console = (Path(cut.run_dir) / "console.log").read_text()
    if prefix:
        assert cut.network == "cut (unshare -n)" and "network: blocked" in console
    else:
        assert cut.network.startswith("NOT cut") and any("could NOT be cut" in line for line in lines), why


def test_killing_the_runner_leaves_the_registry_consistent(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        """
        import time
        print("running", flush=True)
        while True:
            time.sleep(0.5)
            print("still running", flush=True)
    """,
    )
    runs = tmp_path / "runs"
    driver = textwrap.dedent(f"""
        import mlexp
        from pathlib import Path
        mlexp.run_script(Path({str(job)!r}), {{}}, runs_root=Path({str(runs)!r}), name="victim")
    """)
    runner = subprocess.Popen([sys.executable, "-c", driver])
    registry = runs / "registry.json"
    deadline = time.monotonic() + 30
    child = None
    while time.monotonic() < deadline:
        if registry.exists():
            entries = json.loads(registry.read_text())["runs"]
            child = next((e.get("child_pgid") for e in entries.values() if e.get("child_pgid")), None)
            if child:
                break
        time.sleep(0.1)
    assert child, "the run never started"
    t0 = time.monotonic()
    live = mlexp.list_runs(runs)  # the registry is not held locked for the length of a run
    assert time.monotonic() - t0 < 5 and [r.status for r in live] == ["running"]
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the sandbox dies with its runner (--die-with-parent): no script outlives it"
    records = mlexp.list_runs(runs)  # the next call detects the dead runner
    assert len(records) == 1
    rec = records[0]
    assert rec.status == "failed" and rec.exit_reason == "killed" and "died" in (rec.error or "")
    data = json.loads(registry.read_text())
    assert data["runs"][rec.identity]["status"] == "failed"
    assert mlexp.RunRecord.load(rec.run_dir).status == "failed"
    # and the run can be started again
    again = mlexp.run_script(job, {}, runs_root=runs, name="victim", wall_limit_s=1)
    assert again.exit_reason == "wall_limit"


@pytest.mark.parametrize("limit", [0, -1])
def test_bad_limits_are_config_errors(tmp_path: Path, limit: float) -> None:
    job = script(tmp_path, "print('x')\n")
    with pytest.raises(mlexp.ConfigError):
        mlexp.run_script(job, {}, runs_root=tmp_path / "runs", name="x", silence_limit_s=limit)


METRIC_SCRIPT = """
    import json, os, sys
    cfg = json.load(open(os.environ["RUN_CONFIG"]))
    if cfg.get("crash_on_smoke") and os.environ["SMOKE"] == "1":
        raise SystemExit("smoke run found a bug")
    print("=== FINAL METRICS ===")
    print(f"accuracy: {cfg['acc']}")
"""


def test_smoke_then_full_stops_after_a_failed_smoke(tmp_path: Path) -> None:
    job = script(tmp_path, METRIC_SCRIPT)
    smoke, full = mlexp.smoke_then_full(job, {"acc": 0.5}, runs_root=tmp_path / "runs", name="sf")
    assert smoke.smoke and smoke.status == "completed" and full is not None and not full.smoke
    smoke, full = mlexp.smoke_then_full(job, {"acc": 0.5, "crash_on_smoke": True}, runs_root=tmp_path / "runs",
                                        name="sf")  # fmt: skip
    assert smoke.status == "failed" and full is None and "smoke run found a bug" in smoke.error


def test_run_series_stops_on_diminishing_returns(tmp_path: Path) -> None:
    job = script(tmp_path, METRIC_SCRIPT)
    configs = [{"acc": 0.6}, {"acc": 0.7}, {"acc": 0.702}, {"acc": 0.9}]
    records, decision = mlexp.run_series(job, configs, metric="accuracy", noise=0.01, runs_root=tmp_path / "runs",
                                         name="series", notes="data budget series")  # fmt: skip
    assert [r.metrics["accuracy"] for r in records] == [0.6, 0.7, 0.702]
    assert decision.stop and decision.action == "diminishing_returns"
    assert "data budget series" in (tmp_path / "runs.yaml").read_text()


def test_unreasonable_eta_is_killed_at_once(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        """
        import time
        import mlexp.log
        log = mlexp.log.RunLogger()
        for step in range(1, 100001):
            time.sleep(0.2)
            log.step(step, 100000, loss=1.0)
    """,
    )
    record = mlexp.run_script(job, {}, runs_root=tmp_path / "runs", name="eta", max_eta_s=60, silence_limit_s=30)
    assert record.status == "failed" and record.exit_reason == "wall_limit"
    assert "exceeds max_eta_s=60" in record.digest and record.duration_s < 20
