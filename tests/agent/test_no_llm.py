"""The researcher's path without a model, piece by piece: the spec skeleton, finding the data, the bundled example
spec, index passages as search results, and the command line's up-front checks (tests/agent/test_no_llm_flow.py
runs the whole path across processes)."""

from __future__ import annotations

import gzip
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.datafind import SYSTEM_DATASETS, DataNotFoundError, find_location, with_local_data
from agent.graph import skeleton
from agent.spec import SpecError, load_spec
from retrieval.ingest import parse_pdf

REPO = Path(__file__).resolve().parents[2]
REPLICATE = Path(sys.executable).parent / "replicate"
EXAMPLE = REPO / "examples" / "fashion_mnist_logreg"
EXAMPLE_PDF = REPO / "examples" / "fashion-mnist-xiao2017.pdf"


@pytest.fixture(scope="module")
def paper():
    return parse_pdf(EXAMPLE_PDF)  # the paper shipped in examples/: no shared data needed


def fill_yaml(text: str, heading: str, body: str) -> str:
    """spec.md with the YAML block of section `heading` replaced, as a researcher's editor would leave it."""
    pattern = re.compile(r"(^## " + re.escape(heading) + r"\s*\n.*?```yaml\n)(.*?)(```)", re.M | re.S)
    new, count = pattern.subn(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(3), text, count=1)
    assert count == 1, heading
    return new


def test_skeleton_lists_the_ledger_marks_what_is_open_and_validates_once_filled(paper, tmp_path: Path) -> None:
    from agent.graph.edited_spec import reread_edited_spec

    md = skeleton.write_skeleton(paper, tmp_path)
    text = md.read_text(encoding="utf-8")
    assert not (tmp_path / "spec.json").exists(), "a skeleton is no spec until the researcher's edit validates"
    for claim in paper.claims:  # every ledger claim is there to pick by id
        assert f"| {claim.id} |" in text
    open_marks = skeleton.unfilled(text)
    assert {"targets[0].claim_id", "targets[0].reported", "data.source", "budget.eta_minutes"} <= set(open_marks)
    with pytest.raises(SpecError, match=r"TODO marks to fill in: .*targets\[0\]\.claim_id"):
        reread_edited_spec(md, paper)

    claim = next(c for c in paper.claims if c.table == "Table 3" and c.method == "LogisticRegression")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.gz").write_bytes(b"x")
    filled = fill_yaml(text, "Objective", "Replicate one Table 3 row")
    filled = fill_yaml(filled, "Targets", yaml.safe_dump([{"claim_id": claim.id, "metric": "accuracy",
                       "direction": "max", "tolerance": 0.01, "seeds": 2, "reported": claim.value}]))  # fmt: skip
    filled = fill_yaml(filled, "Data", yaml.safe_dump({"name": "Fashion-MNIST", "source": "zalando", "location":
                       str(data), "split": "official", "split_unit": "image"}))  # fmt: skip
    filled = fill_yaml(filled, "Method", "name: LogisticRegression\ndescription: sklearn")
    filled = fill_yaml(filled, "Budget", "eta_minutes: 1\nwall_limit_minutes: 2")
    assert skeleton.unfilled(filled) == []
    md.write_text(filled, encoding="utf-8")
    spec = reread_edited_spec(md, paper)  # the skeleton's own `paper` hyperparameters pass the quote check
    assert spec.targets[0].claim_id == claim.id and spec.hyperparameters
    assert all(hp.source == "paper" and hp.quote for hp in spec.hyperparameters)

    wrong = fill_yaml(filled, "Targets", yaml.safe_dump([{"claim_id": claim.id, "metric": "accuracy",
                      "direction": "max", "tolerance": 0.01, "seeds": 2, "reported": 0.5}]))  # fmt: skip
    md.write_text(wrong, encoding="utf-8")
    with pytest.raises(SpecError, match="the ledger says"):  # the same ledger check as a model's draft
        reread_edited_spec(md, paper)


