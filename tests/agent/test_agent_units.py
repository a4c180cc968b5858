"""Unit checks of the agent's parts: strict prompts, the LLM seam and its logs, the scripted model across
processes, spec.md <-> spec.json, and the confined file tool."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent import codedir
from agent.errors import LLMNotConfiguredError, LLMOutputError
from agent.llm import prompts
from agent.llm import seam as llm
from agent.llm.scripted import ScriptedChatModel
from agent.spec import Spec, SpecError, check_against_paper, from_markdown, load_spec, save_spec, to_markdown
from retrieval.models import Claim, PageText, Paper


class Answer(BaseModel):
    value: int
    label: str


def _script(tmp_path: Path, replies: dict) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(replies), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- prompts


def test_render_is_strict() -> None:
    assert prompts.render("a {x} {{literal}}", {"x": 1}) == "a 1 {literal}"
    with pytest.raises(prompts.PromptError, match="missing \\['x'\\]"):
        prompts.render("a {x}", {})
    with pytest.raises(prompts.PromptError, match="extra \\['y'\\]"):
        prompts.render("a {x}", {"x": 1, "y": 2})


# Every prompt the agent sends: the seven task prompts and the three that wrap each of them.
TASK_PROMPTS = ["draft_spec", "implement_code", "fix_code", "hypothesis_queries", "hypotheses", "tune_search",
                "tune_propose"]  # fmt: skip
WRAPPERS = ["SYSTEM", "JSON_INSTRUCTIONS", "RETRY"]
AGENT = Path(__file__).resolve().parents[2] / "agent"


def test_every_prompt_lives_in_the_prompt_module_and_its_table() -> None:
    constants = {name for name, value in vars(prompts).items() if name.isupper() and isinstance(value, str)}
    assert constants == {name.upper() for name in TASK_PROMPTS} | set(WRAPPERS)
    assert sorted(prompts.PROMPTS) == sorted(TASK_PROMPTS)
    # Every structured call names a task prompt of the table and takes its template from agent.llm.prompts.
    calls = []
    for path in AGENT.rglob("*.py"):
        calls += re.findall(r'structured_call\(\s*[^,]+?,\s*"(\w+)",\s*([\w.]+),', path.read_text(encoding="utf-8"))
    assert sorted({name for name, _ in calls}) == sorted(TASK_PROMPTS)
    assert {template for _, template in calls} == {f"prompts.{name.upper()}" for name in TASK_PROMPTS}


@pytest.mark.parametrize("name", TASK_PROMPTS + WRAPPERS)
def test_every_prompt_renders_with_its_placeholders(name: str) -> None:
    template = prompts.PROMPTS.get(name) or getattr(prompts, name)
    names = prompts.placeholders(template)
    assert names, name
    text = prompts.render(template, {n: f"<{n}>" for n in names})
    assert {n for n in names if f"<{n}>" not in text} == set()


# --------------------------------------------------------------------------- LLM seam


def test_not_configured_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LLMNotConfiguredError, match="REPLICATE_LLM=openai:gpt-4.1.*OPENAI_API_KEY"):
        llm.load_chat_model()
    with pytest.raises(LLMNotConfiguredError, match="OPENAI_API_KEY"):
        llm.load_chat_model("openai:gpt-4.1")
    with pytest.raises(LLMNotConfiguredError, match="vllm:MODEL@http"):
        llm.load_chat_model("vllm:some-model")
    with pytest.raises(LLMNotConfiguredError, match="unknown LLM kind"):
        llm.load_chat_model("bogus:x")


def test_openai_compatible_endpoints_load(monkeypatch: pytest.MonkeyPatch) -> None:
    model = llm.load_chat_model("vllm:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1")
    assert model.model_name == "Qwen/Qwen2.5-7B-Instruct"
    assert str(model.openai_api_base) == "http://127.0.0.1:8000/v1"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("REPLICATE_LLM", "openai:gpt-4.1-mini")
    assert llm.load_chat_model().model_name == "gpt-4.1-mini"


def test_served_endpoint_file_is_used(tmp_path: Path) -> None:
    llm.endpoint_file().write_text(json.dumps({"spec": "vllm:m@http://127.0.0.1:9/v1"}), encoding="utf-8")
    assert llm.load_chat_model().model_name == "m"


def test_structured_call_retries_with_the_error_and_logs_every_attempt(tmp_path: Path) -> None:
    script = _script(tmp_path, {"demo": ["Sure! here it is", {"value": "x", "label": "a"}, {"value": 3, "label": "b"}]})
    model = ScriptedChatModel(script_path=str(script))
    logs = tmp_path / "llm_logs"
    result = llm.structured_call(model, "demo", "Give {what}.", {"what": "a number"}, Answer, log_dir=logs)
    assert result == Answer(value=3, label="b")
    files = sorted(logs.glob("*.txt"))
    assert [f.name for f in files] == ["0001-demo-attempt1.txt", "0002-demo-attempt2.txt", "0003-demo-attempt3.txt"]
    first, second = files[0].read_text(), files[1].read_text()
    assert "=== INPUT ===" in first and "=== OUTPUT ===\nSure! here it is" in first and "=== METADATA ===" in first
    assert "Give a number." in first and "valid: no" in first and "no JSON object" in first
    # The retry shows the model its validation error.
    assert "value: Input should be a valid integer" in files[2].read_text()
    assert "valid: yes" in files[2].read_text() and "input_tokens:" in second
    usage = json.loads((logs / "usage.json").read_text())
    assert usage["calls"] == 3 and usage["input_tokens"] > 0 and usage["by_prompt"]["demo"]["calls"] == 3


def test_structured_call_never_returns_none(tmp_path: Path) -> None:
    script = _script(tmp_path, {"demo": ["nope", '{"value": 1}', "still nope"]})
    model = ScriptedChatModel(script_path=str(script))
    with pytest.raises(LLMOutputError, match="after 3 attempts"):
        llm.structured_call(model, "demo", "x", {}, Answer, log_dir=tmp_path / "logs")
    assert len(list((tmp_path / "logs").glob("*.txt"))) == 3


def test_structured_call_check_rejects_and_retries(tmp_path: Path) -> None:
    script = _script(tmp_path, {"demo": [{"value": -1, "label": "a"}, {"value": 5, "label": "a"}]})
    model = ScriptedChatModel(script_path=str(script))

    def positive(answer: Answer) -> None:
        if answer.value < 0:
            raise ValueError("value must be positive")

    result = llm.structured_call(model, "demo", "x", {}, Answer, log_dir=None, check=positive)
    assert result.value == 5


def test_scripted_cursor_survives_a_new_process(tmp_path: Path) -> None:
    script = _script(tmp_path, {"demo": [{"value": 1, "label": "a"}, {"value": 2, "label": "b"}]})
    code = (
        "from agent.llm.seam import load_chat_model, structured_call\n"
        "from pydantic import BaseModel\n"
        "class A(BaseModel):\n    value: int\n    label: str\n"
        f"print(structured_call(load_chat_model('scripted:{script}'), 'demo', 'x', {{}}, A, log_dir=None).value)\n"
    )
    outputs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
               for _ in range(2)]  # fmt: skip
    assert outputs == ["1", "2"]
    with pytest.raises(Exception, match="no reply left"):
        ScriptedChatModel(script_path=str(script)).invoke([("system", "task: demo"), ("user", "x")])


# --------------------------------------------------------------------------- spec


def _paper() -> Paper:
    page3 = "We train each classifier for 100 epochs.\nTable 3: LogisticRegression C=1 accuracy 0.842"
    return Paper(
        slug="demo-paper",
        source_path="demo.pdf",
        sha256="0" * 64,
        n_pages=3,
        title="Demo",
        pages=[PageText(page=1, text="intro"), PageText(page=2, text="setup"), PageText(page=3, text=page3)],
        claims=[Claim(id="T3-r1-c1", value=0.842, text="0.842", page=3, table="Table 3", quote="... 0.842")],
    )


def _spec(**overrides) -> Spec:
    data = {
        "paper_slug": "demo-paper",
        "objective": "Replicate the logistic regression accuracy.",
        "targets": [
            {"claim_id": "T3-r1-c1", "metric": "accuracy", "direction": "max", "tolerance": 0.01, "seeds": 2,
             "reported": 0.842}
        ],
        "data": {"name": "Fashion-MNIST", "source": "zalando", "split": "official", "split_unit": "image"},
        "method": {"name": "LogisticRegression", "description": "sklearn", "baselines": []},
        "hyperparameters": [
            {"name": "epochs", "value": 100, "source": "paper", "page": 3,
             "quote": "We train each classifier for 100 epochs."},
            {"name": "C", "value": 1.0, "source": "assumed", "reason": "sklearn default"},
        ],
        "config": {"C": 1.0},
        "budget": {"eta_minutes": 1, "wall_limit_minutes": 5},
        "open_questions": [{"question": "Which metric?", "why": "§8", "default": "accuracy"}],
    }  # fmt: skip
    data.update(overrides)
    return Spec.model_validate(data)


def test_spec_markdown_round_trip_and_files(tmp_path: Path) -> None:
    spec = _spec()
    text = to_markdown(spec, title="Demo")
    assert "## Targets" in text and "```yaml" in text and "T3-r1-c1" in text
    assert from_markdown(text) == spec
    json_path, md_path = save_spec(spec, tmp_path / "specs" / "demo-paper")
    assert load_spec(json_path) == spec and load_spec(md_path) == spec


def test_spec_markdown_edit_is_validated(tmp_path: Path) -> None:
    text = to_markdown(_spec())
    edited = text.replace("seeds: 2", "seeds: 3")
    assert from_markdown(edited).targets[0].seeds == 3
    with pytest.raises(SpecError, match="targets.0.seeds"):
        from_markdown(text.replace("seeds: 2", "seeds: many"))
    with pytest.raises(SpecError, match="YAML does not parse"):
        from_markdown(text.replace("seeds: 2", "seeds: [2"))
    with pytest.raises(SpecError, match="lacks the section"):
        from_markdown(text.replace("## Budget", "## Something else"))


def test_hyperparameters_need_a_source() -> None:
    with pytest.raises(ValueError, match="needs a page and a quote"):
        _spec(hyperparameters=[{"name": "lr", "value": 0.1, "source": "paper"}])
    with pytest.raises(ValueError, match="needs a reason"):
        _spec(hyperparameters=[{"name": "lr", "value": 0.1, "source": "assumed"}])


def test_spec_checked_against_the_paper() -> None:
    paper = _paper()
    assert check_against_paper(_spec(), paper) == []
    bad = _spec(
        targets=[{"claim_id": "T9-x", "metric": "accuracy", "direction": "max", "tolerance": 0.01, "seeds": 1,
                  "reported": 0.5},
                 {"claim_id": "T3-r1-c1", "metric": "accuracy", "direction": "max", "tolerance": 0.01, "seeds": 1,
                  "reported": 0.9}],
        hyperparameters=[{"name": "epochs", "value": 100, "source": "paper", "page": 2,
                          "quote": "We train each classifier for 100 epochs."},
                         {"name": "lr", "value": 0.1, "source": "paper", "page": 3, "quote": "learning rate 0.1"}],
    )  # fmt: skip
    problems = " | ".join(check_against_paper(bad, paper))
    assert "'T9-x' is not in the paper's claims ledger" in problems
    assert "reported 0.9 but the ledger says 0.842" in problems
    assert "not found on page 2 (on another page)" in problems
    assert "'learning rate 0.1' not found on page 3 (anywhere in the paper)" in problems


# --------------------------------------------------------------------------- file tool


@pytest.mark.parametrize(
    ("path", "why"),
    [("/tmp/evil.py", "absolute"), ("../evil.py", "'..'"), ("a/../../evil.py", "'..'"), ("~/x", "absolute"),
     (".git/hooks/pre-commit", ".git"), ("", "empty")],
)  # fmt: skip
def test_file_tool_refuses_escapes(tmp_path: Path, path: str, why: str) -> None:
    code = tmp_path / "code"
    with pytest.raises(codedir.ConfinementError, match=why):
        codedir.write_files(code, [("ok.py", "x = 1\n"), (path, "boom")])
    assert not (code / "ok.py").exists(), "a batch with one bad path writes nothing"


def test_file_tool_refuses_symlink_escape(tmp_path: Path) -> None:
    code, outside = tmp_path / "code", tmp_path / "outside"
    code.mkdir()
    outside.mkdir()
    os.symlink(outside, code / "link")
    with pytest.raises(codedir.ConfinementError, match="symlink escape"):
        codedir.write_files(code, [("link/evil.py", "boom")])
    assert not (outside / "evil.py").exists()
    assert codedir.make_write_file_tool(code).invoke({"path": "link/evil.py", "content": "x"}).startswith("refused")


def test_code_dir_is_a_git_repo_and_fixes_are_commits(tmp_path: Path) -> None:
    code = tmp_path / "code"
    codedir.ensure_repo(code)
    codedir.write_files(code, [("train.py", "print(1)\n"), ("pkg/util.py", "X = 1\n")])
    first = codedir.commit_all(code, "implement")
    assert first and codedir.commit_all(code, "nothing changed") is None
    codedir.write_files(code, [("train.py", "print(2)\n")])
    second = codedir.commit_all(code, "fix 1")
    assert second != first and "+print(2)" in codedir.diff_since_first(code)
    assert "--- pkg/util.py" in codedir.read_code(code)


def test_one_process_advances_a_replication_at_a_time() -> None:
    import subprocess as sp

    from agent.cli.flow import _exclusive
    from agent.graph.state import replication_dir

    with _exclusive("r-1"):
        code = (
            "from agent.cli.flow import _exclusive\n"
            "try:\n    _exclusive('r-1').__enter__()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
        )
        result = sp.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
        assert "AgentError r-1 is being advanced by another replicate process" in result.stdout
    with _exclusive("r-1"):  # released, and released again by a process that dies holding it
        pass
    assert (replication_dir("r-1") / ".advance.lock").exists()


def test_a_bad_pdf_is_one_line_and_leaves_no_replication(tmp_path: Path) -> None:
    fake = tmp_path / "paper.pdf"
    fake.write_text("this is not a PDF\n", encoding="utf-8")
    replicate = Path(sys.executable).parent / "replicate"
    result = subprocess.run([str(replicate), str(fake)], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("replicate: error:")]
    assert len(errors) == 1 and "not a PDF" in errors[0]
    listing = subprocess.run([str(replicate), "status"], capture_output=True, text=True, env=os.environ, check=True)
    assert "No replications yet" in listing.stdout


def test_openai_compatible_server_round_trip(tmp_path: Path) -> None:
    """The vllm:/openai: path for real: ChatOpenAI against a local OpenAI-compatible server on 127.0.0.1."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    replies = iter(["no JSON here", json.dumps({"value": 7, "label": "served"})])
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            payload = {
                "id": "cmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": next(replies)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            }  # fmt: skip
            if body.get("stream"):  # the seam streams (progress of long calls): answer as server-sent events
                content = payload["choices"][0]["message"]["content"]
                chunk = {**payload, "object": "chat.completion.chunk", "usage": None}
                events = [
                    {**chunk, "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]},
                    {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    {**chunk, "choices": [], "usage": payload["usage"]},
                ]
                data = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        model = llm.load_chat_model(f"vllm:test-model@http://127.0.0.1:{server.server_port}/v1")
        logs = tmp_path / "logs"
        result = llm.structured_call(model, "demo", "Give {what}.", {"what": "7"}, Answer, log_dir=logs)
    finally:
        server.shutdown()
        server.server_close()
    assert result == Answer(value=7, label="served")
    assert seen[0]["model"] == "test-model" and seen[0]["messages"][0]["content"].startswith("task: demo")
    assert "Your previous reply could not be used" in seen[1]["messages"][-1]["content"]
    usage = json.loads((logs / "usage.json").read_text())
    assert usage["input_tokens"] == 22 and usage["output_tokens"] == 14
    assert usage["cost_unknown_calls"] == 2  # a self-hosted model has no price: cost unknown, not invented


def test_costs_and_reasoning_models(monkeypatch: pytest.MonkeyPatch) -> None:
    assert llm.cost_usd("gpt-4.1", 1_000_000, 1_000_000) == 10.0
    assert llm.cost_usd("openai/gpt-4.1-mini", 1_000_000, 0) == 0.4
    assert llm.cost_usd("my-local-model", 10, 10) is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert llm.load_chat_model("openai:o4-mini").temperature is None
    assert llm.load_chat_model("openai:gpt-4.1").temperature == 0


def test_two_replications_of_one_paper_keep_their_own_specs() -> None:
    from agent.graph.state import spec_dir

    first, second = spec_dir("paper", "paper-aaaaaa"), spec_dir("paper", "paper-bbbbbb")
    assert first.name == "paper" and second.name == "paper--paper-bbbbbb"
    assert spec_dir("paper", "paper-aaaaaa") == first and spec_dir("paper", "paper-bbbbbb") == second
