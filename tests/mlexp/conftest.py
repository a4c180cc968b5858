"""Tests that start harness runs need bubblewrap (every run is sandboxed by default; .ci/run installs it).

Where bwrap is missing or cannot create namespaces here, those tests skip with the reason instead of failing on the
machine's set-up; the rest of the mlexp suite still runs.
"""

from __future__ import annotations

import pytest

from mlexp.errors import SandboxError
from mlexp.sandbox import find_bwrap

# Modules (and single tests) that start harness runs.
RUNS_SCRIPTS = {"test_compare_fashion", "test_mlexp_badinput", "test_mlexp_e2e", "test_mlexp_ray", "test_mlexp_runner",
                "test_sandbox_attacks"}  # fmt: skip
RUNS_SCRIPTS_TESTS = {"test_a_no_sandbox_run_that_edits_a_protected_file_fails_its_check"}
WORKS_WITHOUT = {"test_without_bwrap_the_run_refuses_with_one_line"}  # hides bwrap itself


def _why_no_sandbox() -> str:
    try:
        find_bwrap()
    except SandboxError as exc:
        return str(exc)
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = _why_no_sandbox()
    if not why:
        return
    skip = pytest.mark.skip(reason=f"harness runs are sandboxed and {why}")
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        name = getattr(item, "originalname", item.name)
        if (module in RUNS_SCRIPTS or name in RUNS_SCRIPTS_TESTS) and name not in WORKS_WITHOUT:
            item.add_marker(skip)
