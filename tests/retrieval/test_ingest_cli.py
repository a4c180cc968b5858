"""`replicate ingest`: one-line errors and exit 1 on bad input (through the real console script), the output
folder and --json.

The bad inputs run as parallel subprocesses: each pays the CLI's start-up time, and they do not depend on each
other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pdfgen

REPLICATE = Path(sys.executable).with_name("replicate")


def _env() -> dict[str, str]:
    # The autouse conftest fixture has pointed these at this test's temp dirs.
    env = dict(os.environ)
    env.pop("REPLICATE_DEBUG", None)
    return env


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(REPLICATE), "ingest", *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def project() -> Path:
    return Path(os.environ["REPLICATE_PROJECT_DIR"])


def test_bad_inputs_exit_nonzero_with_one_line_and_write_nothing(tmp_path, project):
    if not REPLICATE.exists():
        pytest.skip(f"console script not installed at {REPLICATE}")
    inputs = {
        "not a PDF": tmp_path / "notes.pdf",
        "encrypted": tmp_path / "locked.pdf",
        "no text layer": tmp_path / "scan.pdf",
        "truncated": tmp_path / "cut.pdf",
        "empty file": tmp_path / "zero.pdf",
        "is a directory": tmp_path / "folder.pdf",
    }
    inputs["not a PDF"].write_text("%!PS-Adobe-3.0\nthis is PostScript, not PDF\n")
    pdfgen.encrypted_pdf(inputs["encrypted"])
    pdfgen.scanned_pdf(inputs["no text layer"])
    pdfgen.truncated_pdf(pdfgen.results_paper(tmp_path / "whole.pdf"), inputs["truncated"])
    inputs["empty file"].write_bytes(b"")
    inputs["is a directory"].mkdir()
    running = {reason: _start(str(path)) for reason, path in inputs.items()}
    for reason, proc in running.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, (reason, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (reason, err)
        assert lines[0].startswith("replicate: error: ") and reason in lines[0], (reason, lines[0])
        assert "Traceback" not in err and out == ""
    papers = project / "papers"
    assert not papers.exists() or list(papers.iterdir()) == []  # no partial papers/<slug>/ and no temp folders


def test_ingest_writes_paper_and_prints_json(tmp_path, project):
    # In-process through typer's runner: the success path needs no second interpreter start-up.
    from typer.testing import CliRunner

    from agent.cli import app

    pdf = pdfgen.results_paper(tmp_path / "gated-mixers.pdf")
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(pdf)])
    assert result.exit_code == 0, result.output
    assert "3 tables" in result.output and "claims" in result.output
    folder = project / "papers" / "gated-mixers"
    assert (folder / "paper.json").is_file() and (folder / "paper.md").is_file()
    out_dir = tmp_path / "elsewhere"
    result = runner.invoke(app, ["ingest", str(pdf), "--json", "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["slug"] == "gated-mixers" and record["title"] == pdfgen.TITLE
    assert json.loads((out_dir / "gated-mixers" / "paper.json").read_text())["claims"] == record["claims"]


def test_missing_file_through_main(tmp_path, capsys):
    # `agent.cli.main` is the console script's entry point; in-process here to spare another interpreter start.
    from agent.cli import main

    with pytest.raises(SystemExit) as info:
        main(["ingest", str(tmp_path / "missing.pdf")])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("replicate: error: ") and "no such file" in err[0]
