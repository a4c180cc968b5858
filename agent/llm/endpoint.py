"""One call to a chat endpoint, made safe for real servers: bounded in tokens and time, retried only when retrying
can help, and every failure named in one line with the endpoint.

- `max_tokens` is given on every call (agent.llm.budget sizes it to the reply and to the window left).
- The reply is streamed: a long call shows its tokens and elapsed time (`progress_sink`, set by the graph's spinner;
  a plain line every 15 s otherwise), and a call past `REPLICATE_LLM_MAX_CALL_S` (default 900 s) is stopped and
  treated as a cut-off reply.
- HTTP timeouts: `REPLICATE_LLM_TIMEOUT` seconds (default 300) to connect and between streamed bytes, so a paused or
  dead server fails in one line instead of waiting forever (not retried: a busy server would get a second copy).
- 429 and 5xx and dropped connections are retried with bounded exponential backoff (3 retries, at most 30 s a
  wait, Retry-After honoured up to 60 s), then raise `LLMCallError` (the state stays resumable).
- A 400 saying the prompt exceeds the context raises `ContextLengthError` (with the server's numbers, so the caller
  re-fits the prompt smaller: it is never resent unchanged); any other 4xx raises `LLMRefusedError` with what to
  change: both are deterministic, so the graph records them and asks the researcher.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from agent.errors import AgentError, LLMOutputError

DEFAULT_TIMEOUT_S = 300.0  # a CPU server evaluating an 8k-token prompt can take minutes before its first byte
DEFAULT_MAX_CALL_S = 900.0
TRANSIENT_RETRIES = 3
MAX_BACKOFF_S = 30.0
PLAIN_PROGRESS_EVERY_S = 15.0
backoff_sleep: Callable[[float], None] = time.sleep  # tests count the waits instead of sleeping them

# The graph's spinner registers its update function here, so a streamed call can show its progress in it.
progress_sink: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "progress_sink", default=None
)


class LLMCallError(AgentError):
    """The endpoint could not be reached or kept failing (dead server, timeouts, 5xx, 429 after retries)."""


class LLMRefusedError(LLMOutputError):
    """A deterministic refusal (a 4xx, a prompt too large for the window): repeating the same call cannot help."""


class PromptTooLargeError(LLMRefusedError):
    """The prompt cannot fit the model's window even cut to its minimum; refused before any call."""


class ContextLengthError(LLMRefusedError):
    """The server answered 400: the prompt plus max_tokens exceed its context. Carries the server's numbers."""

    def __init__(self, message: str, *, window: int | None, prompt_tokens: int | None) -> None:
        super().__init__(message)
        self.window = window
        self.prompt_tokens = prompt_tokens


def timeout_s() -> float:
    return float(os.environ.get("REPLICATE_LLM_TIMEOUT") or DEFAULT_TIMEOUT_S)


def max_call_s() -> float:
    return float(os.environ.get("REPLICATE_LLM_MAX_CALL_S") or DEFAULT_MAX_CALL_S)


def http_timeout() -> httpx.Timeout:
    """For ChatOpenAI(timeout=...): connect within 10 s (or the timeout, if smaller), then `timeout_s` per read."""
    seconds = timeout_s()
    return httpx.Timeout(seconds, connect=min(10.0, seconds))


def base_url_of(model: Any) -> str | None:
    url = getattr(model, "openai_api_base", None)
    return str(url).rstrip("/") if url else None


def endpoint_of(model: Any) -> str:
    """Where calls go, for messages and logs: the base URL, the OpenAI API, or the scripted model's name."""
    if type(model).__name__ == "ScriptedChatModel":
        return "scripted"
    return base_url_of(model) or "https://api.openai.com/v1"


# --------------------------------------------------------------------------- the window a server reports

_WINDOW_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length", "n_ctx", "n_ctx_train")


def _window_in(entry: dict[str, Any]) -> int | None:
    for holder in (entry, entry.get("meta") or {}, entry.get("top_provider") or {}):
        for key in _WINDOW_KEYS:
            value = holder.get(key) if isinstance(holder, dict) else None
            if isinstance(value, int) and value > 0:
                return value
    return None


@lru_cache(maxsize=32)
def server_window(base_url: str, model: str) -> int | None:
    """The context window the server reports for `model` in GET /models, or None (not said, or not reachable)."""
    if "api.openai.com" in base_url:
        return None  # OpenAI's /models does not report windows
    request = urllib.request.Request(f"{base_url}/models", headers={"Accept": "application/json"})
    key = os.environ.get("OPENAI_API_KEY") or os.environ.get("VLLM_API_KEY")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=min(5.0, timeout_s())) as response:
            listing = json.loads(response.read().decode("utf-8", "replace"))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    entries = [e for e in (listing.get("data") or []) if isinstance(e, dict)] if isinstance(listing, dict) else []
    mine = [e for e in entries if e.get("id") == model] or (entries if len(entries) == 1 else [])
    return _window_in(mine[0]) if mine else None


