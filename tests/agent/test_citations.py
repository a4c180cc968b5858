"""Citation checks: quotes must really be in the cited paper's indexed text, and a scripted LLM that cites an id not in
the index, or misquotes a real paper, is caught (its hypothesis is shown as unsupported, never as backed).

Real material: a slice of the shared arXiv metadata (BM25-only PaperIndex, no embeddings, so it stays fast) and the
text of the Fashion-MNIST PDF.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
from pathlib import Path

import pytest

from agent.hypotheses.citations import TextIndex, check_citation, check_quote_in_text, verify_citation
from agent.quotes import normalize_text

CITED_ID = "2309.03965"  # "Improving Resnet-9 Generalization Trained on Small Datasets", in the first 40 records


def test_normalisation_forgives_layout_not_words():
    text = "The MNIST dataset has become the most widely used test-\nbed in deep learning, sur-\npassing CIFAR."
    assert normalize_text("Tech-\nniques") == normalize_text("techniques")
    assert normalize_text("ﬁrst “quoted” Naïve") == normalize_text('first "quoted" naive')
    ok = check_quote_in_text(text, "the MOST widely   used testbed in deep learning, surpassing CIFAR")
    assert ok.ok, ok.reason
    assert check_quote_in_text(text, "the MNIST dataset has become ... used test-bed in deep learning").ok
    # Fragments must keep their order; a changed word or a too-short quote fails.
    assert not check_quote_in_text(text, "used testbed in deep learning ... The MNIST dataset has become").ok
    bad = check_quote_in_text(text, "the most widely used testbed in machine learning")
    assert not bad.ok and "not found" in bad.reason
    assert "too short" in check_quote_in_text(text, "deep learning").reason


def test_quotes_from_the_fashion_mnist_pdf(fashion_pdf: Path):
    import pymupdf

    with pymupdf.open(fashion_pdf) as doc:
        text = "\n".join(page.get_text() for page in doc)
    sources = TextIndex({"xiao2017": text})
    # Printed across a line break with hyphenation ("sim-\nple") and the "ﬁ" ligature in "first".
    quote = "Despite the fact that today deep learning can do so much the simple MNIST dataset has become the most"
    assert verify_citation(sources, "xiao2017", quote)
    assert verify_citation(
        sources, "xiao2017", "The MNIST dataset comprising of 10-class handwritten digits, was first"
    )
    assert verify_citation(sources, "xiao2017", "All algorithms are repeated 5 times by shuffling the training data")
    assert not verify_citation(
        sources, "xiao2017", "All algorithms are repeated 10 times by shuffling the training data"
    )
    assert not verify_citation(sources, "other-paper", quote)


@pytest.fixture
def small_index(arxiv_jsonl: Path, tmp_path: Path):
    from retrieval import PaperIndex

    with gzip.open(arxiv_jsonl, "rb") as fh:
        lines = list(itertools.islice(fh, 0, 40))
    path = tmp_path / "slice.jsonl.gz"
    with gzip.open(path, "wb") as out:
        out.writelines(lines)
    index = PaperIndex(tmp_path / "index")
    index.import_jsonl(path, progress=False)
    records = {r["id"]: r for r in (json.loads(line) for line in lines)}
    yield index, records
    index.close()


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if len(s.split()) >= 8]


def test_verify_against_a_real_paper_index(small_index):
    index, records = small_index
    abstract = records[CITED_ID]["abstract"]
    sentence = _sentences(abstract)[0]
    assert verify_citation(index, CITED_ID, sentence)
    assert verify_citation(index, CITED_ID, sentence.upper().replace(" ", "\n  "))  # case and whitespace
    assert verify_citation(index, f"arXiv:{CITED_ID}v2", sentence)  # prefix and version suffix
    assert not verify_citation(index, "9999.99999", sentence)  # not in the index
    assert "not in the index" in check_citation(index, "9999.99999", sentence).reason
    words = sentence.split()
    misquote = " ".join(words[:3] + ["never"] + words[3:])
    assert not verify_citation(index, CITED_ID, misquote)
    other = next(rid for rid in records if rid != CITED_ID)
    assert not verify_citation(index, other, sentence)  # real quote, wrong paper
    assert not verify_citation(None, CITED_ID, sentence)


def test_scripted_llm_citations_are_checked(small_index, tmp_path: Path):
    """A scripted LLM proposes three hypotheses: one with a real quote from an indexed paper, one citing an id that
    is not in the index, one misquoting a real paper. Only the first may be shown as backed."""
    from agent.hypotheses.literature import propose_hypotheses
    from agent.llm.seam import load_chat_model
    from mlexp import RunRecord
    from mlexp.compare import compare

    index, records = small_index
    sentence = _sentences(records[CITED_ID]["abstract"])[0]
    words = sentence.split()
    misquote = " ".join(words[: len(words) // 2] + ["significantly", "worse"] + words[len(words) // 2 :])
    run_dir = tmp_path / "runs" / "r0"
    run_dir.mkdir(parents=True)
    config = {"n_train": 6000, "steps": 5, "iters_per_step": 20, "C": 1.0}
    runs = [
        RunRecord(
            identity=f"id{s}",
            name="fm",
            status="completed",
            run_dir=str(run_dir),
            seed=s,
            metrics={"accuracy": a},
            config={**config, "seed": s, "smoke": False},
        )  # fmt: skip
        for s, a in enumerate([0.801, 0.803, 0.799])
    ]
    target = {"claim_id": "T3-lr", "metric": "accuracy", "direction": "max", "tolerance": 0.01, "seeds": 3,
              "reported": 0.841, "reported_std": None}  # fmt: skip
    verdicts = compare([target], runs)
    assert verdicts[0].verdict == "diverged"

    def hyp(statement, citation, change):
        return {"statement": statement, "claim_ids": ["T3-lr"], "evidence": ["accuracy 0.80 vs 0.841"],
                "citations": [citation], "priority": "high",
                "ablation": {"change": change, "expected_direction": "increase", "metric": "accuracy"}}  # fmt: skip

    script = {
        "hypothesis_queries": [{"queries": ["small dataset image classification generalization"]}],
        "hypotheses": [
            {
                "hypotheses": [
                    hyp(
                        "Small training sets hurt accuracy",
                        {"paper_id": CITED_ID, "quote": sentence},
                        {"n_train": 60000},
                    ),
                    hyp("Invented support", {"paper_id": "2999.00001", "quote": sentence}, {"C": 10.0}),
                    hyp("Misquoted support", {"paper_id": CITED_ID, "quote": misquote}, {"steps": 10}),
                ]
            }
        ],
    }
    script_path = tmp_path / "script.json"
    script_path.write_text(json.dumps(script))
    model = load_chat_model(f"scripted:{script_path}")
    log_dir = tmp_path / "llm_logs"
    out = propose_hypotheses(model, None, None, verdicts, runs, index, log_dir=log_dir, search_mode="bm25")
    by_statement = {h.statement: h for h in out if h.source == "llm"}
    good, invented, misquoted = (by_statement[s] for s in ("Small training sets hurt accuracy", "Invented support",
                                                          "Misquoted support"))  # fmt: skip
    assert good.support == "backed" and good.backed and good.citations[0].verified
    assert good.citations[0].title  # the hit's title, from the index search
    assert invented.support == "unsupported" and not invented.backed and not invented.citations
    assert "not in the index" in invented.rejected_citations[0].note
    assert misquoted.support == "unsupported" and not misquoted.backed
    assert "passage not found" in misquoted.rejected_citations[0].note
    # Every LLM call was logged as plain text.
    logs = sorted(p.name for p in log_dir.glob("*.txt"))
    assert any("hypothesis_queries" in n for n in logs) and any("-hypotheses-" in n for n in logs)
    # With drop_unsupported the two bad ones disappear altogether.
    script_path.with_name(script_path.name + ".cursor.json").unlink()
    kept = propose_hypotheses(
        model, None, None, verdicts, runs, index, log_dir=log_dir, drop_unsupported=True, search_mode="bm25"
    )
    assert [h.statement for h in kept if h.source == "llm"] == ["Small training sets hurt accuracy"]


def test_llm_ablation_with_unknown_config_key_is_sent_back(tmp_path: Path):
    """An ablation that changes a key the run config does not have is not concrete: the reply is rejected and the
    model asked again (the retry is in the log); its second answer is used."""
    from agent.hypotheses.literature import propose_hypotheses
    from agent.llm.seam import load_chat_model
    from mlexp import RunRecord
    from mlexp.compare import compare

    runs = [RunRecord(identity="a", name="fm", status="completed", run_dir=str(tmp_path), metrics={"accuracy": 0.70},
                      config={"steps": 5, "seed": 0})]  # fmt: skip
    verdicts = compare([{"claim_id": "c", "metric": "accuracy", "direction": "max", "tolerance": 0.01, "seeds": 1,
                         "reported": 0.84}], runs)  # fmt: skip
    bad = {"hypotheses": [{"statement": "x", "ablation": {"change": {"learning_rate": 0.1}}}]}
    good = {"hypotheses": [{"statement": "train longer", "ablation": {"change": {"steps": 50},
                                                                     "expected_direction": "increase"}}]}  # fmt: skip
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"hypotheses": [bad, good]}))
    out = propose_hypotheses(load_chat_model(f"scripted:{script}"), None, None, verdicts, runs, None, log_dir=tmp_path)
    llm = [h for h in out if h.source == "llm"]
    assert [h.ablation.change for h in llm] == [{"steps": 50}]
    assert llm[0].support == "no literature"
    attempts = sorted(tmp_path.glob("*-hypotheses-attempt*.txt"))
    assert len(attempts) == 2 and "not in the run config" in attempts[0].read_text()
