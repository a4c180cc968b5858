"""The fault matrix of experiment runs (issue 15; docs/faults.md): two runners at once, binary input, a memory limit
too small to start, `runs tail -n 0`. Each drives the real `replicate runs` command in new processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from mlexp import cgroup, runner
from mlexp.errors import SandboxError
from mlexp.sandbox import find_bwrap
from tests.agent.test_faults import BINARY, cli, one_line_error

REPLICATE = Path(sys.executable).parent / "replicate"
SCRIPT = """import time
from mlexp.log import RunLogger, load_config
cfg = load_config()
log = RunLogger()
print("MARKER start", flush=True)
time.sleep(cfg["sleep"])
log.step(1, 1, loss=1.0)
log.final(loss=1.0)
"""


def _no_sandbox() -> str:
    try:
        find_bwrap()
    except SandboxError as exc:
        return str(exc)
    return ""


needs_bwrap = pytest.mark.skipif(bool(_no_sandbox()), reason=f"runs need bubblewrap here: {_no_sandbox()}")


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "train.py").write_text(SCRIPT, encoding="utf-8")
    return folder


def _run_args(folder: Path, sleep: float) -> list[str]:
    config = folder / f"config-{sleep}.yaml"
    config.write_text(f"sleep: {sleep}\n", encoding="utf-8")
    return ["runs", "run", str(folder / "train.py"), "--config", str(config), "--root", str(folder.parent / "runs")]


@needs_bwrap
@pytest.mark.parametrize("sleep", [2.0, 2.5])
def test_two_runs_of_one_config_started_together_run_it_once(experiment: Path, sleep: float) -> None:
    args = [str(REPLICATE), *_run_args(experiment, sleep)]
    both = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in both]
    assert sorted(rc for rc, _, _ in results) == [0, 1], results
    (_, _, err) = next(r for r in results if r[0] == 1)
    lines = [line for line in err.splitlines() if line.startswith("replicate: error:")]
    assert len(lines) == 1 and "already running" in lines[0] and "Traceback" not in err, err
    runs = experiment.parent / "runs"
    (log,) = runs.glob("exp/*/console.log")
    assert log.read_text(encoding="utf-8").count("MARKER start") == 1, "the script ran once"
    assert not list(runs.glob("exp/*.attempt-*")), "no stray attempt dir"


@needs_bwrap
def test_tail_n_0_prints_nothing(experiment: Path) -> None:
    run = cli(*_run_args(experiment, 0.0))
    assert "MARKER start" in run.stdout
    root = ["--root", str(experiment.parent / "runs")]
    (record,) = (experiment.parent / "runs").glob("exp/*/record.json")
    identity = record.parent.name
    assert cli("runs", "tail", identity, "-n", "0", *root).stdout == ""
    assert "MARKER start" in cli("runs", "tail", identity, "-n", "50", *root).stdout


def test_a_binary_config_and_a_binary_registry_are_one_line(experiment: Path) -> None:
    args = _run_args(experiment, 0.0)
    Path(args[4]).write_bytes(BINARY)
    one_line_error(cli(*args, rc=1), "is not UTF-8 text")
    registry = experiment.parent / "runs" / "registry.json"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_bytes(BINARY)
    one_line_error(cli("runs", "list", "--root", str(registry.parent), rc=1), "not valid registry JSON", "UTF-8")
    assert registry.read_bytes() == BINARY, "never overwritten"


def test_a_memory_limit_too_small_to_start_is_memory_not_error(tmp_path: Path) -> None:
    # The per-process limit (RLIMIT_AS), as on machines without a delegated cgroup: the loader cannot map Python.
    with (
        mock.patch.object(cgroup, "_v2_parent", return_value=None),
        mock.patch.object(cgroup, "_v1_parent", return_value=None),
    ):
        result = runner.run_process(
            [sys.executable, "-c", "print('hello')"], cwd=tmp_path, env={"PATH": os.environ.get("PATH", "")},
            memory_limit_mb=5, silence_limit_s=60,
        )  # fmt: skip
    assert result.exit_code != 0 and result.exit_reason == "memory", (result.exit_reason, result.tail[-3:])


FILLER = """import os
from mlexp.log import RunLogger, load_config
load_config()
try:  # fill the run's disk, as a checkpoint that does not fit would
    with open(os.path.join(os.environ["RUN_DIR"], "filler.bin"), "wb") as handle:
        while True:
            handle.write(b"\\0" * 2**20)
except OSError:
    pass
for i in range(2000):
    print("x" * 200, i, flush=True)
RunLogger().final(loss=1.0)
"""


@needs_bwrap
def test_disk_full_during_a_run_fails_it_with_the_cause_recorded(tmp_path: Path) -> None:
    import json

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=110m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        folder = tmp_path / "exp"
        folder.mkdir()
        (folder / "train.py").write_text(FILLER, encoding="utf-8")
        (folder / "config.yaml").write_text("{}\n", encoding="utf-8")
        result = cli("runs", "run", str(folder / "train.py"), "--config", str(folder / "config.yaml"),
                     "--root", str(disk / "runs"), rc=1)  # fmt: skip
        assert "Traceback" not in result.stderr, result.stderr
        runs = json.loads((disk / "runs" / "registry.json").read_text(encoding="utf-8"))["runs"]
        (entry,) = runs.values()
        assert entry["status"] == "failed" and "cannot write console.log" in entry["error"], entry["error"][:500]
        assert "No space left" in entry["error"]
        (record,) = (disk / "runs").glob("exp/*/record.json")
        assert json.loads(record.read_text(encoding="utf-8"))["status"] == "failed"
    finally:
        subprocess.run(["umount", str(disk)], check=False)
