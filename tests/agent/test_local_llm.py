"""The tool against a real model behind a real OpenAI-compatible server (marker `local_llm`, not in the default suite).

`bash ../shared/tools/local-llm.sh start` serves SmolLM2-135M-Instruct under llama-cpp-python on 127.0.0.1:8011
with an 8,192-token window (REPLICATE_LOCAL_LLM_URL / REPLICATE_LOCAL_LLM_WINDOW for another server). The model is
far too small to replicate anything: this checks the tool, through langchain-openai, not the model. Every prompt
fits the window (by our count and by the server's own), no call runs past its token or time bound, invalid replies
are retried with the error shown, and `replicate paper.pdf` ends in a clear question or a spec review with the state
kept: no traceback, no hang.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.local_llm

URL = os.environ.get("REPLICATE_LOCAL_LLM_URL", "http://127.0.0.1:8011/v1")
WINDOW = int(os.environ.get("REPLICATE_LOCAL_LLM_WINDOW", "8192"))
# Per call (REPLICATE_LLM_MAX_CALL_S): a 135M model on a busy CPU writes ~2 tokens/s, so the bound, not the model,
# ends most calls; the whole start is bounded by the subprocess timeout.
MAX_CALL_S = int(os.environ.get("REPLICATE_LOCAL_LLM_MAX_CALL_S", "300"))
REPLICATE = Path(sys.executable).parent / "replicate"


def _served_model() -> str:
    try:
        with urllib.request.urlopen(f"{URL}/models", timeout=5) as response:
            listing = json.loads(response.read())
    except (OSError, ValueError) as exc:
        pytest.skip(
            f"no OpenAI-compatible server answers at {URL} ({exc}); start one: bash ../shared/tools/local-llm.sh start"
        )
    return listing["data"][0]["id"]


def _metadata(path: Path) -> dict[str, str]:
    meta = path.read_text(encoding="utf-8").split("=== METADATA ===", 1)[1]
    return dict(line.split(": ", 1) for line in meta.strip().splitlines() if ": " in line)


@pytest.mark.timeout(3 * 3 * MAX_CALL_S + 600)  # three attempts of at most MAX_CALL_S each, plus ingestion
def test_replicate_paper_against_a_local_server(tmp_path: Path, fashion_pdf: Path) -> None:
    model = _served_model()
    env = {**os.environ, "REPLICATE_PLAIN": "1", "REPLICATE_LLM_MAX_CALL_S": str(MAX_CALL_S),
           "OPENAI_BASE_URL": URL, "OPENAI_API_KEY": "local"}  # fmt: skip
    result = subprocess.run(
        [str(REPLICATE), str(fashion_pdf), "--llm", f"openai:{model}", "--context-tokens", str(WINDOW)],
        env=env, capture_output=True, text=True, timeout=3 * 3 * MAX_CALL_S + 300,
    )  # fmt: skip
    print(result.stdout, result.stderr, sep="\n")  # shown with -s: what the researcher saw
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    rid = re.search(r"Replication (\S+)", result.stdout).group(1)
    project = Path(os.environ["REPLICATE_PROJECT_DIR"])
    state = json.loads((project / "runs" / rid / "state.json").read_text(encoding="utf-8"))
    # Ends at a checkpoint a person can act on: the spec review, or a question saying what went wrong and what to do;
    # or, when the server is too slow for the time bound, one line naming it with the state kept for `resume`.
    waiting = state.get("waiting") or {}
    if result.returncode == 0:
        assert waiting.get("review") in ("spec", "question"), state
        if waiting["review"] == "question":
            assert "next: replicate approve" in result.stdout and waiting["question"].strip()
            assert state["failures"] and state["failures"][-1]["node"] == "draft_spec"
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("replicate: error:")]
        assert result.returncode == 1 and len(errors) == 1, result.stderr
        assert URL.rstrip("/") in errors[0] and f"replicate resume {rid}" in errors[0]
        assert state.get("paper_json") and state.get("next") == ["draft_spec"]
    logs = sorted((project / "runs" / rid / "llm_logs").glob("0*-draft_spec-*.txt"))
    assert logs, "no call was logged"
    for path in logs:
        meta = _metadata(path)
        shown = ("finish_reason", "error", "prompt_tokens_counted", "input_tokens", "output_tokens", "max_tokens",
                 "latency_s", "left_out")  # fmt: skip
        print(path.name, {key: meta.get(key, "")[:160] for key in shown})  # with -s: the figures of each call
        counted, bound = int(meta["prompt_tokens_counted"]), int(meta["max_tokens"])
        assert counted + bound <= WINDOW, (path.name, counted, bound)
        if meta["tokens_estimated"] == "False":  # the server's own count of what we sent
            assert int(meta["input_tokens"]) + bound <= WINDOW, (path.name, meta["input_tokens"], bound)
            assert int(meta["output_tokens"]) <= bound
        assert float(meta["latency_s"]) <= MAX_CALL_S + 30
        assert meta["endpoint"] == URL.rstrip("/")
    texts = [p.read_text(encoding="utf-8") for p in logs]
    if len(texts) > 1:  # a retry shows the model what was wrong with its previous reply
        assert "Your previous reply could not be used" in texts[1] or "cut off" in texts[1]


@pytest.mark.timeout(3 * MAX_CALL_S + 600)
def test_tune_llm_proposer_against_a_local_server(tmp_path: Path) -> None:
    """`replicate tune --proposer llm` once: every call fits the window and its bounds, a reply that never validates
    becomes a recorded trial with its reason (the search goes on), the ledger is written, and nothing hangs."""
    from tests.agent.test_tune import toy_target

    model = _served_model()
    target, out = toy_target(tmp_path), tmp_path / "tune"
    env = {**os.environ, "REPLICATE_PLAIN": "1", "REPLICATE_LLM_MAX_CALL_S": str(MAX_CALL_S),
           "REPLICATE_CONTEXT_TOKENS": str(WINDOW), "OPENAI_BASE_URL": URL, "OPENAI_API_KEY": "local"}  # fmt: skip
    args = [str(REPLICATE), "tune", str(target), "--budget", "1", "--trial-time", "10s", "--proposer", "llm",
            "--no-papers", "--baseline-seeds", "2", "--seeds", "1", "--out", str(out),
            "--llm", f"openai:{model}"]  # fmt: skip
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3 * MAX_CALL_S + 300)
    print(result.stdout, result.stderr, sep="\n")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    rows = (out / "tune.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3, rows  # header, the baseline, trial 1 (kept, discarded or rejected with its reason)
    logs = sorted((out / "llm_logs").glob("*-tune_propose-*.txt"))
    assert logs, "no call was logged"
    for path in logs:
        meta = _metadata(path)
        assert int(meta["prompt_tokens_counted"]) + int(meta["max_tokens"]) <= WINDOW, path.name
        assert float(meta["latency_s"]) <= MAX_CALL_S + 30 and meta["endpoint"] == URL.rstrip("/")
