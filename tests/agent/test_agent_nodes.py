"""Single nodes, run directly: find_related against a real (small) paper index, and an empty index."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

from agent import paths
from agent.graph.nodes.spec import find_related, ingest_paper


def _ingested_state(fashion_pdf: Path) -> dict:
    state = {"id": "t-1", "pdf": str(fashion_pdf), "warnings": []}
    command = ingest_paper(state, {})
    assert command.goto == "find_related"
    return {**state, **command.update}


def test_find_related_keeps_hits_with_quotes(fashion_pdf: Path, arxiv_jsonl: Path, tmp_path: Path) -> None:
    # A real subset of the shared arXiv snapshot: every record that mentions Fashion-MNIST, plus 300 others.
    subset = tmp_path / "subset.jsonl"
    with gzip.open(arxiv_jsonl, "rt", encoding="utf-8") as source, subset.open("w", encoding="utf-8") as out:
        lines = list(itertools.islice(source, 300))
        lines += [line for line in source if "fashion-mnist" in line.lower()]
        out.writelines(lines)
    from retrieval.index import PaperIndex

    PaperIndex(paths.index_dir()).import_jsonl(subset, progress=False)
    state = _ingested_state(fashion_pdf)
    command = find_related(state, {})
    assert command.goto == "draft_spec"
    related = command.update["related"]
    assert related and all(hit["quote"].strip() for hit in related)
    assert len({hit["id"] for hit in related}) == len(related)
    assert {hit["purpose"] for hit in related} >= {"method"}
    assert any("fashion" in (hit["title"] + hit["quote"]).lower() for hit in related)
    assert not any("index" in w for w in command.update["warnings"])


def test_find_related_with_an_empty_index_warns(fashion_pdf: Path) -> None:
    from retrieval.index import PaperIndex

    PaperIndex(paths.index_dir())  # creates the (empty) index on disk
    state = _ingested_state(fashion_pdf)
    command = find_related(state, {})
    assert command.goto == "draft_spec" and command.update["related"] == []
    assert any("empty" in w or "no paper index" in w for w in command.update["warnings"]), command.update["warnings"]


def _spec_file(tmp_path: Path) -> Path:
    from agent.spec import Spec, save_spec

    spec = Spec.model_validate(
        {
            "paper_slug": "demo",
            "objective": "demo",
            "targets": [{"claim_id": "c1", "metric": "accuracy", "direction": "max", "tolerance": 0.01, "seeds": 1,
                         "reported": 0.8}],
            "data": {"name": "Fashion-MNIST", "source": "zalando", "location": str(tmp_path / "nowhere"),
                     "split": "official", "split_unit": "image"},
            "method": {"name": "LogisticRegression", "description": "sklearn"},
            "budget": {"eta_minutes": 1, "wall_limit_minutes": 2},
        }
    )  # fmt: skip
    json_path, _ = save_spec(spec, tmp_path / "spec")
    return json_path


def test_implement_code_without_data_stops_and_asks(tmp_path: Path) -> None:
    import json

    from agent.graph.nodes.code import implement_code
    from agent.graph.state import code_dir

    script = tmp_path / "script.json"
    reply = {"files": [], "notes": "", "data_available": False, "question": "The data needs a login: where is it?"}
    script.write_text(json.dumps({"implement_code": [reply]}), encoding="utf-8")
    state = {"id": "t-data", "spec_json": str(_spec_file(tmp_path)), "failures": []}
    command = implement_code(state, {"configurable": {"llm": f"scripted:{script}"}})
    assert command.goto == "ask_researcher"
    assert command.update["question"]["retry"] == "implement_code"
    assert "needs a login" in command.update["question"]["question"]
    assert [f["kind"] for f in command.update["failures"]] == ["data_unavailable"]
    assert not (code_dir("t-data") / "train.py").exists()


def test_smoke_run_that_cannot_read_the_data_asks_instead_of_fixing(tmp_path: Path) -> None:
    from agent import codedir
    from agent.graph.nodes.code import run_smoke
    from agent.graph.state import code_dir

    state = {"id": "t-smoke", "spec_json": str(_spec_file(tmp_path)), "failures": [], "fix_attempts": 0}
    code = code_dir("t-smoke")
    codedir.ensure_repo(code)
    script = (
        "import sys\nfrom mlexp.log import RunLogger\nlog = RunLogger()\ndata = log.config['data_dir']\n"
        "print(f'DATA_UNAVAILABLE: {data} does not exist', flush=True)\nsys.exit(3)\n"
    )
    codedir.write_files(code, [("train.py", script)])
    codedir.commit_all(code, "implement_code: reads the data")
    command = run_smoke(state, {})
    assert command.goto == "ask_researcher", command.update
    assert command.update["smoke"]["status"] == "failed"
    assert [f["kind"] for f in command.update["failures"]] == ["data_unavailable"]
    assert "synthetic" in command.update["question"]["question"]


def test_llm_serve_without_vllm_or_gpu_is_a_clear_error() -> None:
    from typer.testing import CliRunner

    from agent.cli import app
    from agent.errors import AgentError

    result = CliRunner().invoke(app, ["llm", "serve", "Qwen/Qwen2.5-7B-Instruct"])
    assert isinstance(result.exception, AgentError)
    assert "vllm is not installed" in str(result.exception) or "no NVIDIA GPU" in str(result.exception)


def test_code_that_makes_up_data_is_refused_and_retried(tmp_path: Path) -> None:
    import json

    from agent.graph.nodes.code import implement_code
    from agent.graph.state import code_dir, llm_log_dir

    synthetic = "from sklearn.datasets import make_classification\nX, y = make_classification(1000)\n"
    real = "# never make_classification here\nimport gzip\nprint(gzip.open)\n"
    replies = [
        {"files": [{"path": "train.py", "content": synthetic}], "notes": "data download failed, using synthetic"},
        {"files": [{"path": "train.py", "content": real}], "notes": "reads the IDX files"},
    ]
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"implement_code": replies}), encoding="utf-8")
    state = {"id": "t-synth", "spec_json": str(_spec_file(tmp_path)), "failures": []}
    command = implement_code(state, {"configurable": {"llm": f"scripted:{script}"}})
    assert command.goto == "run_smoke"
    assert (code_dir("t-synth") / "train.py").read_text() == real
    first = sorted(llm_log_dir("t-synth").glob("*.txt"))[0].read_text()
    assert "valid: no" in first and "generates synthetic data (train.py:1 uses make_classification; train.py:2" in first
