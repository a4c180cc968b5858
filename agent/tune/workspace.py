"""The tune workspace: the experiment's own git repository, one commit per code change, nothing ever lost.

The target folder is copied into `<tune dir>/work` (cloned, if the folder is itself the top of a git repository, so its
history comes along) on a branch `tune` whose tip is always the incumbent. Each trial gets its own git worktree under
`<tune dir>/trials/trial-NNN`, checked out at the incumbent it was proposed against; its code edits are committed
there and tagged `trial-NNN`, so trials can run side by side and the run's code identity is that commit. A kept trial
moves the `tune` branch to its commit; a discarded one leaves the branch at the incumbent, which is a clean reset,
and its commit stays reachable through its tag (`git show trial-007`, `git diff baseline trial-007`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from agent.codedir import ConfinementError, GitError, confined_path, git
from agent.tune.target import TuneError
from mlexp import atomic

BRANCH = "tune"
IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", "runs", ".ruff_cache")


class CodeEdit(BaseModel):
    """One edit of one file: replace the exact text `search` (which must occur exactly once) by `replace`.

    `search` empty means: write `replace` as the whole file (a new file, or a full rewrite).
    """

    path: str
    search: str = ""
    replace: str


class EditError(TuneError):
    """A proposed code edit cannot be applied (text not found, ambiguous, protected or escaping path)."""


@dataclass
class TrialTree:
    name: str  # trial-NNN
    path: Path
    base: str  # the incumbent commit it starts from


class Workspace:
    def __init__(self, tune_dir: Path):
        self.tune_dir = Path(tune_dir)
        self.repo = self.tune_dir / "work"
        self.trials = self.tune_dir / "trials"

    # -- setup -----------------------------------------------------------------------------------------------------
    def create(self, source: Path) -> str:
        """Copy (or clone) the target into work/, commit it as the baseline, tag it `baseline`. Returns the commit."""
        source = Path(source).resolve()
        if self.repo.exists():
            raise TuneError(f"tune workspace already exists: {self.repo} (choose another --out)")
        self.tune_dir.mkdir(parents=True, exist_ok=True)
        top = _git_top(source)
        if top is not None and top == source:
            git(self.tune_dir, "clone", "-q", "--no-hardlinks", str(source), str(self.repo))
            git(self.repo, "checkout", "-q", "-B", BRANCH)
            # uncommitted work in the user's checkout is part of what they asked to tune: bring it along
            shutil.copytree(source, self.repo, ignore=IGNORE, dirs_exist_ok=True)
        else:
            shutil.copytree(source, self.repo, ignore=IGNORE)
            git(self.repo, "init", "-q", "-b", BRANCH)
        ignore = self.repo / ".gitignore"
        if not ignore.exists():
            ignore.write_text("__pycache__/\n*.pyc\n", encoding="utf-8")
        git(self.repo, "add", "-A")
        if git(self.repo, "status", "--porcelain").strip():
            git(self.repo, "commit", "-q", "-m", f"tune baseline: {source.name}")
        commit = self.head()
        git(self.repo, "tag", "-f", "baseline", commit)
        return commit

    def head(self) -> str:
        return git(self.repo, "rev-parse", BRANCH).strip()

    # -- trials ----------------------------------------------------------------------------------------------------
    def open_trial(self, number: int, base: str, *, name: str | None = None) -> TrialTree:
        name = name or f"trial-{number:03d}"
        path = self.trials / name / "code"
        if path.exists():
            self.close_trial(TrialTree(name, path, base))
        path.parent.mkdir(parents=True, exist_ok=True)
        git(self.repo, "worktree", "add", "-q", "--detach", str(path), base)
        return TrialTree(name, path, base)

    def apply_edits(self, tree: TrialTree, edits: list[CodeEdit], protected: list[str]) -> list[str]:
        """Apply every edit or none (all are checked first). Returns the files changed."""
        planned: dict[Path, str] = {}
        names: list[str] = []
        for edit in edits:
            try:
                target = confined_path(tree.path, edit.path)
            except ConfinementError as exc:
                raise EditError(str(exc)) from exc
            rel = target.relative_to(tree.path.resolve()).as_posix()
            if rel in protected:
                raise EditError(f"edit touches the protected evaluation file {rel}")
            current = planned.get(target)
            if current is None:
                current = target.read_text(encoding="utf-8") if target.is_file() else None
            if edit.search:
                if current is None:
                    raise EditError(f"{rel} does not exist; an edit with `search` needs an existing file")
                count = current.count(edit.search)
                if count != 1:
                    raise EditError(f"{rel}: the search text occurs {count} times, it must occur exactly once")
                planned[target] = current.replace(edit.search, edit.replace, 1)
            else:
                planned[target] = edit.replace
            names.append(rel)
        for target, text in planned.items():
            atomic.write_text(target, text)
        return sorted(set(names))

    def commit_trial(self, tree: TrialTree, message: str) -> str:
        """Commit the trial's changes (if any) and tag the trial's commit `trial-NNN`. Returns the commit."""
        git(tree.path, "add", "-A")
        if git(tree.path, "status", "--porcelain").strip():
            git(tree.path, "commit", "-q", "-m", message)
        commit = git(tree.path, "rev-parse", "HEAD").strip()
        git(self.repo, "tag", "-f", tree.name, commit)
        return commit

    def diff(self, base: str, commit: str, *, max_chars: int = 6000) -> str:
        text = git(self.repo, "diff", base, commit)
        return text if len(text) <= max_chars else text[:max_chars] + "\n... (diff truncated)"

    def settle(self, tree: TrialTree, commit: str, verdict: Literal["keep", "discard"]) -> None:
        """Keep: the tune branch (and work/) move to the trial's commit. Discard: they stay at the incumbent."""
        if verdict == "keep":
            git(self.repo, "reset", "-q", "--hard", commit)

    def close_trial(self, tree: TrialTree) -> None:
        try:
            git(self.repo, "worktree", "remove", "--force", str(tree.path))
        except GitError:
            shutil.rmtree(tree.path, ignore_errors=True)
            git(self.repo, "worktree", "prune")
        try:
            tree.path.parent.rmdir()  # trials/trial-NNN/, empty once its worktree is gone
        except OSError:
            pass

    def log(self) -> str:
        return git(self.repo, "log", "--oneline", "--decorate", BRANCH)


def _git_top(path: Path) -> Path | None:
    try:
        return Path(git(path, "rev-parse", "--show-toplevel").strip()).resolve()
    except (GitError, OSError):
        return None