# --------------------------------------------------------------------------- one call


@dataclass
class Reply:
    text: str
    finish_reason: str  # "stop", "length", "time" (stopped at max_call_s), or what the server said
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float
    endpoint: str
    estimated_tokens: bool = False


_CONTEXT_WORDS = re.compile(
    r"context length|context window|maximum context|too many tokens|exceeds? (the )?(context|max)|"
    r"prompt is too long|n_ctx|input is too long|reduce the length",
    re.I,
)
_NUMBERS = re.compile(r"\d[\d,]*")


def _context_error(exc: openai.APIStatusError, where: str, prompt_name: str) -> ContextLengthError:
    """The server's context overflow, with its window and the prompt size it counted where it says them."""
    text = str(exc)
    numbers = [int(n.replace(",", "")) for n in _NUMBERS.findall(text) if n.replace(",", "").isdigit()]
    numbers = [n for n in numbers if n >= 256 and n != exc.status_code]
    window = None
    match = re.search(r"(?:maximum context length is|context window of|n_ctx[^\d]*|context length of)\s*(\d+)", text)
    if match:
        window = int(match.group(1))
    elif numbers:
        window = min(numbers)
    # The prompt's own size where the server says it: OpenAI/vLLM "(N in the messages, ...)", llama.cpp
    # "Requested tokens (N) exceed context window"; a total that includes the completion is no prompt size.
    said = re.search(r"(\d+) in the messages|requested tokens \((\d+)\)", text, re.I)
    prompt = int(next(g for g in said.groups() if g)) if said else None
    return ContextLengthError(
        f"{prompt_name}: {where} refused the prompt as too long for its context ({_short(text)})",
        window=window,
        prompt_tokens=prompt,
    )


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refusal(exc: openai.APIStatusError, where: str, prompt_name: str, model: str) -> LLMRefusedError:
    advice = {
        401: "check the API key (OPENAI_API_KEY / OPENROUTER_API_KEY / VLLM_API_KEY)",
        403: "the key may not use this model; check the account or pick another model with --llm",
        404: f"the server does not serve model {model!r} (or the base URL is wrong); check --llm and the URL",
        413: "the request is too large for the server; set --context-tokens lower",
        422: "the server rejected the request's parameters; try another --llm or report it",
    }.get(exc.status_code, "change the model or its settings with --llm and approve to retry")
    return LLMRefusedError(f"{prompt_name}: {where} refused the call with HTTP {exc.status_code} "
                           f"({_short(str(exc))}); {advice}")  # fmt: skip


