"""The context budget over rendered prompts, with the scripted model behind the seam: the model reads the paper (the
Fashion-MNIST method and experiments sections are in draft_spec's input), every prompt fits a 4,096-token window and
says what it left out, a left-out section asked for by name comes in one follow-up call, and a prompt that cannot
fit is refused in one line before any call."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent.graph.nodes.code import CodeChange
from agent.graph.nodes.spec import draft_spec, ingest_paper
from agent.llm import budget, prompts, seam
from agent.llm.endpoint import PromptTooLargeError
from agent.spec import Spec
from retrieval.ingest import parse_pdf
from retrieval.paper_view import build_view


class Loose(BaseModel):
    """A stand-in reply schema for the prompts whose own schema is small."""

    queries: list[str] = []


SCHEMAS: dict[str, type[BaseModel]] = {"draft_spec": Spec, "implement_code": CodeChange, "fix_code": CodeChange}


def _state(fashion_pdf: Path, rid: str) -> dict[str, Any]:
    state: dict[str, Any] = {"id": rid, "pdf": str(fashion_pdf), "warnings": [], "related": []}
    return {**state, **ingest_paper(state, {}).update}


def _script(tmp_path: Path, replies: dict[str, list[Any]]) -> dict[str, Any]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(replies), encoding="utf-8")
    return {"configurable": {"llm": f"scripted:{script}"}}


def _inputs(log_dir: Path, prompt: str) -> list[tuple[str, dict[str, str]]]:
    """(input text, metadata) of every logged call of `prompt`, in order."""
    found = []
    for path in sorted(log_dir.glob(f"0*-{prompt}-*.txt")):
        text = path.read_text(encoding="utf-8")
        head, _, meta = text.partition("=== METADATA ===")
        fields = dict(line.split(": ", 1) for line in meta.strip().splitlines() if ": " in line)
        found.append((head.split("=== OUTPUT ===")[0], fields))
    return found


def test_draft_spec_input_holds_the_fashion_method_and_experiments(tmp_path, fashion_pdf) -> None:
    state = _state(fashion_pdf, "t-view")
    config = _script(tmp_path, {"*": ["not json"] * 3})
    assert draft_spec(state, config).goto == "ask_researcher"  # the replies are junk; the input is what we test
    text, meta = _inputs(tmp_path / "project" / "runs" / "t-view" / "llm_logs", "draft_spec")[0]
    flat = re.sub(r"\s+", " ", text)
    assert "## Fashion-MNIST Dataset [pp. 2–3]" in text  # the dataset paper's method: how the data was built
    assert "The training set receives a randomly-selected 6, 000 examples from each class" in flat
    assert "All algorithms are repeated 5 times by shuffling the training data" in flat
    assert "| Classifier | Parameter | Test Accuracy / Fashion | Test Accuracy / MNIST |" in text
    assert "Left out to fit" not in text and meta["left_out"] == "-"  # the scripted model's window is large


def _variables(prompt: str, paper: Any) -> dict[str, Any]:
    """Every placeholder of `prompt`: the paper parts where it has them, long texts where they may be long."""
    policy = budget.TEXT_POLICY.get(prompt, {})
    values: dict[str, Any] = {}
    for name in prompts.placeholders(prompts.PROMPTS[prompt]):
        if name == "paper":
            values[name] = budget.PaperText(build_view(paper))
        elif name == "claims":
            values[name] = budget.Ledger(list(paper.claims))
        elif name in policy:
            values[name] = f"{name} line with some words and 0.123 numbers\n" * 2000  # ~100k characters
        else:
            values[name] = "short"
    return values


@pytest.mark.parametrize("prompt", sorted(prompts.PROMPTS))
def test_every_prompt_fits_4096_and_names_what_it_left_out(prompt, fashion_pdf) -> None:
    paper = parse_pdf(fashion_pdf)
    counter = budget.TokenCounter.for_model("local-model")
    schema = SCHEMAS.get(prompt, Loose)

    def build(values: dict[str, str], note: str) -> list:
        return seam.first_messages(prompt, prompts.PROMPTS[prompt], values, schema, note=note)

    window = budget.Window(4096, "test")
    fitted = budget.fit(prompt, _variables(prompt, paper), build, counter=counter, window=window, model="local")
    sent = counter.count_messages(fitted.messages)
    assert sent + fitted.max_tokens <= 4096 and fitted.max_tokens >= budget.MIN_REPLY
    assert fitted.omitted, "every prompt here had more than fits"
    user = str(fitted.messages[-1].content)
    assert "Left out to fit the model's window (4,096 tokens)" in user
    assert all(item in user for item in fitted.omitted)


def test_4096_draft_spec_condenses_and_honours_one_request_for_a_section(tmp_path, fashion_pdf, monkeypatch):
    monkeypatch.setenv("REPLICATE_CONTEXT_TOKENS", "4096")
    state = _state(fashion_pdf, "t-4k")
    config = _script(tmp_path, {"draft_spec": [{"need": ["Introduction"]}, "junk", "junk", "junk"]})
    assert draft_spec(state, config).goto == "ask_researcher"
    calls = _inputs(tmp_path / "project" / "runs" / "t-4k" / "llm_logs", "draft_spec")
    assert len(calls) == 4  # the first answer asked for a section: one follow-up, then the usual 3 attempts
    first, follow = calls[0][0], calls[1][0]
    assert 'section "Introduction"' in first and "other claims (ids only; ask for any by id)" in first
    assert "## Introduction [pp. 1–2]" not in first and "## Introduction [pp. 1–2]" in follow
    for _, meta in calls:
        assert int(meta["prompt_tokens_counted"]) + int(meta["max_tokens"]) <= 4096
        assert meta["window"].startswith("4096 (--context-tokens")
    assert "asked for left-out parts: Introduction" in calls[0][1]["error"]


def test_a_prompt_that_cannot_fit_is_refused_before_any_call(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REPLICATE_CONTEXT_TOKENS", "1024")
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"*": ['{"queries": []}']}), encoding="utf-8")
    model = seam.load_chat_model(f"scripted:{script}")
    huge = "a fixed part the budget may not cut " * 400
    with pytest.raises(PromptTooLargeError) as caught:
        seam.structured_call(model, "demo", "{title}", {"title": huge}, Loose, log_dir=tmp_path / "logs")
    message = str(caught.value)
    assert "\n" not in message and "window is 1,024 tokens" in message and "--context-tokens" in message
    assert "scripted" in message and re.search(r"needs ~[\d,]+ tokens", message)
    assert not Path(str(script) + ".cursor.json").exists()  # no reply was consumed: no call was made
    logged = list((tmp_path / "logs").glob("0*-demo-*.txt"))
    assert len(logged) == 1 and "refused before the call" in logged[0].read_text(encoding="utf-8")


def test_ledger_condensed_keeps_ids_compact() -> None:
    ids = [f"T3-r{r}-c{c}" for r in range(1, 127) for c in (3, 4)] + ["p1-s22-n1"]
    assert budget.compact_ids(ids) == "T3-r{1..126}-c{3,4}, p1-s22-n1"


def test_token_estimate_counts_digits_one_each() -> None:
    counter = budget.TokenCounter.for_model("smollm2")
    assert counter.count("0.798 0.873") >= 8 and counter.count("a" * 350) == 101
    assert budget.known_window("smollm2") == 8192 and budget.known_window("openai/gpt-4o-mini") == 128_000
