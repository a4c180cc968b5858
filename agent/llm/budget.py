"""The context budget: every prompt is measured against the model's window before it is sent, and cut to fit.

- Tokens are counted with tiktoken for OpenAI models when its encoding is on disk (it is never downloaded at run
  time), else estimated: about 3.5 characters a token, each digit a token of its own (the small open models split
  numbers digit by digit, and a claims ledger is mostly numbers).
- The window is, in this order: `--context-tokens N` / `REPLICATE_CONTEXT_TOKENS`, what an OpenAI-compatible server
  reports in /v1/models (vLLM's `max_model_len`, OpenRouter's `context_length`, llama.cpp's `n_ctx`), the known
  window of a common model, else a conservative default of 8,192.
- A prompt's large parts are `Fittable`s: the paper view (`PaperText`: sections kept in `SELECTION_ORDER`, method and
  setup before related work and references), the claims ledger (`Ledger`: the likely targets in full, the rest as
  an id list), long texts (`Text`: head or tail kept). `fit` gives each its share of what the window leaves after
  the fixed text and the reply, says what it left out, and raises `PromptTooLargeError` (one line: model, window,
  prompt size, what to do) when even the smallest form does not fit, before any call is made.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage

from agent.llm.endpoint import PromptTooLargeError, base_url_of, server_window
from retrieval.models import Claim
from retrieval.paper_view import PaperView, ViewSection

DEFAULT_WINDOW = 8192
# Characters per token of the estimate. 4 is the usual rule for English prose; prompts here are markdown tables, JSON
# schemas and code, which tokenize denser: against SmolLM2's server, 4 undercounted a draft_spec prompt by 7% (2,890
# counted, 3,098 served), 3.5 over-counts it slightly, the safe side.
CHARS_PER_TOKEN = 3.5
SLACK = 0.95  # fit prompt + reply into 95% of the window: our count is an estimate where tiktoken is not used
ENV_WINDOW = "REPLICATE_CONTEXT_TOKENS"
MESSAGE_OVERHEAD = 8  # role markers and separators per message, as chat templates add them

# Known windows by model-name prefix (the last path part, lower case; the longest prefix wins).
KNOWN_WINDOWS: dict[str, int] = {
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "claude": 200_000,
    "gemini": 1_000_000,
    "llama-3.1": 131_072,
    "llama-3.2": 131_072,
    "llama-3.3": 131_072,
    "meta-llama-3.1": 131_072,
    "qwen2.5": 32_768,
    "qwen3": 32_768,
    "mistral": 32_768,
    "mixtral": 32_768,
    "deepseek": 65_536,
    "smollm2": 8_192,
    "smollm": 2_048,
    "scripted": 1_000_000,
}

# What each prompt's reply needs (tokens), before the window caps it: a spec or code is long, a query list short.
REPLY_TOKENS: dict[str, int] = {
    "draft_spec": 3000,
    "implement_code": 6000,
    "fix_code": 6000,
    "hypothesis_queries": 300,
    "hypotheses": 2000,
    "tune_search": 300,
    "tune_propose": 3000,
}
DEFAULT_REPLY = 2000
MIN_REPLY = 256

# Plain-text variables that may be cut when a prompt does not fit, and which end to keep: without this, a long code
# listing or log digest would make a prompt unsendable although the rest fits.
TEXT_POLICY: dict[str, dict[str, Literal["head", "tail"]]] = {
    "draft_spec": {"related": "head", "setup": "head", "abstract": "head", "local_data": "head"},
    "implement_code": {"existing_files": "head", "spec": "head"},
    "fix_code": {"files": "head", "diff": "tail", "digest": "tail", "problem": "head", "spec": "head"},
    "hypothesis_queries": {"verdicts": "head", "checklist": "head"},
    "hypotheses": {"literature": "head", "setup": "head", "checklist": "head", "verdicts": "head", "config": "head"},
    "tune_search": {"history": "tail", "experiment": "head"},
    "tune_propose": {"code": "head", "history": "tail", "papers": "head", "experiment": "head", "knobs": "head"},
}


# --------------------------------------------------------------------------- counting


_DIGIT = re.compile(r"\d")
_OPENAI_NAME = re.compile(r"^(gpt-|o\d|text-embedding|chatgpt)", re.I)
_TIKTOKEN_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}


def _tiktoken_encoding(model: str) -> Any:
    """The model's tiktoken encoding when it is already cached on disk; None otherwise (never downloads)."""
    if not _OPENAI_NAME.match(model):
        return None
    try:
        import tiktoken
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return None
    url = _TIKTOKEN_URLS.get(name)
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    folder = Path(cache) if cache else Path(tempfile.gettempdir()) / "data-gym-cache"
    if url is None or not (folder / hashlib.sha1(url.encode()).hexdigest()).exists():
        return None
    return tiktoken.get_encoding(name)