def test_a_data_location_name_is_found_where_datasets_are_kept(tmp_path: Path, monkeypatch) -> None:
    spec = load_spec(EXAMPLE / "spec.md")
    assert spec.data.location == "fashion-mnist"  # a name, so the spec travels between machines
    holder = tmp_path / "datasets"
    (holder / "fashion-mnist").mkdir(parents=True)
    (holder / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("REPLICATE_DATA", os.pathsep.join([str(empty), str(holder)]))
    assert with_local_data(spec).data.location == str((holder / "fashion-mnist").resolve())
    monkeypatch.setenv("REPLICATE_DATA", str(holder / "fashion-mnist"))  # the folder itself
    assert find_location("fashion-mnist") == (holder / "fashion-mnist").resolve()
    assert find_location(str(holder / "fashion-mnist")) == holder / "fashion-mnist"  # absolute: as it is

    if (SYSTEM_DATASETS / "fashion-mnist").is_dir():
        pytest.skip(f"{SYSTEM_DATASETS / 'fashion-mnist'} exists here: the data cannot be missing")
    monkeypatch.setenv("REPLICATE_DATA", str(empty))
    with pytest.raises(DataNotFoundError) as missing:
        with_local_data(spec)
    message = str(missing.value)
    assert "\n" not in message and f"REPLICATE_DATA ({empty})" in message and str(SYSTEM_DATASETS) in message
    assert "apt-get install dataset-fashion-mnist" in message  # the spec's own data.source says where to get it
    absolute = spec.model_copy(update={"data": spec.data.model_copy(update={"location": str(empty / "x")})})
    with pytest.raises(DataNotFoundError, match="does not exist or is empty"):
        with_local_data(absolute)


def test_the_bundled_spec_targets_table3_of_the_bundled_paper(paper, fashion_mnist_dir: Path, monkeypatch) -> None:
    from agent.graph.edited_spec import reread_edited_spec

    monkeypatch.setenv("REPLICATE_DATA", str(fashion_mnist_dir.parent))
    spec = reread_edited_spec(EXAMPLE / "spec.md", paper)  # ids, reported values and quotes match the ledger
    claims = {c.id: c for c in paper.claims}
    target = spec.targets[0]
    claim = claims[target.claim_id]
    assert claim.table == "Table 3" and claim.method == "LogisticRegression" and claim.dataset == "Fashion-MNIST"
    assert "C=1" in (claim.row or "") and "penalty=l2" in (claim.row or "") and target.reported == claim.value
    assert target.seeds >= 2  # the verdict carries seed noise
    assert spec.data.location == str(fashion_mnist_dir.resolve()) and spec.config["shuffle_train"] is True


def test_index_passages_for_a_diverged_claim_are_search_results(paper, arxiv_jsonl: Path, tmp_path: Path) -> None:
    from agent.hypotheses.related import checklist_and_passages, related_passages
    from agent.report.write import write_report
    from mlexp.compare import Verdict
    from retrieval.index import PaperIndex

    subset = tmp_path / "subset.jsonl"  # real records: every one that mentions Fashion-MNIST, plus 200 others
    with gzip.open(arxiv_jsonl, "rt", encoding="utf-8") as source, subset.open("w", encoding="utf-8") as out:
        lines = list(itertools.islice(source, 200))
        out.writelines(lines + [line for line in source if "fashion-mnist" in line.lower()])
    index = PaperIndex(tmp_path / "index")
    index.import_jsonl(subset, progress=False)
    claim = next(c for c in paper.claims if c.method == "LogisticRegression" and c.dataset == "Fashion-MNIST")
    base = {"claim_id": claim.id, "metric": "accuracy", "reported": claim.value, "measured_mean": 0.78, "n": 3,
            "gap": 0.78 - claim.value, "tolerance": 0.01}  # fmt: skip
    diverged = Verdict(**base, verdict="diverged", reason="gap beyond tolerance")
    replicated = Verdict(**{**base, "claim_id": "other"}, verdict="replicated", reason="within tolerance")

    found = related_passages(paper, [diverged, replicated], [], index, search_mode="bm25")
    assert found and len(found) <= 3 and all(h.claim_ids == [claim.id] for h in found)  # only the diverged claim
    for hit in found:
        assert hit.source == "search" and hit.support == "search result" and not hit.backed
        assert hit.statement.startswith("Search result, not a hypothesis") and hit.ablation is None
        assert hit.citations and all(c.verified for c in hit.citations)  # the passage is in the indexed text
    assert related_passages(paper, [replicated], [], index) == []  # nothing to explain
    assert related_passages(paper, [diverged], [], None) == []  # no index, no search

    mixed = checklist_and_passages(paper, None, [diverged], [], index)
    assert {h.source for h in mixed} >= {"search"}
    html, md = write_report(tmp_path / "report", paper=paper, spec=None, verdicts=[diverged], hypotheses=mixed, runs=[])
    text = md.read_text(encoding="utf-8")
    assert "· search · support: **search result**" in text and "Search result, not a hypothesis" in text
    assert ">search<" in html.read_text(encoding="utf-8")


def _replicate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPLICATE), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_missing_data_or_code_is_one_line_before_anything_is_created(tmp_path: Path) -> None:
    if (SYSTEM_DATASETS / "fashion-mnist").is_dir():
        pytest.skip(f"{SYSTEM_DATASETS / 'fashion-mnist'} exists here: the data cannot be missing")
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    project = Path(os.environ["REPLICATE_PROJECT_DIR"])
    args = [str(EXAMPLE_PDF), "--no-llm", "--spec", str(EXAMPLE / "spec.md"), "--code", str(EXAMPLE), "--auto-approve"]
    result = _replicate(*args, env={"REPLICATE_DATA": str(empty)})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("replicate: error:"), result.stderr
    assert "Fashion-MNIST is not on this machine" in lines[0] and "REPLICATE_DATA" in lines[0]
    assert "apt-get install dataset-fashion-mnist" in lines[0] and "Traceback" not in result.stderr
    assert not (project / "runs").exists() and not (project / "papers").exists()  # nothing half-started

    result = _replicate(str(EXAMPLE_PDF), "--no-llm", "--code", str(empty), env={})
    assert result.returncode == 1 and "has no train.py" in result.stderr and not (project / "runs").exists()
    (project / "train.py").write_text("print('x')\n", encoding="utf-8")  # a code folder that holds runs/
    result = _replicate(str(EXAMPLE_PDF), "--no-llm", "--code", str(project), env={})
    assert result.returncode == 1 and "holds the project's runs/ folder" in result.stderr
    result = _replicate(str(EXAMPLE_PDF), "--no-llm", "--llm", "openai:gpt-4.1", env={})
    assert result.returncode == 1 and "contradict" in result.stderr


def test_with_no_llm_configured_the_skeleton_is_the_researchers_and_it_says_so() -> None:
    result = _replicate(str(EXAMPLE_PDF), env={})  # conftest clears REPLICATE_LLM and the API keys
    assert result.returncode == 0, result.stderr
    assert "No LLM configured" in result.stderr and "--no-llm" in result.stderr
    rid = re.search(r"Replication (\S+)", result.stdout).group(1)  # type: ignore[union-attr]
    assert "(needs you)" in result.stdout and "needs you: spec.md is a skeleton" in result.stdout
    unattended = _replicate("resume", rid, "--auto-approve", env={})  # --auto-approve never fills in a skeleton
    assert unattended.returncode == 2 and "needs you" in unattended.stdout, unattended.stderr
    listing = _replicate("status", env={})
    assert rid in listing.stdout and "needs you" in listing.stdout
