"""Real endpoints through langchain-openai against a real HTTP server on 127.0.0.1 (started by each test): a context
overflow is never resent unchanged, 5xx/429 are retried boundedly, a cut-off reply is neither parsed nor resent, a
refusal is one line with what to change, a paused server times out, every call is logged, and a server-reported
window is used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent.llm import budget, endpoint, seam
from retrieval.ingest import parse_pdf
from retrieval.paper_view import build_view
from tests.agent.test_paper_view import method_paper

Behaviour = Callable[[dict[str, Any]], tuple[int, Any, dict[str, str]]]


class Answer(BaseModel):
    value: int
    label: str


def ok(content: str, finish: str = "stop") -> Behaviour:
    def reply(body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        return 200, {"content": content, "finish": finish}, {}

    return reply


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Behaviour:
    def reply(body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        return status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}, headers or {}

    return reply


def pause(seconds: float) -> Behaviour:
    def reply(body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        time.sleep(seconds)
        return 200, {"content": '{"value": 1, "label": "late"}', "finish": "stop"}, {}

    return reply


def keepalive(seconds: float) -> Behaviour:
    """Headers, then only SSE comments (llama.cpp's pings) for `seconds`: no token, no HTTP timeout."""

    def reply(body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        return 200, {"pings": seconds}, {}

    return reply


class Server:
    """An OpenAI-compatible chat server speaking server-sent events, with one scripted behaviour per request."""

    def __init__(self, behaviours: list[Behaviour], models: dict[str, Any] | None = None) -> None:
        self.behaviours = list(behaviours)
        self.requests: list[dict[str, Any]] = []
        self.models = models or {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._send(200, json.dumps(server.models).encode(), "application/json")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                status, payload, headers = server.behaviours.pop(0)(body)
                if status != 200:
                    self._send(status, json.dumps(payload).encode(), "application/json", headers)
                    return
                if "pings" in payload:
                    self._pings(payload["pings"])
                    return
                base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
                events = [
                    {**base, "choices": [{"index": 0, "delta": {"content": payload["content"]},
                                          "finish_reason": None}]},
                    {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": payload["finish"]}]},
                    {**base, "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}},
                ]  # fmt: skip
                data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                self._send(200, data.encode(), "text/event-stream")

            def _send(self, status: int, data: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _pings(self, seconds: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                end = time.monotonic() + seconds
                try:
                    while time.monotonic() < end:
                        self.wfile.write(b": ping\n\n")
                        self.wfile.flush()
                        time.sleep(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def serving(server: Server) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint, "backoff_sleep", lambda seconds: None)  # backoff waits are not slept in tests
    endpoint.server_window.cache_clear()


def _call(url: str, logs: Path, variables: dict[str, Any] | None = None, template: str = "Give {what}.") -> Answer:
    model = seam.load_chat_model(f"vllm:stub-model@{url}")
    return seam.structured_call(model, "demo", template, variables or {"what": "7"}, Answer, log_dir=logs)


def _logs(folder: Path) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(folder.glob("0*.txt"))]


def test_context_overflow_is_refit_smaller_never_resent_unchanged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REPLICATE_CONTEXT_TOKENS", "8192")
    view = build_view(parse_pdf(method_paper(tmp_path / "m.pdf")))
    overflow = error(
        400,
        "This model's maximum context length is 1024 tokens. However, you requested 5000 tokens "
        "(3000 in the messages, 2000 in the completion). Please reduce the length of the messages.",
    )
    server = Server([overflow, overflow])
    variables = {"paper": budget.PaperText(view)}
    with serving(server) as url, pytest.raises(endpoint.LLMRefusedError) as caught:
        _call(url, tmp_path / "logs", variables, template="Read this paper:\n{paper}")
    assert len(server.requests) == 2  # one re-fit, then refused: never the same prompt again and again
    first, second = (json.dumps(r["messages"]) for r in server.requests)
    assert len(second) < len(first) and first != second
    assert "Left out to fit the model's window (1,024 tokens)" in server.requests[1]["messages"][-1]["content"]
    assert server.requests[1]["max_tokens"] < server.requests[0]["max_tokens"]
    assert "too long for its context" in str(caught.value) and "\n" not in str(caught.value)
    logged = _logs(tmp_path / "logs")
    assert len(logged) == 2 and all("(no reply:" in text and "endpoint:" not in text.split("=== METADATA")[0]
                                    for text in logged)  # fmt: skip
    assert all("window:" in text and "finish_reason: (no reply)" in text for text in logged)


def test_5xx_and_429_are_retried_with_bounded_backoff(tmp_path: Path, monkeypatch) -> None:
    waits: list[float] = []
    server = Server([error(503, "overloaded"), error(429, "slow down", {"Retry-After": "7"}),
                     ok('{"value": 7, "label": "ok"}')])  # fmt: skip
    with serving(server) as url:
        monkeypatch.setattr(endpoint, "backoff_sleep", waits.append)
        assert _call(url, tmp_path / "logs") == Answer(value=7, label="ok")
    assert len(server.requests) == 3 and waits == [2.0, 7.0]  # exponential, then the server's Retry-After
    assert all(r["stream"] is True and r["max_tokens"] > 0 for r in server.requests)


def test_5xx_forever_ends_in_one_line_naming_the_endpoint(tmp_path: Path) -> None:
    server = Server([error(500, "boom")] * (endpoint.TRANSIENT_RETRIES + 1))
    with serving(server) as url, pytest.raises(endpoint.LLMCallError) as caught:
        _call(url, tmp_path / "logs")
    assert len(server.requests) == endpoint.TRANSIENT_RETRIES + 1
    assert url in str(caught.value) and "HTTP 500" in str(caught.value)
    assert len(_logs(tmp_path / "logs")) == 1  # the failed call is on disk, with the prompt that was sent


def test_cut_off_reply_is_not_parsed_and_not_resent(tmp_path: Path) -> None:
    cut = '{"value": 7, "label": "this reply runs on and on and'
    server = Server([ok(cut, finish="length"), ok('{"value": 7, "label": "short"}')])
    with serving(server) as url:
        assert _call(url, tmp_path / "logs") == Answer(value=7, label="short")
    retry = server.requests[1]["messages"]
    assert "cut off" in retry[-1]["content"] and cut not in json.dumps(retry)
    assert "finish_reason: length" in _logs(tmp_path / "logs")[0]


def test_invalid_reply_retry_shows_an_excerpt_not_the_whole_junk(tmp_path: Path) -> None:
    junk = "no json " * 2000
    server = Server([ok(junk), ok('{"value": 3, "label": "fine"}')])
    with serving(server) as url:
        assert _call(url, tmp_path / "logs") == Answer(value=3, label="fine")
    retry = json.dumps(server.requests[1]["messages"])
    assert "more characters not repeated" in retry and len(retry) < len(json.dumps(server.requests[0])) + 2000


def test_401_is_a_refusal_with_what_to_change_not_retried(tmp_path: Path) -> None:
    server = Server([error(401, "invalid api key")])
    with serving(server) as url, pytest.raises(endpoint.LLMRefusedError) as caught:
        _call(url, tmp_path / "logs")
    assert len(server.requests) == 1 and "HTTP 401" in str(caught.value) and "API key" in str(caught.value)


def test_a_paused_server_times_out_in_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REPLICATE_LLM_TIMEOUT", "0.5")
    monkeypatch.setattr(endpoint, "TRANSIENT_RETRIES", 1)
    server = Server([pause(3), pause(3)])
    started = time.monotonic()
    with serving(server) as url, pytest.raises(endpoint.LLMCallError) as caught:
        _call(url, tmp_path / "logs")
    assert time.monotonic() - started < 5
    assert url in str(caught.value) and "REPLICATE_LLM_TIMEOUT" in str(caught.value)


def test_the_window_the_server_reports_is_used(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("REPLICATE_CONTEXT_TOKENS", raising=False)
    models = {"object": "list", "data": [{"id": "stub-model", "object": "model", "max_model_len": 2048}]}
    server = Server([ok('{"value": 1, "label": "a"}')], models=models)
    with serving(server) as url:
        model = seam.load_chat_model(f"vllm:stub-model@{url}")
        window = budget.context_window(model, "stub-model")
        _call(url, tmp_path / "logs")
    assert window.tokens == 2048 and "reported by" in window.source
    sent = server.requests[0]
    assert sent["max_tokens"] == sent["max_completion_tokens"] < 2048  # llama.cpp reads max_tokens, OpenAI the other
    assert "window: 2048 (reported by" in _logs(tmp_path / "logs")[0]


def test_malformed_llm_is_refused_before_ingestion(tmp_path: Path, fashion_pdf: Path) -> None:
    replicate = Path(sys.executable).parent / "replicate"
    result = subprocess.run([str(replicate), str(fashion_pdf), "--llm", "bogus:model"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1 and "unknown LLM kind 'bogus'" in result.stderr
    assert "Traceback" not in result.stderr and "Ingested" not in result.stderr
    runs = Path(os.environ["REPLICATE_PROJECT_DIR"]) / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()]


def test_a_server_holding_the_call_open_with_pings_is_bounded_in_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REPLICATE_LLM_MAX_CALL_S", "2")
    server = Server([keepalive(6)])
    started = time.monotonic()
    with serving(server) as url, pytest.raises(endpoint.LLMCallError) as caught:
        _call(url, tmp_path / "logs")
    assert time.monotonic() - started < 5 and len(server.requests) == 1
    assert "no token within 2 s" in str(caught.value) and url in str(caught.value)
    assert "finish_reason: time" in _logs(tmp_path / "logs")[0]


def test_ctrl_c_during_a_call_exits_130_with_a_message(tmp_path: Path, fashion_pdf: Path) -> None:
    import signal
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts (the kernel does) and never answers: a call that hangs until Ctrl-C
    replicate = Path(sys.executable).parent / "replicate"
    err = tmp_path / "stderr.txt"
    llm = f"vllm:hang@http://127.0.0.1:{listener.getsockname()[1]}/v1"
    with err.open("w") as handle:
        env = {**os.environ, "REPLICATE_PLAIN": "1"}
        command = [str(replicate), str(fashion_pdf), "--llm", llm]
        process = subprocess.Popen(command, stderr=handle, stdout=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 120
            while "Drafting the experiment spec" not in err.read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(1)
            process.send_signal(signal.SIGINT)
            rc = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            listener.close()
    text = err.read_text()
    assert rc == 130 and "replicate: interrupted" in text and "Traceback" not in text
