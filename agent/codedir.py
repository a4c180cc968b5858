"""The file tool the LLM writes code through, confined to one code dir, and the code dir's git history.

A path the LLM asks for must be relative, free of `..`, and must resolve (symlinks included) inside the code dir.
Every path of a batch is checked before any file is written, so a batch with one bad path writes nothing: a violation
is the LLM's failure (`ConfinementError`, recorded in graph state by the node), never a half-applied change.
The code dir is a git repository: mlexp's run identity is config hash + code commit, and every fix is a commit.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath

from langchain_core.tools import StructuredTool

from agent.errors import AgentError
from mlexp import atomic

ENTRY = "train.py"  # the code dir's entry point: the harness runs `python train.py`

MAX_FILE_BYTES = 1_000_000


class ConfinementError(AgentError):
    """The LLM asked to write outside its code dir (absolute path, `..`, symlink escape) or an unusable file."""


class GitError(AgentError):
    """git failed in the code dir."""


def confined_path(code_dir: Path, relative: str) -> Path:
    """The absolute target of `relative` inside `code_dir`, or ConfinementError."""
    if not relative or not relative.strip():
        raise ConfinementError("empty file path")
    if "\x00" in relative or "\\" in relative:
        raise ConfinementError(f"file path {relative!r} has a NUL or a backslash")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("~"):
        raise ConfinementError(f"file path {relative!r} is absolute; paths must be relative to the code dir")
    if ".." in pure.parts:
        raise ConfinementError(f"file path {relative!r} contains '..'; paths must stay inside the code dir")
    if pure.parts and pure.parts[0] == ".git":
        raise ConfinementError(f"file path {relative!r} is inside .git")
    root = code_dir.resolve()
    target = (root / pure).resolve()  # follows symlinks already in the tree
    if target != root and root not in target.parents:
        raise ConfinementError(f"file path {relative!r} resolves outside the code dir (symlink escape)")
    return target


def write_files(code_dir: Path, files: list[tuple[str, str]]) -> list[str]:
    """Check every path, then write each file atomically. Returns the relative paths written."""
    code_dir.mkdir(parents=True, exist_ok=True)
    targets = []
    for relative, content in files:
        if len(content.encode("utf-8")) > MAX_FILE_BYTES:
            raise ConfinementError(f"file {relative!r} is larger than {MAX_FILE_BYTES} bytes")
        targets.append((relative, confined_path(code_dir, relative), content))
    for _, target, content in targets:
        atomic.write_text(target, content)
    return [relative for relative, _, _ in targets]


def make_write_file_tool(code_dir: Path) -> StructuredTool:
    """The same confinement as a LangChain tool, for tool-calling models."""

    def write_file(path: str, content: str) -> str:
        """Write one file of the experiment code, at a path relative to the code dir."""
        try:
            write_files(code_dir, [(path, content)])
        except ConfinementError as exc:
            return f"refused: {exc}"
        return f"wrote {path}"

    return StructuredTool.from_function(write_file, name="write_file")


# --------------------------------------------------------------------------- git


def git(code_dir: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "replicate-agent",
        "GIT_AUTHOR_EMAIL": "agent@replicate.local",
        "GIT_COMMITTER_NAME": "replicate-agent",
        "GIT_COMMITTER_EMAIL": "agent@replicate.local",
    }
    result = subprocess.run(["git", *args], cwd=code_dir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {code_dir}: {result.stderr.strip()}")
    return result.stdout


def ensure_repo(code_dir: Path) -> None:
    code_dir.mkdir(parents=True, exist_ok=True)
    if not (code_dir / ".git").exists():
        git(code_dir, "init", "-q", "-b", "main")
        (code_dir / ".gitignore").write_text("__pycache__/\n*.pyc\n", encoding="utf-8")


def commit_all(code_dir: Path, message: str) -> str | None:
    """Commit every change; returns the new commit, or None when nothing changed (a re-run node commits nothing)."""
    git(code_dir, "add", "-A")
    if not git(code_dir, "status", "--porcelain").strip():
        return None
    git(code_dir, "commit", "-q", "-m", message)
    return head(code_dir)


def head(code_dir: Path) -> str | None:
    try:
        return git(code_dir, "rev-parse", "HEAD").strip()
    except GitError:
        return None


def first_commit(code_dir: Path) -> str | None:
    try:
        return git(code_dir, "rev-list", "--max-parents=0", "HEAD").split()[0]
    except (GitError, IndexError):
        return None


def diff_since_first(code_dir: Path, *, max_chars: int = 20_000) -> str:
    first = first_commit(code_dir)
    if first is None:
        return "(no commits yet)"
    text = git(code_dir, "diff", first, "HEAD") or "(no changes since the first implementation)"
    return text if len(text) <= max_chars else text[:max_chars] + "\n... (diff truncated)"


def read_code(code_dir: Path, *, max_chars: int = 40_000) -> str:
    """The tracked text files of the code dir, concatenated, for a prompt."""
    parts, total = [], 0
    for path in sorted(code_dir.rglob("*")):
        if ".git" in path.parts or not path.is_file() or path.suffix in {".pyc"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        block = f"--- {path.relative_to(code_dir)}\n{text}"
        if total + len(block) > max_chars:
            parts.append(f"--- {path.relative_to(code_dir)} (omitted: prompt size limit)")
            continue
        parts.append(block)
        total += len(block)
    return "\n".join(parts) or "(empty)"
