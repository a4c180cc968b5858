"""Attacks a generated script could make, each run as a script through `replicate runs run` with default flags.

Every test asserts the attack FAILS: the secret never reaches anything the run wrote or printed, nothing outside
RUN_DIR is written, no process outlives the run, no host UNIX socket is reached, four workers cannot share their
way past a memory limit, a forged metrics block does not pass the check, and the harness source stays as it was.
They need bubblewrap (installed by .ci/run); without it they skip with the reason (tests/mlexp/conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import mlexp
from mlexp.cgroup import MemoryCage

SECRET = "sk-proj-TESTSECRET" + "A1b2C3d4E5f6G7h8"  # shaped like an OpenAI key
KEY_TEXT = "-----BEGIN OPENSSH PRIVATE KEY-----\nHOMESECRET-" + "x" * 24 + "\n-----END OPENSSH PRIVATE KEY-----\n"


class Attack:
    """One attack script in its own code dir, run by the `replicate` CLI with a caller that holds secrets."""

    def __init__(self, tmp_path: Path, body: str, config: dict | None = None, name: str = "attack"):
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        (self.home / ".ssh").mkdir(parents=True, exist_ok=True)
        (self.home / ".ssh" / "id_ed25519").write_text(KEY_TEXT)
        self.code = tmp_path / name
        self.code.mkdir()
        self.script = self.code / "attack.py"
        self.script.write_text(textwrap.dedent(body))
        self.config = self.code / "config.yaml"
        self.config.write_text(json.dumps(config or {}))
        self.runs = tmp_path / "project" / "runs"
        self.output = ""
        self.returncode = 0

    def run(self, *flags: str, timeout: float = 120) -> mlexp.RunRecord:
        env = {**os.environ, "OPENAI_API_KEY": SECRET, "HOME": str(self.home), "MY_SERVICE_PASSWORD": SECRET + "pw"}
        cli = Path(sys.executable).parent / "replicate"
        proc = subprocess.run(
            [str(cli), "runs", "run", str(self.script), "--config", str(self.config), "--root", str(self.runs),
             *flags],
            capture_output=True, text=True, env=env, timeout=timeout, cwd=self.tmp, check=False,
        )  # fmt: skip
        self.output, self.returncode = proc.stdout + proc.stderr, proc.returncode
        records = mlexp.list_runs(self.runs)
        assert records, f"no run was recorded:\n{self.output}"
        return records[-1]

    def everything_written(self) -> str:
        """The CLI's output and every file under the project (run dir, registry, runs.yaml) as text."""
        parts = [self.output]
        for path in (self.tmp / "project").rglob("*"):
            if path.is_file():
                parts.append(path.read_bytes().decode("utf-8", errors="replace"))
        return "\n".join(parts)


# Shared by the write attacks: append `text` to each target, saying which writes got through.
TRY_APPEND = """
def try_append(targets, text, tag):
    for target in targets:
        try:
            with open(target, "a") as handle:
                handle.write(text)
            print(tag, target, flush=True)
        except OSError as exc:
            print("blocked", target, type(exc).__name__, flush=True)
    print("=== FINAL METRICS ===")
    print("score: 1")
"""


def _variants(secret: str) -> list[str]:
    return [secret, secret[::-1], base64.b64encode(secret.encode()).decode()]


def test_reading_home_and_the_parents_environment_gets_no_secret(tmp_path: Path) -> None:
    attack = Attack(tmp_path, """
        import base64, os, pathlib
        loot = [os.environ.get("OPENAI_API_KEY", ""), os.environ.get("MY_SERVICE_PASSWORD", "")]
        home = pathlib.Path.home()
        print("home holds:", sorted(p.name for p in home.iterdir()), flush=True)
        for key in (home / ".ssh").glob("*") if (home / ".ssh").exists() else []:
            loot.append(key.read_text())
        for pid in {os.getppid(), 1, *[int(p) for p in os.listdir("/proc") if p.isdigit()]}:
            try:
                loot.append(open(f"/proc/{pid}/environ").read())
            except OSError as exc:
                print("environ", pid, "blocked:", exc, flush=True)
        blob = "\\n".join(loot)
        open("loot.txt", "w").write(blob)             # unredacted, in RUN_DIR
        print("b64", base64.b64encode(blob.encode()).decode(), flush=True)
        print("rev", blob[::-1], flush=True)
        import mlexp.log
        log = mlexp.log.RunLogger()
        log.info("training.log gets it too: " + blob)
        log.final(done=1)
    """)
    record = attack.run()
    assert record.status == "completed", attack.output
    loot = (Path(record.run_dir) / "loot.txt").read_text()
    assert "HOMESECRET" not in loot and SECRET not in loot, "the run itself never had a secret"
    written = attack.everything_written()
    for secret in (SECRET, "HOMESECRET"):
        for variant in _variants(secret):
            assert variant not in written
    b64 = next(line for line in attack.output.splitlines() if line.startswith("b64 "))
    decoded = base64.b64decode(b64[4:]).decode()
    assert SECRET not in decoded and "HOMESECRET" not in decoded
    assert "home holds: []" in attack.output, "$HOME is an empty directory"
    assert "bwrap" in record.sandbox and "bwrap" in (Path(record.run_dir) / "README.txt").read_text()


