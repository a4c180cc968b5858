"""The fault matrix of the replication flow (issue 15; docs/faults.md): bad answers at a review, two processes at
once, corrupt or unreadable files. Each case drives the real `replicate` command in a new process against a
replication seeded into the real SQLite checkpointer at the review in question (no LLM, no experiment run), and
checks that the failure is one line on stderr with a non-zero exit and that the replication is left answerable.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from agent.spec import SpecError, from_markdown, save_spec, to_markdown
from tests.agent.test_agent_units import _paper, _spec

REPLICATE = Path(sys.executable).parent / "replicate"
RID = "demo-fault1"


def cli(*args: str, rc: int = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(REPLICATE), *args], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == rc, f"{' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The failure is exactly one `replicate: error:` line on stderr, no traceback, and says each needle."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("replicate: error:")]
    assert len(lines) == 1, result.stderr  # progress lines ("... Reading") may come before it
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def seed(goto: str, after: str, *, run_to_pause: bool = True, **values: Any) -> dict[str, Any]:
    """A replication RID whose last step was `after`, about to run `goto` (run to its pause when it is a review)."""
    from langgraph.types import Command

    from agent.graph import flow
    from agent.paths import project_dir

    paper = _paper()
    paper_dir = project_dir() / "papers" / paper.slug
    paper_dir.mkdir(parents=True, exist_ok=True)
    (paper_dir / "paper.json").write_text(paper.model_dump_json(), encoding="utf-8")
    spec_json, spec_md = save_spec(_spec(), project_dir() / "specs" / paper.slug, title="Demo")
    state = {
        "id": RID,
        "slug": paper.slug,
        "title": "Demo",
        "paper_json": str(paper_dir / "paper.json"),
        "spec_json": str(spec_json),
        "spec_md": str(spec_md),
        "smoke": {"metrics": {"accuracy": 0.84}, "run_dir": "smoke", "duration_s": 1.0},
        "stage": after,
        **values,
    }
    with flow.open_graph() as graph:
        config = flow.run_config(RID)
        graph.update_state(config, Command(goto=goto, update=state), as_node=after)
        if run_to_pause:
            graph.invoke(None, config)
    return state


def status(rid: str = RID) -> dict[str, Any]:
    import json

    return json.loads(cli("status", rid, "--json").stdout)


# --------------------------------------------------------------------------- item 2: bad --budget at the run review


REFUSED_BUDGETS = [
    ("seeds=0", "seeds=0"), ("seeds=-2", "seeds=-2"), ("seeds=1000000", "seeds=1000000"),
    ("wall_limit_minutes=0", "wall_limit_minutes=0"), ("seeds=2.5", "whole number"), ("seeds=inf", "finite"),
]  # fmt: skip


def test_a_refused_budget_is_one_line_and_the_run_review_stays_answerable() -> None:
    seed("review_run", "run_smoke")
    for item, says in REFUSED_BUDGETS:
        one_line_error(cli("approve", RID, "--budget", item, rc=1), says)
    assert status()["waiting"]["review"] == "run"
    # Not wedged: no stored answer is replayed; a valid answer goes through (stop ends it without running).
    cli("reject", RID, "--feedback", "enough")
    assert status()["state"] == "stopped"


def test_a_valid_budget_is_applied_to_the_spec() -> None:
    from agent.graph.review_checks import budgeted_spec

    spec = budgeted_spec(_spec(), {"seeds": 3, "wall_limit_minutes": 7})
    assert [t.seeds for t in spec.targets] == [3] and spec.budget.wall_limit_minutes == 7


# --------------------------------------------------------------------------- item 14: a blank metric


@pytest.mark.parametrize("blank", ["''", "' '"])
def test_an_edited_spec_with_a_blank_metric_is_refused(blank: str) -> None:
    text = to_markdown(_spec())
    assert "metric: accuracy" in text
    with pytest.raises(SpecError, match=r"targets\.0\.metric"):
        from_markdown(text.replace("metric: accuracy", f"metric: {blank}"))


def test_approve_edit_of_a_blank_metric_is_one_line_and_the_spec_review_stays(tmp_path: Path) -> None:
    state = seed("review_spec", "draft_spec")
    spec_md = Path(state["spec_md"])
    spec_md.write_text(spec_md.read_text(encoding="utf-8").replace("metric: accuracy", "metric: ''"), "utf-8")
    one_line_error(cli("approve", RID, "--edit", rc=1, env={"EDITOR": "", "VISUAL": ""}), "metric")
    assert status()["waiting"]["review"] == "spec"


# --------------------------------------------------------------------------- item 15: small messages


def test_approve_feedback_at_the_spec_review_is_refused_not_dropped() -> None:
    seed("review_spec", "draft_spec")
    one_line_error(cli("approve", RID, "--feedback", "use Adam", rc=1), "reject", "--feedback")
    assert status()["waiting"]["review"] == "spec"


def test_the_loser_of_two_approves_is_told_another_process_advances_it() -> None:
    from agent.graph.state import replication_dir

    seed("run_full", "review_run", run_to_pause=False)  # the winner resumed the run review and is in run_full
    folder = replication_dir(RID)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / ".advance.lock"):
        loser = one_line_error(cli("approve", RID, rc=1), "another replicate process")
        assert "resume" not in loser
        assert "another replicate process" in status()["state"]
    assert "replicate resume" in status()["state"]  # once the winner is gone (killed), resume is the way on


# --------------------------------------------------------------------------- items 5 and 7: the checkpoint database


def _checkpoint_db() -> Path:
    from agent import paths

    return paths.checkpoint_db()


def test_an_empty_checkpoint_db_is_refused_not_read_as_no_replications() -> None:
    from agent.graph.state import save_snapshot

    seed("review_run", "run_smoke")
    save_snapshot(RID, {"id": RID})
    _checkpoint_db().write_bytes(b"")
    for args in (["status"], ["status", RID], ["resume", RID]):
        one_line_error(cli(*args, rc=1), "is empty (0 bytes", "runs/<ID>/state.json (1 in")
    assert _checkpoint_db().stat().st_size == 0, "the evidence is left as it was"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_checkpoint_db_is_one_line_pointing_at_the_state_copies(damage: str) -> None:
    seed("review_run", "run_smoke")
    db = _checkpoint_db()
    if damage == "garbage":
        db.write_bytes(os.urandom(8192))
    else:
        with db.open("r+b") as handle:  # keep the header, lose the pages the tables live in
            handle.truncate(4096)
    for args in (["status"], ["approve", RID]):
        one_line_error(cli(*args, rc=1), "checkpoint database", "state.json")


def test_a_locked_checkpoint_db_is_one_line() -> None:
    import sqlite3

    seed("review_run", "run_smoke")
    holder = sqlite3.connect(_checkpoint_db(), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        # Readers pass (WAL); the answer's write waits SQLite's busy timeout, then gives up on one line.
        one_line_error(cli("reject", RID, "--feedback", "x", rc=1), "is locked by another process")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert status()["waiting"]["review"] == "run"


def test_a_read_only_home_is_one_line_for_status_and_search(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): no read-only folder to test with")
    try:
        (mnt / "index").mkdir()
        cli("status", env={"REPLICATE_HOME": str(mnt)})  # creates the checkpoint database
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        env = {"REPLICATE_HOME": str(mnt)}
        one_line_error(cli("search", "fashion", rc=1, env=env), "cannot open the paper index", "writable")
        one_line_error(cli("status", rc=1, env=env), "REPLICATE_HOME must be a writable folder")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --------------------------------------------------------------------------- item 8: binary input; item 6: --set

BINARY = bytes(range(256)) * 8  # not UTF-8 (0x80.. alone), with newlines in it


def test_a_binary_spec_md_is_one_line_at_approve_edit() -> None:
    state = seed("review_spec", "draft_spec")
    Path(state["spec_md"]).write_bytes(BINARY)
    one_line_error(cli("approve", RID, "--edit", rc=1, env={"EDITOR": "", "VISUAL": ""}), "not UTF-8 text")
    assert status()["waiting"]["review"] == "spec"


def test_a_binary_queries_file_is_one_line(tmp_path: Path) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(BINARY)
    one_line_error(cli("search", "--queries", str(queries), rc=1), "no line of", "not UTF-8")


def test_a_binary_tune_yaml_and_an_unknown_set_key_are_one_line(tmp_path: Path) -> None:
    from tests.agent.test_tune import toy_target

    target = toy_target(tmp_path / "a")
    one_line_error(cli("tune", str(target), "--budget", "1", "--set", "xx=1", rc=1), "--set xx", "known: ")
    (target / "tune.yaml").write_bytes(BINARY)
    one_line_error(cli("tune", str(target), "--budget", "1", rc=1), "tune.yaml is not readable YAML")


# --------------------------------------------------------------------------- item 4: disk full while starting

EXAMPLE_PDF = Path(__file__).resolve().parents[2] / "examples" / "fashion-mnist-xiao2017.pdf"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A tmpfs of a given size (a full disk for real, not a mock); skipped where mounting is not allowed."""
    mounts: list[Path] = []

    def mount(name: str, size: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        )
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", str(where)], check=False)