@dataclass
class TokenCounter:
    """Counts tokens of a text for one model: exactly with tiktoken where possible, else the estimate."""

    model: str
    scale: float = 1.0  # raised when a server reports more tokens than we counted
    encoding: Any = None
    method: str = f"estimate ({CHARS_PER_TOKEN} chars/token, digits 1 each)"

    @classmethod
    def for_model(cls, model: str) -> TokenCounter:
        name = model.split("/")[-1]
        encoding = _tiktoken_encoding(name)
        if encoding is not None:
            return cls(model=model, encoding=encoding, method=f"tiktoken {encoding.name}")
        return cls(model=model)

    def count(self, text: str) -> int:
        if self.encoding is not None:
            return int(len(self.encoding.encode(text, disallowed_special=())) * self.scale)
        digits = len(_DIGIT.findall(text))
        return int(((len(text) - digits) / CHARS_PER_TOKEN + digits) * self.scale) + 1

    def count_messages(self, messages: Sequence[BaseMessage]) -> int:
        return sum(self.count(str(m.content)) + MESSAGE_OVERHEAD for m in messages)


def compact_schema(schema: Any) -> Any:
    """A JSON schema without pydantic's "title" annotations (a fifth of a schema, saying what the names say).

    Only the annotation is dropped: inside "properties" and "$defs" the keys are names, and a field called "title"
    stays.
    """
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: compact_schema(sub) for name, sub in value.items()}
        else:
            out[key] = compact_schema(value)
    return out


# --------------------------------------------------------------------------- the window


@dataclass(frozen=True)
class Window:
    tokens: int
    source: str


def known_window(model: str) -> int | None:
    name = model.split("/")[-1].lower()
    matches = [prefix for prefix in KNOWN_WINDOWS if name.startswith(prefix)]
    return KNOWN_WINDOWS[max(matches, key=len)] if matches else None


def context_window(chat_model: Any, model: str) -> Window:
    """The window to fit prompts into for `chat_model` (named `model`); see the module docstring for the order."""
    given = os.environ.get(ENV_WINDOW, "").strip()
    if given:
        if not given.isdigit() or int(given) < 512:
            raise PromptTooLargeError(f"{ENV_WINDOW}={given!r}: give the model's window in tokens (at least 512)")
        return Window(int(given), "--context-tokens / REPLICATE_CONTEXT_TOKENS")
    base = base_url_of(chat_model)
    if base:
        reported = server_window(base, model)
        if reported:
            return Window(reported, f"reported by {base}/models")
    known = known_window(model)
    if known:
        return Window(known, f"known window of {model}")
    return Window(DEFAULT_WINDOW, "default (set --context-tokens N or REPLICATE_CONTEXT_TOKENS)")