def test_writes_outside_the_run_dir_fail(tmp_path: Path) -> None:
    marker = f"escape-{uuid.uuid4().hex}.txt"
    attack = Attack(tmp_path, TRY_APPEND + textwrap.dedent(f"""
        import os, pathlib
        try_append(["../../../{marker}", "/tmp/{marker}", "../../registry.json", "../../../runs.yaml",
                    str(pathlib.Path(__file__).resolve()), os.path.expanduser("~/{marker}")], "forged", "WROTE")
    """))
    attack.run()  # a first run makes the registry exist, then the attack runs again against it
    registry_before = (attack.runs / "registry.json").read_text()
    script_before = attack.script.read_text()
    record = attack.run("--force")
    assert record.status == "completed", attack.output
    project = tmp_path / "project"
    run_dir = Path(record.run_dir)
    assert run_dir.parent.parent == attack.runs and run_dir.parent.parent.parent == project
    assert not (project / marker).exists(), "../../.. of RUN_DIR is the project dir: must stay untouched"
    assert not Path("/tmp", marker).exists(), "the run's /tmp is private"
    assert not (attack.home / marker).exists()
    assert attack.script.read_text() == script_before, "the code dir is read-only"
    registry = json.loads((attack.runs / "registry.json").read_text())
    assert "forged" not in (attack.runs / "registry.json").read_text()
    assert set(registry["runs"]) == set(json.loads(registry_before)["runs"])
    assert "forged" not in (project / "runs.yaml").read_text()


def test_a_double_forked_daemon_does_not_survive_the_run(tmp_path: Path) -> None:
    attack = Attack(tmp_path, """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(5)
                open(os.path.join(os.environ["RUN_DIR"], "daemon_was_here.txt"), "w").write("alive")
                os._exit(0)
            os._exit(0)
        print("daemon launched", flush=True)
        print("=== FINAL METRICS ===")
        print("score: 1")
    """)
    record = attack.run()
    assert record.status == "completed", attack.output
    time.sleep(6.5)
    assert not (Path(record.run_dir) / "daemon_was_here.txt").exists(), "every process dies with the run"


@pytest.fixture
def unix_servers(tmp_path: Path):
    """Listening UNIX sockets of the host: one under /tmp, one inside the code dir (a path the run can read) and
    an abstract one. Yields (paths, connections seen)."""
    code = tmp_path / "attack"
    code.mkdir()
    paths = [str(tmp_path / "host.sock"), str(code / "agent.sock"), f"\0mlexp-test-{uuid.uuid4().hex}"]
    servers, seen = [], []
    for path in paths:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(4)
        server.settimeout(0.2)
        servers.append(server)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            for server in servers:
                try:
                    conn, _ = server.accept()
                    seen.append(server.getsockname())
                    conn.close()
                except OSError:
                    continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield paths, seen
    stop.set()
    thread.join(timeout=2)
    for server in servers:
        server.close()


def test_host_unix_sockets_cannot_be_reached(tmp_path: Path, unix_servers) -> None:
    paths, seen = unix_servers
    code = tmp_path / "attack"
    shutil.rmtree(code / "__pycache__", ignore_errors=True)
    body = f"""
        import socket
        for path in {paths!r}:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                client.connect(path)
                print("CONNECTED", repr(path), flush=True)
            except OSError as exc:
                print("refused", repr(path), type(exc).__name__, flush=True)
        print("=== FINAL METRICS ===")
        print("score: 1")
    """
    script = code / "attack.py"
    script.write_text(textwrap.dedent(body))
    attack = Attack.__new__(Attack)
    attack.tmp, attack.home, attack.code, attack.script = tmp_path, tmp_path / "home", code, script
    (attack.home / ".ssh").mkdir(parents=True)
    attack.config = code / "config.yaml"
    attack.config.write_text("{}")
    attack.runs = tmp_path / "project" / "runs"
    record = attack.run()
    assert record.status == "completed", attack.output
    time.sleep(0.5)
    assert "CONNECTED" not in attack.output and attack.output.count("refused") == 3, attack.output
    assert seen == []


def test_four_workers_cannot_exceed_the_memory_limit_together(tmp_path: Path) -> None:
    cage = MemoryCage.create(100, "probe")
    cage.close()
    if cage.mode == "per-process":
        pytest.skip(f"no cgroup for a whole-tree limit on this machine (the record says so): {cage.why}")
    attack = Attack(tmp_path, """
        import multiprocessing as mp, time
        def hog(_):
            block = bytearray(b"x" * (220 * 1024 * 1024))   # touched pages, not a lazy allocation
            time.sleep(4)
            return len(block)
        if __name__ == "__main__":
            procs = [mp.Process(target=hog, args=(i,)) for i in range(4)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            print("all four finished", flush=True)
            print("=== FINAL METRICS ===")
            print("score: 1")
    """)
    record = attack.run("--memory-limit-mb", "500")
    assert record.status == "failed" and record.exit_reason == "memory", attack.output
    assert "all four finished" not in attack.output
    assert "whole process tree" in (record.memory_limit or "")
    assert attack.returncode == 1