@pytest.mark.parametrize("full", ["home", "project"])
def test_disk_full_while_starting_is_one_line_and_resume_goes_on(small_disk, tmp_path: Path, full: str) -> None:
    import shutil

    disk = small_disk("disk", "100k")
    home, project = Path(os.environ["REPLICATE_HOME"]), Path(os.environ["REPLICATE_PROJECT_DIR"])
    env = {"REPLICATE_HOME": str(disk / "home")} if full == "home" else {"REPLICATE_PROJECT_DIR": str(disk / "proj")}
    started = cli(str(EXAMPLE_PDF), "--no-llm", rc=1, env=env)
    one_line_error(started, "disk", "full", "resume")
    # Free space: the same files on a disk with room.
    if full == "home":
        shutil.rmtree(home)
        shutil.copytree(disk / "home", home)
    else:
        shutil.rmtree(project)
        shutil.copytree(disk / "proj", project)
    (rid,) = [p.name for p in (project / "runs").iterdir()]
    assert status(rid)["state"] != "finished", "a replication that never ran is not 'finished'"
    cli("resume", rid)
    assert status(rid)["waiting"]["review"] == "spec"


# --------------------------------------------------------------------------- item 7: two imports of one file


def _records(path: Path, n: int) -> Path:
    import json

    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"2501.{i:05d}", "title": f"Paper {i} on learning", "abstract": f"We {i}.",
                                  "categories": "cs.LG", "update_date": "2025-01-02"}) + "\n")  # fmt: skip
    return path


