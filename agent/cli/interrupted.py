"""Why a replication stands between two steps: another process is advancing it now, the last LLM call failed at
the endpoint (dead server, timeout), or the process was killed. `replicate status` says which, not only
"interrupted"."""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from agent.graph.state import llm_log_dir, replication_dir

HELD: set[str] = set()  # replications this process advances (agent.cli.flow._exclusive): not "another process"


def advancing_now(rid: str) -> bool:
    """True while another process holds the replication's advance lock (agent.cli.flow._exclusive)."""
    path = replication_dir(rid) / ".advance.lock"
    if rid in HELD or not path.exists():
        return False
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def last_call_failure(rid: str) -> str | None:
    """The error of the replication's last logged LLM call when it got no reply from the endpoint, else None."""
    logs = sorted(Path(llm_log_dir(rid)).glob("[0-9][0-9][0-9][0-9]-*.txt"))
    if not logs:
        return None
    text = logs[-1].read_text(encoding="utf-8", errors="replace")
    output = text.split("=== OUTPUT ===", 1)[-1].split("=== METADATA ===", 1)[0].strip()
    if not output.startswith("(no reply"):
        return None
    for line in text.split("=== METADATA ===", 1)[-1].splitlines():
        if line.startswith("error: "):
            return " ".join(line[len("error: ") :].split())[:240]
    return None


def interrupted_state(rid: str, next_nodes: list[str]) -> str:
    where = ", ".join(next_nodes)
    if advancing_now(rid):
        return f"running: another replicate process is advancing it now (at {where}); wait for it to pause"
    failure = last_call_failure(rid)
    if failure:
        return f"interrupted before {where}: the last LLM call failed ({failure}); `replicate resume {rid}` retries"
    return f"interrupted before {where} (the process stopped or was killed; run `replicate resume {rid}`)"