def test_a_forged_metrics_block_fails_the_check(tmp_path: Path) -> None:
    attack = Attack(tmp_path, """
        import pandas as pd
        import mlexp.log
        log = mlexp.log.RunLogger()
        truth = ["cat", "dog"] * 100
        pred = ["cat"] * 200                                   # accuracy 0.5
        log.save_predictions(pd.DataFrame({"id": range(200), "y": truth, "p": pred}), "id", "y", "p")
        log.final(accuracy=0.5)
        print("=== FINAL METRICS ===")                        # the forged, later block
        print("accuracy: 0.99")
    """)
    record = attack.run()
    assert record.metrics["accuracy"] == 0.5, "the first block is the record"
    assert record.check is not None and not record.check.ok
    assert any("printed later" in p and "accuracy=0.99" in p for p in record.check.problems)
    assert "post-run check problems" in attack.output
    stability = (tmp_path / "project" / "runs.yaml").read_text()
    assert "investigating" in stability and "stable\n" not in stability


def test_a_printed_metric_the_predictions_contradict_fails_the_check(tmp_path: Path) -> None:
    attack = Attack(tmp_path, """
        import pandas as pd
        import mlexp.log
        log = mlexp.log.RunLogger()
        truth = ["cat", "dog"] * 100
        pred = truth[:109] + [{"cat": "dog", "dog": "cat"}[t] for t in truth[109:]]   # 109/200 right: 0.545
        log.save_predictions(pd.DataFrame({"id": range(200), "y": truth, "p": pred}), "id", "y", "p")
        print("=== FINAL METRICS ===")                        # only a hand-printed block, claiming 0.99
        print("accuracy: 0.99")
        print("loss: nan")
    """)
    record = attack.run()
    assert record.check is not None and not record.check.ok
    assert any("harness recomputes 0.545" in p for p in record.check.problems), record.check.problems
    assert any("non-finite" in p and "loss" in p for p in record.check.problems)
    assert "loss" not in record.metrics and record.invalid_metrics == {"loss": "nan"}
    text = (Path(record.run_dir) / "metrics.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}: not strict JSON"))


def test_editing_the_harness_source_during_the_smoke_run_fails(tmp_path: Path) -> None:
    import mlexp.compare

    target = Path(mlexp.compare.__file__)
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    attack = Attack(tmp_path, TRY_APPEND + textwrap.dedent("""
        import pathlib
        import mlexp
        root = pathlib.Path(mlexp.__file__).parent
        try_append([root / name for name in ("compare.py", "guard.py", "metrics.py")], "\\n# tampered\\n", "TAMPERED")
    """))
    record = attack.run("--smoke")
    assert record.smoke and record.status == "completed", attack.output
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before
    assert "TAMPERED" not in attack.output and attack.output.count("blocked") == 3
    assert record.check is not None and not any("changed during the run" in p for p in record.check.problems)


def test_without_bwrap_the_run_refuses_with_one_line(tmp_path: Path) -> None:
    attack = Attack(tmp_path, "print('hello')\n")
    env_path = tmp_path / "bin"
    env_path.mkdir()
    python = Path(sys.executable)
    cli = python.parent / "replicate"
    env = {**os.environ, "PATH": str(env_path)}  # no bwrap on PATH
    args = [str(python), str(cli), "runs", "run", str(attack.script), "--config", str(attack.config),
            "--root", str(attack.runs)]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "apt-get install bubblewrap" in lines[0] and "--no-sandbox" in lines[0], lines
    assert not attack.runs.exists() or not list(attack.runs.rglob("record.json"))
    opted_out = subprocess.run([*args, "--no-sandbox"], capture_output=True, text=True, env=env, check=False)
    assert opted_out.returncode == 0, opted_out.stdout + opted_out.stderr
    record = mlexp.list_runs(attack.runs)[-1]
    assert record.sandbox and record.sandbox.startswith("none: --no-sandbox")
    assert "--no-sandbox" in (Path(record.run_dir) / "README.txt").read_text()


def test_a_symlink_out_of_the_run_dir_is_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "project" / "outside"
    attack = Attack(tmp_path, f"""
        import os
        os.symlink({str(outside)!r}, "diagnostics")   # the harness writes diagnostics/ after the run
        print("=== FINAL METRICS ===")
        print("score: 1")
    """)
    outside.mkdir(parents=True)
    record = attack.run()
    assert list(outside.iterdir()) == [], "the harness never follows a link out of the run dir"
    assert (Path(record.run_dir) / "diagnostics").is_dir() and not (Path(record.run_dir) / "diagnostics").is_symlink()
    assert record.check is not None and any("symlink diagnostics" in p for p in record.check.problems)