def _lock_held(path: Path) -> bool:
    """Whether another process holds the OS lock (filelock takes flock on Unix) on `path`."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops the lock this probe may have taken
    return False


def _pause_while_holding(proc: subprocess.Popen, lock: Path, deadline: float) -> None:
    """SIGSTOP `proc` at a moment it holds `lock`; it holds it until SIGCONT."""
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the first import ended before it could be paused holding the lock"
        if lock.exists():
            proc.send_signal(signal.SIGSTOP)
            if _lock_held(lock):
                return
            proc.send_signal(signal.SIGCONT)  # stopped just before taking it, or between two imports' steps
        time.sleep(0.005)
    raise AssertionError("the first import never took the import lock")


def test_a_second_import_into_the_same_index_is_refused_on_one_line(tmp_path: Path) -> None:
    records = _records(tmp_path / "records.jsonl", 40_000)
    lock = Path(os.environ["REPLICATE_HOME"]) / "index" / ".import.lock"
    first = subprocess.Popen([str(REPLICATE), "index", "import", str(records)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    # Paused while it holds the lock: on a fast machine the first import ends before a second process has even
    # started (CI once saw "already imported"), so waiting for the lock file alone made this test a race.
    _pause_while_holding(first, lock, deadline=time.monotonic() + 60)
    try:
        second = cli("index", "import", str(records), rc=1)
    finally:
        first.send_signal(signal.SIGCONT)
    one_line_error(second, "another `replicate index import` is writing the index", "rerun")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0 and "Traceback" not in err, err
    again = cli("index", "import", str(records))  # after the first: the file is done, nothing stored twice
    assert "Traceback" not in again.stderr


def test_disk_full_during_an_import_is_one_line_naming_the_cause(small_disk, tmp_path: Path) -> None:
    disk = small_disk("disk", "3m")
    records = _records(tmp_path / "records.jsonl", 30_000)
    failed = cli("index", "import", str(records), rc=1, env={"REPLICATE_HOME": str(disk / "home")})
    line = one_line_error(failed, "rerun")
    assert "No space left" in line or "disk" in line, line
    assert "cannot rollback" not in line