def reply_reserve(prompt_name: str, window: int) -> tuple[int, int]:
    """(tokens kept free for the reply, the reply's wish): at most a quarter of a small window, at least MIN_REPLY."""
    wish = REPLY_TOKENS.get(prompt_name, DEFAULT_REPLY)
    return max(MIN_REPLY, min(wish, window // 4)), wish


# --------------------------------------------------------------------------- fittable parts


@dataclass
class Rendered:
    text: str
    omitted: list[str] = field(default_factory=list)


@runtime_checkable
class Fittable(Protocol):
    """A prompt part that can be rendered smaller: `render(budget)` in at most `budget` tokens (or its minimum)."""

    label: str
    share: float

    def render(self, budget: int, counter: TokenCounter) -> Rendered: ...

    def minimal(self) -> Rendered: ...

    def request(self, names: Sequence[str]) -> list[str]:
        """Force the named parts in on the next render; returns the names it knows."""
        ...


def _cut(text: str, budget: int, counter: TokenCounter, keep: Literal["head", "tail"]) -> str:
    """`text` cut (at a line or word boundary) to about `budget` tokens, marked where it was cut."""
    if counter.count(text) <= budget:
        return text
    ratio = max(0.0, budget / max(1, counter.count(text)))
    size = int(len(text) * ratio * 0.95)
    while size > 0:
        piece = text[:size] if keep == "head" else text[len(text) - size :]
        mark = f"[... {len(text) - size:,} characters cut to fit the window ...]"
        out = f"{piece.rstrip()}\n{mark}" if keep == "head" else f"{mark}\n{piece.lstrip()}"
        if counter.count(out) <= budget:
            return out
        size = int(size * 0.85)
    return f"[{len(text):,} characters left out to fit the window]"


@dataclass
class Text:
    """A long plain text (code, a log digest, a diff): its head or tail is kept."""

    text: str
    label: str
    keep: Literal["head", "tail"] = "head"
    share: float = 1.0

    def render(self, budget: int, counter: TokenCounter) -> Rendered:
        out = _cut(self.text, budget, counter, self.keep)
        return Rendered(out, [] if out == self.text else [f"{self.label} (cut, {self.keep} kept)"])

    def minimal(self) -> Rendered:
        if len(self.text) <= 200:
            return Rendered(self.text)
        return Rendered(f"[{len(self.text):,} characters left out to fit the window]", [f"{self.label} (left out)"])

    def request(self, names: Sequence[str]) -> list[str]:
        return []


@dataclass
class PaperText:
    """The paper view, whole when it fits; else sections in SELECTION_ORDER (requested ones first), paper order kept.

    `only` restricts it to some sections (implement_code: the sections the spec cites and the method/setup ones).
    """

    view: PaperView
    label: str = "paper"
    only: list[str] | None = None
    share: float = 3.0
    forced: list[str] = field(default_factory=list)

    def _candidates(self) -> list[ViewSection]:
        if self.only is None:
            return self.view.sections
        chosen = {id(s) for name in self.only if (s := self.view.section(name)) is not None}
        return [s for s in self.view.sections if id(s) in chosen]

    def _left_out(self, kept: list[ViewSection], cut: set[int]) -> list[str]:
        # Only what the paper has and this prompt could have shown is named; a restricted view names the rest too.
        kept_ids = {id(s) for s in kept}
        names = [f'section "{s.title}"' for s in self.view.sections if id(s) not in kept_ids]
        return names + [f'section "{s.title}" (cut)' for s in kept if id(s) in cut]

    def render(self, budget: int, counter: TokenCounter) -> Rendered:
        candidates = self._candidates()
        forced = [s for name in self.forced if (s := self.view.section(name)) is not None]
        order = forced + [s for s in self.view.ordered_for_selection() if s in candidates and s not in forced]
        kept: list[ViewSection] = []
        texts: dict[int, str] = {}
        cut: set[int] = set()
        left = budget
        for section in order:
            text = section.render()
            need = counter.count(text) + 2
            if need <= left:
                kept.append(section)
                texts[id(section)] = text
                left -= need
            elif (left > 300 and section.kind in ("abstract", "method", "setup", "experiments")) or (
                section in forced and left > 60
            ):
                texts[id(section)] = _cut(text, left - 20, counter, "head")
                kept.append(section)
                cut.add(id(section))
                left -= counter.count(texts[id(section)]) + 2
        in_order = [s for s in self.view.sections if s in kept]
        body = "\n\n".join(texts[id(s)] for s in in_order) or "(no section fits the window)"
        return Rendered(body, self._left_out(kept, cut))

    def minimal(self) -> Rendered:
        titles = [s.title for s in self.view.sections]
        return Rendered(
            "(the paper text does not fit the window; sections: " + "; ".join(titles) + ")",
            [f'section "{t}"' for t in titles],
        )

    def request(self, names: Sequence[str]) -> list[str]:
        known = [name for name in names if self.view.section(name) is not None]
        self.forced = [*self.forced, *known]
        return known


def claim_line(c: Claim) -> str:
    where = f"{c.table} row={c.row!r} col={c.column!r}" if c.table else "text"
    cited = " | cited (other work's number)" if c.cited else ""
    return (
        f"{c.id} | {c.value} | {c.text} | std={c.std} | metric={c.metric} | dataset={c.dataset} | "
        f"method={c.method} | {where} | p{c.page}{cited}"
    )


_TABLE_ID = re.compile(r"^(?P<table>.+)-r(?P<row>\d+)-c(?P<col>\d+)$")


def compact_ids(ids: Sequence[str]) -> str:
    """Claim ids as short as they can be listed: table ids grouped as `T3-r{1..126}-c{2,3}`, others one by one."""
    groups: dict[str, tuple[set[int], set[int]]] = {}
    loose: list[str] = []
    for claim_id in ids:
        match = _TABLE_ID.match(claim_id)
        if match:
            rows, cols = groups.setdefault(match.group("table"), (set(), set()))
            rows.add(int(match.group("row")))
            cols.add(int(match.group("col")))
        else:
            loose.append(claim_id)

    def span(numbers: set[int]) -> str:
        ordered = sorted(numbers)
        if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 2:
            return f"{ordered[0]}..{ordered[-1]}"
        return ",".join(map(str, ordered))

    parts = [f"{t}-r{{{span(r)}}}-c{{{span(c)}}}" for t, (r, c) in groups.items()]
    return ", ".join(parts + loose)


@dataclass
class Ledger:
    """The claims ledger: the claims a replication most likely targets in full, the rest as an id list."""

    claims: list[Claim]
    label: str = "claims ledger"
    share: float = 2.0
    forced: list[str] = field(default_factory=list)

    def _ranked(self) -> list[Claim]:
        # Own results before cited ones; text claims (the paper's headline numbers) and then table order.
        position = {c.id: i for i, c in enumerate(self.claims)}
        forced = [c for c in self.claims if c.id in self.forced]
        rest = sorted(
            (c for c in self.claims if c.id not in self.forced),
            key=lambda c: (c.cited, c.table is not None, position[c.id]),
        )
        return forced + rest

    def render(self, budget: int, counter: TokenCounter) -> Rendered:
        if not self.claims:
            return Rendered("(no claims found)")
        whole = "\n".join(claim_line(c) for c in self.claims)
        if counter.count(whole) <= budget:
            return Rendered(whole)
        shown: list[Claim] = []
        left = budget - counter.count(self._rest_line(self.claims)) - 4
        for claim in self._ranked():
            need = counter.count(claim_line(claim)) + 1
            if need > left:
                break
            shown.append(claim)
            left -= need
        kept = {c.id for c in shown}
        rest = [c for c in self.claims if c.id not in kept]
        lines = [claim_line(c) for c in self.claims if c.id in kept] + [self._rest_line(rest)]
        return Rendered("\n".join(lines), [f"{len(rest)} of {len(self.claims)} claims (listed by id only)"])

    def _rest_line(self, rest: Sequence[Claim]) -> str:
        return f"other claims (ids only; ask for any by id): {compact_ids([c.id for c in rest])}" if rest else ""

    def minimal(self) -> Rendered:
        if not self.claims:
            return Rendered("(no claims found)")
        return Rendered(self._rest_line(self.claims), [f"all {len(self.claims)} claims (listed by id only)"])

    def request(self, names: Sequence[str]) -> list[str]:
        ids = {c.id for c in self.claims}
        known = [name for name in names if name in ids]
        self.forced = [*self.forced, *known]
        return known


# --------------------------------------------------------------------------- fitting a prompt


@dataclass
class Fitted:
    messages: list[BaseMessage]
    prompt_tokens: int
    max_tokens: int
    window: Window
    omitted: list[str]
    counter: TokenCounter


Build = Callable[[dict[str, str], str], list[BaseMessage]]


def omitted_note(omitted: Sequence[str], window: int) -> str:
    if not omitted:
        return ""
    return (
        f"Left out to fit the model's window ({window:,} tokens): " + "; ".join(omitted) + ". If you need one of "
        'them, reply with only {"need": ["<section title or claim id>", ...]} instead, once; it will be sent.'
    )


def fittables_of(prompt_name: str, variables: dict[str, Any]) -> dict[str, Fittable]:
    """The variables that can shrink: Fittable values, plus long strings the prompt's TEXT_POLICY lets us cut."""
    policy = TEXT_POLICY.get(prompt_name, {})
    parts: dict[str, Fittable] = {}
    for key, value in variables.items():
        if isinstance(value, Fittable):
            parts[key] = value
        elif isinstance(value, str) and key in policy and len(value) > 400:
            parts[key] = Text(value, label=key.replace("_", " "), keep=policy[key])
    return parts


def fit(
    prompt_name: str,
    variables: dict[str, Any],
    build: Build,
    *,
    counter: TokenCounter,
    window: Window,
    model: str,
) -> Fitted:
    """The prompt's messages within `window`, with room for the reply. Raises PromptTooLargeError (before a call)."""
    parts = fittables_of(prompt_name, variables)
    fixed = {k: str(v) for k, v in variables.items() if k not in parts}
    reserve, wish = reply_reserve(prompt_name, window.tokens)
    limit = int(window.tokens * SLACK) - reserve - 16
    smallest = {key: part.minimal() for key, part in parts.items()}
    floor_omitted = [item for r in smallest.values() for item in r.omitted]
    floor_messages = build(
        {**fixed, **{k: r.text for k, r in smallest.items()}}, omitted_note(floor_omitted, window.tokens)
    )
    floor = counter.count_messages(floor_messages)
    if floor > limit:
        raise PromptTooLargeError(
            f"{prompt_name}: the prompt needs ~{floor:,} tokens even with the paper, the ledger and long texts cut to "
            f"their minimum, but {model}'s window is {window.tokens:,} tokens ({window.source}) with {reserve:,} kept "
            f"for the reply; use a model with a larger window, or set --context-tokens N if its window is larger"
        )
    spare = limit - floor
    for _ in range(4):  # our token counts of the parts and of the whole differ a little: shrink until it fits
        rendered = _allocate(parts, smallest, spare, counter)
        omitted = [item for r in rendered.values() for item in r.omitted]
        note = omitted_note(omitted, window.tokens)
        messages = build({**fixed, **{k: r.text for k, r in rendered.items()}}, note)
        tokens = counter.count_messages(messages)
        if tokens <= limit:
            room = int(window.tokens * SLACK) - tokens - 16
            return Fitted(messages, tokens, max(MIN_REPLY, min(wish, room)), window, omitted, counter)
        spare -= tokens - limit + 32
    # Every part at its smallest is known to fit (the floor above).
    room = int(window.tokens * SLACK) - floor - 16
    return Fitted(floor_messages, floor, max(MIN_REPLY, min(wish, room)), window, floor_omitted, counter)


def _allocate(
    parts: dict[str, Fittable], smallest: dict[str, Rendered], spare: int, counter: TokenCounter
) -> dict[str, Rendered]:
    """Share `spare` tokens among the parts by their shares; what a whole part does not use goes to the cut ones."""
    rendered = dict(smallest)
    if not parts or spare <= 0:
        return rendered
    base = {key: counter.count(smallest[key].text) for key in parts}
    total = sum(part.share for part in parts.values())
    grants = {key: int(spare * part.share / total) for key, part in parts.items()}
    for key, part in parts.items():
        rendered[key] = part.render(base[key] + grants[key], counter)
    used = sum(max(0, counter.count(rendered[key].text) - base[key]) for key in parts)
    cut = {key: part for key, part in parts.items() if rendered[key].omitted}
    leftover = spare - used
    if cut and leftover > 50:
        cut_total = sum(part.share for part in cut.values())
        for key, part in cut.items():
            extra = int(leftover * part.share / cut_total)
            rendered[key] = part.render(base[key] + grants[key] + extra, counter)
    return rendered
