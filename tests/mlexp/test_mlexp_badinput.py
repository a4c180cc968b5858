"""Bad input gets a clear MlexpError and leaves the registry exactly as it was."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlexp
from mlexp import atomic

OK_SCRIPT = "print('=== FINAL METRICS ===')\nprint('score: 1.0')\n"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A runs root that already holds one completed run, and that registry's bytes."""
    code = tmp_path / "code"
    code.mkdir()
    job = code / "job.py"
    job.write_text(OK_SCRIPT)
    runs = tmp_path / "runs"
    record = mlexp.run_script(job, {"a": 1}, runs_root=runs, name="ok")
    assert record.status == "completed"
    return job, runs, (runs / "registry.json").read_bytes()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (["not", "a", "dict"], "mapping"),
        ({"lr": float("nan")}, "finite"),
        ({"model": object()}, "JSON types"),
        ({1: "x"}, "not a string"),
        ({"seed": 3}, "seed"),
    ],
)
def test_invalid_config(setup, config, message: str) -> None:
    job, runs, before = setup
    with pytest.raises(mlexp.ConfigError, match=message):
        mlexp.run_script(job, config, runs_root=runs, name="ok")
    assert (runs / "registry.json").read_bytes() == before


def test_missing_script_and_bad_name(setup, tmp_path: Path) -> None:
    job, runs, before = setup
    with pytest.raises(mlexp.ScriptError, match="does not exist"):
        mlexp.run_script(tmp_path / "nope.py", {}, runs_root=runs, name="ok")
    with pytest.raises(mlexp.ScriptError, match="not a file"):
        mlexp.run_script(tmp_path, {}, runs_root=runs, name="ok")
    with pytest.raises(mlexp.ConfigError, match="run name"):
        mlexp.run_script(job, {}, runs_root=runs, name="../escape")
    with pytest.raises(mlexp.ConfigError, match="ray_address"):
        mlexp.run_script(job, {}, runs_root=runs, name="ok", executor="ray")
    assert (runs / "registry.json").read_bytes() == before


def test_unwritable_run_dir(setup, tmp_path: Path) -> None:
    job, runs, before = setup
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(mlexp.RunDirError, match="runs root"):
        mlexp.run_script(job, {}, runs_root=blocker / "runs", name="ok")
    # the run's own folder cannot be created: a file sits where the experiment folder should be
    (runs / "blocked").write_text("in the way")
    with pytest.raises(mlexp.RunDirError, match="run dir"):
        mlexp.run_script(job, {"b": 2}, runs_root=runs, name="blocked")
    assert (runs / "registry.json").read_bytes() == before


def test_disk_full_before_the_run(setup, monkeypatch) -> None:
    job, runs, before = setup

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(mlexp.RunDirError, match="disk full"):
        mlexp.run_script(job, {"c": 3}, runs_root=runs, name="ok")
    assert (runs / "registry.json").read_bytes() == before
    assert not [p for p in runs.rglob(".*.tmp")], "no temp files left behind"


def test_disk_full_while_writing_results(setup, monkeypatch) -> None:
    job, runs, before = setup
    import mlexp.api

    def full(run_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir))

    monkeypatch.setattr(mlexp.api, "build_views", full)
    with pytest.raises(mlexp.RunDirError, match="disk full"):
        mlexp.run_script(job, {"d": 4}, runs_root=runs, name="ok")
    data = json.loads((runs / "registry.json").read_text())  # still valid JSON, old entry untouched
    old = json.loads(before)["runs"]
    for key, value in old.items():
        assert data["runs"][key] == value
    new = [v for k, v in data["runs"].items() if k not in old]
    assert len(new) == 1 and new[0]["status"] == "failed" and "No space left" in new[0]["error"]


def test_corrupt_registry_is_reported_not_overwritten(setup) -> None:
    job, runs, _ = setup
    (runs / "registry.json").write_text('{"runs": {"x": ')
    with pytest.raises(mlexp.RegistryError, match="not valid registry JSON"):
        mlexp.run_script(job, {"e": 5}, runs_root=runs, name="ok")
    assert (runs / "registry.json").read_text() == '{"runs": {"x": '


def test_cli_gives_one_line_errors(tmp_path: Path) -> None:
    replicate = Path(sys.executable).parent / "replicate"  # the running venv's console script, whatever venv
    env = {**os.environ, "REPLICATE_PROJECT_DIR": str(tmp_path)}
    config = tmp_path / "c.yaml"
    config.write_text("lr: 0.1\n")
    proc = subprocess.run([str(replicate), "runs", "run", str(tmp_path / "missing.py"), "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    (tmp_path / "bad.yaml").write_text("lr: [0.1\n")
    (tmp_path / "job.py").write_text(OK_SCRIPT)
    args = [str(replicate), "runs", "run", str(tmp_path / "job.py"), "--config", str(tmp_path / "bad.yaml")]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "cannot read config" in proc.stderr and proc.stderr.count("\n") == 1
    proc = subprocess.run([str(replicate), "runs", "show", "nothing"], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "no run matches" in proc.stderr