def _backoff(attempt: int, exc: Exception) -> float:
    response = getattr(exc, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    if header and header.replace(".", "", 1).isdigit():
        return min(float(header), 60.0)
    return min(MAX_BACKOFF_S, 2.0 * 2**attempt)


def _progress(prompt_name: str, where: str) -> Callable[[int, float], None]:
    sink = progress_sink.get()
    last = [time.monotonic()]

    def show(tokens: int, elapsed: float) -> None:
        text = f"{tokens} tokens, {elapsed:.0f} s"
        if sink is not None:
            sink(text)
        elif time.monotonic() - last[0] >= PLAIN_PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            print(f"... {prompt_name}: {text} ({where})", file=sys.stderr, flush=True)

    return show


def _token_limit(model: BaseChatModel, max_tokens: int) -> dict[str, Any]:
    """The reply bound as the endpoint reads it. langchain-openai sends only `max_completion_tokens`, which OpenAI
    reads but llama.cpp's server ignores (it then generates until its context is full): other servers also get the
    classic `max_tokens`."""
    base = base_url_of(model)
    if base and "api.openai.com" not in base:
        return {"max_tokens": max_tokens, "extra_body": {"max_tokens": max_tokens}}
    return {"max_tokens": max_tokens}


_NOT_STREAMING: set[str] = set()  # endpoints that answered a streamed request with a plain JSON body


def _whole(model: BaseChatModel, messages: Sequence[BaseMessage], max_tokens: int) -> tuple:
    """One call without streaming, for a server that does not stream."""
    message = model.invoke(list(messages), **_token_limit(model, max_tokens))
    finish = (message.response_metadata or {}).get("finish_reason") or "stop"
    return message, finish, 0


def _stream(model: BaseChatModel, messages: Sequence[BaseMessage], max_tokens: int, show: Callable) -> tuple:
    """(aggregated message, finish reason, streamed chunks) of one streamed call, stopped at max_call_s."""
    where = endpoint_of(model)
    if where in _NOT_STREAMING:
        return _whole(model, messages, max_tokens)
    try:
        return _stream_once(model, messages, max_tokens, show)
    except ValueError as exc:
        if "No generation chunks" not in str(exc):
            raise
        _NOT_STREAMING.add(where)  # the server ignored stream=true: ask again without it, from now on
        return _whole(model, messages, max_tokens)


@dataclass
class _Streamed:
    """What a streaming worker has received so far."""

    total: Any = None
    chunks: int = 0
    finish: str = ""
    error: BaseException | None = None


def _stream_once(model: BaseChatModel, messages: Sequence[BaseMessage], max_tokens: int, show: Callable) -> tuple:
    """Stream in a worker thread while this one keeps time: a server can hold a call open with keep-alive pings
    and no tokens (a long prompt evaluation, a stuck generation), which no HTTP read timeout ever ends. At
    max_call_s the call is given up as cut off ("time"); the daemon worker is left to drain the stream."""
    got = _Streamed()
    stop, done = threading.Event(), threading.Event()

    def work() -> None:
        stream: Any = None
        try:
            stream = model.stream(list(messages), **_token_limit(model, max_tokens))
            for chunk in stream:
                got.total = chunk if got.total is None else got.total + chunk
                got.chunks += 1
                got.finish = (chunk.response_metadata or {}).get("finish_reason") or got.finish
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - not swallowed: the caller's thread raises it
            got.error = exc
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # a generator: ends the HTTP response
            done.set()

    context = contextvars.copy_context()  # the progress sink and langchain's callbacks follow the call
    threading.Thread(target=context.run, args=(work,), daemon=True, name="llm-stream").start()
    started = time.monotonic()
    while not done.wait(1.0):
        elapsed = time.monotonic() - started
        show(got.chunks, elapsed)
        if elapsed > max_call_s():
            stop.set()
            return got.total, "time", got.chunks
    if got.error is not None:
        raise got.error
    return got.total, got.finish or "stop", got.chunks


def call(model: BaseChatModel, messages: Sequence[BaseMessage], *, max_tokens: int, prompt_name: str) -> Reply:
    """Send `messages` once (retrying transient failures); see the module docstring for what raises what."""
    where = endpoint_of(model)
    name = str(getattr(model, "model_name", None) or getattr(model, "model", None) or "model")
    last: Exception | None = None
    for attempt in range(TRANSIENT_RETRIES + 1):
        started = time.monotonic()
        try:
            message, finish, chunks = _stream(model, messages, max_tokens, _progress(prompt_name, where))
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                last = exc
            elif exc.status_code in (400, 413) and _CONTEXT_WORDS.search(str(exc)):
                raise _context_error(exc, where, prompt_name) from exc
            else:
                raise _refusal(exc, where, prompt_name, name) from exc
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:
            # A server that does not answer within the timeout is busy or paused: sending the same prompt again
            # would queue a second copy behind the first. Stop in one line; `replicate resume` tries again.
            raise LLMCallError(
                f"LLM call {prompt_name} to {name} at {where}: no answer within {timeout_s():.0f} s "
                "(set REPLICATE_LLM_TIMEOUT to wait longer)"
            ) from exc
        except (openai.APIConnectionError, httpx.TransportError) as exc:
            last = exc
        else:
            text = _text(message)
            usage = getattr(message, "usage_metadata", None) or {}
            meta = getattr(message, "response_metadata", None) or {}
            return Reply(
                text=text,
                finish_reason=finish,
                input_tokens=usage.get("input_tokens"),
                output_tokens=usage.get("output_tokens", chunks if message is not None else 0),
                latency_s=round(time.monotonic() - started, 3),
                endpoint=where,
                estimated_tokens=bool(meta.get("estimated_tokens")) or not usage,
            )
        if attempt < TRANSIENT_RETRIES:
            wait = _backoff(attempt, last)
            print(f"... {prompt_name}: {where} failed ({_kind(last)}), retrying in {wait:.0f} s", file=sys.stderr)
            backoff_sleep(wait)
    raise LLMCallError(
        f"LLM call {prompt_name} to {name} failed at {where}, {TRANSIENT_RETRIES + 1} attempts: {_kind(last)}"
        + (" (set REPLICATE_LLM_TIMEOUT to wait longer)" if isinstance(last, openai.APITimeoutError) else "")
    ) from last


def _kind(exc: Exception | None) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_short(str(exc), 160)}"
    if isinstance(exc, openai.APITimeoutError):
        return f"no answer within {timeout_s():.0f} s"
    return f"{type(exc).__name__}: {_short(str(exc), 160)}"


def _text(message: Any) -> str:
    if message is None:
        return ""
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
