"""The one LLM seam: which chat model to load, and how every structured call is made, validated and logged.

`load_chat_model` reads `--llm` / `REPLICATE_LLM` / the endpoint that `replicate llm serve` wrote:
  openai:MODEL                      OpenAI (OPENAI_API_KEY; OPENAI_BASE_URL for any OpenAI-compatible server)
  openrouter:MODEL                  OpenRouter (OPENROUTER_API_KEY)
  vllm:MODEL@http://host:port/v1    a vLLM (or any OpenAI-compatible) server, no key needed
  scripted:/path/to/script.json     the scripted test model (agent.llm.scripted)

`structured_call` never hands back None: it parses the JSON object out of the reply text itself (no reliance on
tool-calling or `with_structured_output`), validates it with pydantic plus an optional domain check, and on failure
retries with the error shown to the model. Every attempt is written as one plain-text file (practices §5: the
templated input, the raw output, metadata) under the replication's llm_logs/, and token counts and cost add up in
llm_logs/usage.json.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from agent import paths
from agent.errors import LLMNotConfiguredError, LLMOutputError
from agent.llm import budget, endpoint, prompts
from mlexp import atomic

M = TypeVar("M", bound=BaseModel)

NOT_CONFIGURED = (
    "no LLM configured. Set REPLICATE_LLM=openai:gpt-4.1 and OPENAI_API_KEY=... (or REPLICATE_LLM=openrouter:MODEL "
    "with OPENROUTER_API_KEY, or REPLICATE_LLM=vllm:MODEL@http://HOST:PORT/v1, or run `replicate llm serve MODEL` "
    "on a GPU machine), or pass --llm openai:gpt-4.1"
)

# USD per million tokens (input, output). A model not listed gets cost None ("unknown"), never a made-up number.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "o4-mini": (1.1, 4.4),
    "o3": (2.0, 8.0),
}


# Where the endpoint errors live (one call, bounded and retried); re-exported here, where callers look for them.
LLMCallError = endpoint.LLMCallError
LLMRefusedError = endpoint.LLMRefusedError


def endpoint_file() -> Path:
    """Written by `replicate llm serve`; read when neither --llm nor REPLICATE_LLM is set."""
    return paths.replicate_home() / "llm.json"


def configured_spec(spec: str | None = None) -> str | None:
    if spec:
        return spec
    if os.environ.get("REPLICATE_LLM"):
        return os.environ["REPLICATE_LLM"]
    path = endpoint_file()
    if path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))["spec"]
        except (ValueError, KeyError) as exc:
            raise LLMNotConfiguredError(f"{path} is unreadable ({exc}); delete it or set REPLICATE_LLM") from exc
    return None


def load_chat_model(spec: str | None = None) -> BaseChatModel:
    """The chat model named by `spec`, REPLICATE_LLM, or the served endpoint. Raises LLMNotConfiguredError."""
    spec = configured_spec(spec)
    if not spec:
        raise LLMNotConfiguredError(NOT_CONFIGURED)
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not rest:
        raise LLMNotConfiguredError(f"LLM spec {spec!r} has no model; use e.g. openai:gpt-4.1")
    if kind == "scripted":
        from agent.llm.scripted import ScriptedChatModel

        if not Path(rest).is_file():
            raise LLMNotConfiguredError(f"scripted LLM script not found: {rest}")
        return ScriptedChatModel(script_path=str(Path(rest).resolve()))
    from langchain_openai import ChatOpenAI

    def sampling(model: str) -> dict[str, Any]:
        # Reasoning models reject a temperature; for the others 0 makes drafts repeatable. Timeouts always, and no
        # hidden retries inside the client: agent.llm.endpoint retries what can be retried, boundedly, and says so.
        fixed: dict[str, Any] = {"timeout": endpoint.http_timeout(), "max_retries": 0, "stream_usage": True}
        return fixed if model.split("/")[-1].startswith(("o1", "o3", "o4", "gpt-5")) else {**fixed, "temperature": 0}

    if kind == "openai":
        if not os.environ.get("OPENAI_API_KEY"):
            raise LLMNotConfiguredError(f"--llm {spec} needs OPENAI_API_KEY set (and OPENAI_BASE_URL for a proxy)")
        return ChatOpenAI(model=rest, base_url=os.environ.get("OPENAI_BASE_URL") or None, **sampling(rest))
    if kind == "openrouter":
        key = os.environ.get("OPENROUTER_API_KEY")
        if not key:
            raise LLMNotConfiguredError(f"--llm {spec} needs OPENROUTER_API_KEY set")
        return ChatOpenAI(model=rest, base_url="https://openrouter.ai/api/v1", api_key=key, **sampling(rest))
    if kind == "vllm":
        model, at, url = rest.rpartition("@")
        if not at or not url.startswith("http"):
            raise LLMNotConfiguredError(f"--llm {spec}: use vllm:MODEL@http://HOST:PORT/v1")
        key = os.environ.get("VLLM_API_KEY", "EMPTY")
        return ChatOpenAI(model=model, base_url=url, api_key=key, **sampling(model))
    raise LLMNotConfiguredError(f"unknown LLM kind {kind!r} in {spec!r}; use openai:, openrouter:, vllm: or scripted:")


def model_name(model: BaseChatModel) -> str:
    return str(getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__)


def cost_usd(name: str, input_tokens: int, output_tokens: int) -> float | None:
    if name == "scripted":
        return 0.0
    price = PRICES.get(name.split("/")[-1])  # openrouter names carry the vendor: openai/gpt-4.1
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6


# --------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """The JSON value in a reply: a fenced block, the whole text, or the first object in it. Raises ValueError."""
    text = text.strip()
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    start = text.find("{")
    if start >= 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            return value
        except ValueError:
            pass
    raise ValueError("the reply contains no JSON object")


def reply_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- logging


def _transcript(messages: list[BaseMessage]) -> str:
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    return "\n\n".join(f"<|{roles.get(m.type, m.type)}|>\n{reply_text(m)}" for m in messages)


def _log_call(log_dir: Path, prompt_name: str, messages: list[BaseMessage], raw: str, meta: dict[str, Any]) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    seq = len(list(log_dir.glob("[0-9][0-9][0-9][0-9]-*.txt"))) + 1
    path = log_dir / f"{seq:04d}-{prompt_name}-attempt{meta['attempt']}.txt"
    metadata = "\n".join(f"{key}: {value}" for key, value in meta.items())
    atomic.write_text(
        path, f"=== INPUT ===\n{_transcript(messages)}\n\n=== OUTPUT ===\n{raw}\n\n=== METADATA ===\n{metadata}\n"
    )
    _add_usage(log_dir, prompt_name, meta)
    return path


def _add_usage(log_dir: Path, prompt_name: str, meta: dict[str, Any]) -> None:
    usage = usage_summary(log_dir)
    for bucket in (usage, usage["by_prompt"].setdefault(prompt_name, {})):
        bucket["calls"] = bucket.get("calls", 0) + 1
        bucket["input_tokens"] = bucket.get("input_tokens", 0) + int(meta.get("input_tokens") or 0)
        bucket["output_tokens"] = bucket.get("output_tokens", 0) + int(meta.get("output_tokens") or 0)
        if meta.get("cost_usd") is None:
            bucket["cost_unknown_calls"] = bucket.get("cost_unknown_calls", 0) + 1
        else:
            bucket["cost_usd"] = round(bucket.get("cost_usd", 0.0) + float(meta["cost_usd"]), 6)
    atomic.write_text(log_dir / "usage.json", json.dumps(usage, indent=2) + "\n")


def usage_summary(log_dir: Path | None) -> dict[str, Any]:
    """Calls, tokens and cost so far, from llm_logs/usage.json."""
    empty: dict[str, Any] = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "by_prompt": {}}
    if log_dir is None or not (log_dir / "usage.json").exists():
        return empty
    return json.loads((log_dir / "usage.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the call


def first_messages(
    prompt_name: str, template: str, variables: dict[str, Any], schema: type[BaseModel], *, note: str = ""
) -> list[BaseMessage]:
    """The system line naming the task, and the rendered prompt with the JSON schema the reply must match.

    `note` (agent.llm.budget) says what was left out to fit the model's window and how to ask for it.
    """
    user = prompts.render(template, variables)
    schema_text = json.dumps(budget.compact_schema(schema.model_json_schema()), separators=(",", ":"))
    return [
        SystemMessage(prompts.render(prompts.SYSTEM, {"prompt_name": prompt_name})),
        HumanMessage(
            user
            + (f"\n\n{note}" if note else "")
            + "\n\n"
            + prompts.render(prompts.JSON_INSTRUCTIONS, {"schema": schema_text})
        ),
    ]


def parse_reply(raw: str, schema: type[M], check: Callable[[M], None] | None) -> tuple[M | None, str]:
    """(the validated value, "") or (None, why the reply cannot be used, to show the model)."""
    try:
        value = schema.model_validate(extract_json(raw))
        if check is not None:
            check(value)
    except ValidationError as exc:
        return None, f"schema validation failed: {_validation_message(exc)}"
    except ValueError as exc:  # no JSON in the reply, or the domain check rejected it
        return None, str(exc)
    return value, ""


def _attempt_meta(reply: endpoint.Reply | None, name: str, fitted: budget.Fitted, error: str) -> dict[str, Any]:
    """What the log file of one attempt records: validity, endpoint, finish reason, tokens, window, cost, latency."""
    n_in = (reply.input_tokens if reply else None) or fitted.prompt_tokens
    n_out = (reply.output_tokens if reply else None) or 0
    return {
        "valid": "no" if error else "yes",
        "error": error or "-",
        "endpoint": reply.endpoint if reply else "-",
        "finish_reason": reply.finish_reason if reply else "(no reply)",
        "input_tokens": n_in,
        "output_tokens": n_out,
        "tokens_estimated": reply.estimated_tokens if reply else True,
        "prompt_tokens_counted": fitted.prompt_tokens,
        "token_count": fitted.counter.method,
        "max_tokens": fitted.max_tokens,
        "window": f"{fitted.window.tokens} ({fitted.window.source})",
        "left_out": "; ".join(fitted.omitted) or "-",
        "cost_usd": cost_usd(name, int(n_in), int(n_out)),
        "latency_s": reply.latency_s if reply else 0.0,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def structured_call(
    model: BaseChatModel,
    prompt_name: str,
    template: str,
    variables: dict[str, Any],
    schema: type[M],
    *,
    log_dir: Path | None,
    retries: int = 2,
    check: Callable[[M], None] | None = None,
    metadata: dict[str, Any] | None = None,
) -> M:
    """Fit, call, parse, validate (and `check`, which raises ValueError to reject), retry with the error shown.

    `variables` may hold agent.llm.budget Fittables (the paper view, the ledger): the prompt is cut to the model's
    window before any call. Returns a validated `schema` instance. Raises LLMOutputError after `retries` retries,
    LLMRefusedError (an LLMOutputError) for a deterministic refusal (the prompt cannot fit, a 4xx), LLMCallError
    when the endpoint keeps failing, PromptError when the variables do not match the template (our bug).
    """
    call = _Call(model, prompt_name, template, variables, schema, log_dir, metadata or {}, retries)
    return call.run(check)


def _excerpt(raw: str, limit: int = 600) -> str:
    """The start of a rejected reply, shown back to the model: a retry never resends a whole junk reply."""
    raw = raw.strip()
    return raw if len(raw) <= limit else f"{raw[:limit]}\n[... {len(raw) - limit:,} more characters not repeated]"


def requested_parts(raw: str) -> list[str]:
    """The section titles / claim ids a reply asks for with {"need": [...]}, or []."""
    try:
        value = extract_json(raw)
    except ValueError:
        return []
    if isinstance(value, dict) and isinstance(value.get("need"), list):
        return [str(item) for item in value["need"] if str(item).strip()][:10]
    return []


class _Call:
    """One structured call: the fitted prompt, its attempts, the one follow-up for left-out parts, the logs."""

    def __init__(
        self,
        model: BaseChatModel,
        prompt_name: str,
        template: str,
        variables: dict[str, Any],
        schema: type[BaseModel],
        log_dir: Path | None,
        metadata: dict[str, Any],
        retries: int,
    ) -> None:
        self.model, self.prompt_name, self.template, self.schema = model, prompt_name, template, schema
        self.variables, self.log_dir, self.metadata, self.retries = variables, log_dir, metadata, retries
        self.name = model_name(model)
        self.counter = budget.TokenCounter.for_model(self.name)
        self.window = budget.context_window(model, self.name)
        self.attempt = 0
        try:
            self.fitted = self._fit()
        except endpoint.PromptTooLargeError as exc:
            self._log_refusal(exc)
            raise

    def _log_refusal(self, exc: endpoint.PromptTooLargeError) -> None:
        """A prompt refused before any call is on disk too: what it held, and why it was not sent."""
        if self.log_dir is None:
            return
        shown = {k: (v if isinstance(v, str) else f"[{type(v).__name__}]") for k, v in self.variables.items()}
        messages = first_messages(self.prompt_name, self.template, shown, self.schema)
        meta = {"prompt_name": self.prompt_name, "model": self.name, "attempt": 0, "valid": "no", "error": str(exc),
                "endpoint": "(not sent)", "finish_reason": "(refused before the call)",
                "window": f"{self.window.tokens} ({self.window.source})"}  # fmt: skip
        _log_call(Path(self.log_dir), self.prompt_name, messages, "(not sent)", meta)

    def _fit(self) -> budget.Fitted:
        def build(values: dict[str, str], note: str) -> list[BaseMessage]:
            return first_messages(self.prompt_name, self.template, values, self.schema, note=note)

        return budget.fit(
            self.prompt_name, self.variables, build, counter=self.counter, window=self.window, model=self.name
        )

    def _log(self, messages: list[BaseMessage], raw: str, reply: endpoint.Reply | None, error: str) -> None:
        if self.log_dir is None:
            return
        meta = {
            "prompt_name": self.prompt_name,
            "model": self.name,
            "attempt": self.attempt,
            "max_attempts": self.retries + 1,
            **_attempt_meta(reply, self.name, self.fitted, error),
            "variables": ", ".join(sorted(self.variables)),
            **self.metadata,
        }
        _log_call(Path(self.log_dir), self.prompt_name, messages, raw, meta)

    def _send(self, messages: list[BaseMessage], max_tokens: int) -> endpoint.Reply:
        """One call; a failure at the server is logged (with the prompt that caused it) before it propagates."""
        try:
            return endpoint.call(self.model, messages, max_tokens=max_tokens, prompt_name=self.prompt_name)
        except (endpoint.LLMRefusedError, endpoint.LLMCallError) as exc:
            self._log(messages, f"(no reply: {exc})", None, str(exc))
            raise

    def _refit_smaller(self, exc: endpoint.ContextLengthError) -> None:
        """The server counted more than we did: fit again to its window and its count, never resend unchanged."""
        before = self.fitted.messages
        window = exc.window or int(self.window.tokens * 0.8)
        ratio = (exc.prompt_tokens / self.fitted.prompt_tokens) if exc.prompt_tokens else 1.25
        self.counter.scale *= min(4.0, max(1.15, ratio))
        self.window = budget.Window(min(window, self.window.tokens), f"{endpoint.endpoint_of(self.model)} said so")
        self.fitted = self._fit()  # raises PromptTooLargeError when it cannot be cut further
        if self.fitted.messages == before:
            raise endpoint.LLMRefusedError(f"{exc}; the prompt cannot be made smaller, use a larger model") from exc

    def run(self, check: Callable[[Any], None] | None) -> Any:
        messages, max_tokens = self.fitted.messages, self.fitted.max_tokens
        followed_up = refitted = False
        error = ""
        while self.attempt < self.retries + 1:
            self.attempt += 1
            try:
                reply = self._send(messages, max_tokens)
            except endpoint.ContextLengthError as exc:
                if refitted:
                    raise
                refitted = True
                self._refit_smaller(exc)
                messages, max_tokens = self.fitted.messages, self.fitted.max_tokens
                self.attempt -= 1  # a smaller prompt, not a retry of a reply
                continue
            base = self.fitted.messages
            if reply.finish_reason == "time" and not reply.text.strip():
                message = (
                    f"LLM call {self.prompt_name} to {self.name} at {reply.endpoint}: no token within "
                    f"{endpoint.max_call_s():.0f} s (the server is too slow for a {self.fitted.prompt_tokens:,}-token "
                    "prompt: raise REPLICATE_LLM_MAX_CALL_S, or lower --context-tokens)"
                )
                self._log(messages, "(no reply within the time bound)", reply, message)
                raise endpoint.LLMCallError(message)
            if reply.finish_reason in ("length", "time"):
                room = int(self.window.tokens * budget.SLACK) - self.fitted.prompt_tokens - 16
                error = f"the reply was cut off at {max_tokens} tokens (finish reason {reply.finish_reason!r})"
                advice = "Reply again with the complete JSON object."
                if max_tokens >= room or reply.finish_reason == "time":
                    advice = "Reply again, much shorter: the same JSON object with brief texts, no prose around it."
                max_tokens = max(max_tokens, room)
                self._log(messages, reply.text, reply, error)
                messages = [*base, HumanMessage(prompts.render(prompts.RETRY, {"error": f"{error}. {advice}"}))]
                continue
            need = requested_parts(reply.text) if self.fitted.omitted and not followed_up else []
            if need:
                known = [name for part in budget.fittables_of(self.prompt_name, self.variables).values()
                         for name in part.request(need)]  # fmt: skip
                if known:
                    followed_up = True
                    self._log(messages, reply.text, reply, f"asked for left-out parts: {', '.join(known)}")
                    self.fitted = self._fit()
                    messages, max_tokens = self.fitted.messages, self.fitted.max_tokens
                    self.attempt -= 1  # the follow-up the prompt offered, not a retry
                    continue
            value, error = parse_reply(reply.text, self.schema, check)
            self._log(messages, reply.text, reply, error)
            if value is not None:
                return value
            retry = prompts.render(prompts.RETRY, {"error": error})
            messages = [*base, AIMessage(_excerpt(reply.text)), HumanMessage(retry)]
        raise LLMOutputError(
            f"{self.prompt_name}: the LLM reply did not validate after {self.retries + 1} attempts: {error}"
        )
