"""Batch LLM inference (§5, §12, §16): vLLM when installed and a GPU is present, otherwise transformers.

    items = [PromptItem(sample_id="42", messages=[...], group="A", ground_truth=5.0, valid_range=(1, 6)), ...]
    table = batch_generate(items, model="path/or/hub-id", out_dir=run_dir, parse=parse_score, log=log.info)

- Prompts are ordered for prefix caching: sorted by their templated text, so prompts sharing a prefix (system
  prompt, shared context) are adjacent and the prefix is computed once. Results come back in the input order.
- The long blocking generate call is split into batches, and each batch logs N/total, prompts/s, ETA and the parse
  failures so far (§12), so a broken run shows itself within minutes.
- Every input/output pair is kept: one plain-text file per call in the §5 layout (=== INPUT === with the chat
  template applied, === OUTPUT === raw, === METADATA === with ground truth and valid range) under
  out_dir/llm_logs/<group>/<sample_id>.txt, and all of them in out_dir/raw_outputs.parquet (input_text included).
  The .txt files are written as each batch finishes and the parquet every 30 s, so a run killed halfway keeps
  what it generated.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlexp import atomic
from mlexp.rundir import safe_name

FLUSH_EVERY_S = 30.0  # rewrite raw_outputs.parquet at most this often mid-run (the .txt files are per call)


@dataclass
class PromptItem:
    sample_id: str
    prompt: str | None = None  # raw text, used as is
    messages: list[dict[str, str]] | None = None  # chat messages, templated with the tokenizer's chat template
    group: str | None = None
    ground_truth: Any = None
    valid_range: tuple[float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def order_for_prefix_cache(texts: Sequence[str]) -> list[int]:
    """Indices that put prompts with a common prefix next to each other (lexicographic order of the text)."""
    return sorted(range(len(texts)), key=lambda i: (texts[i], i))


def shared_prefix_chars(texts: Sequence[str]) -> int:
    """Characters shared with the previous prompt, summed over the sequence: what a prefix cache can reuse."""
    total = 0
    for a, b in zip(texts, texts[1:], strict=False):
        n = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            n += 1
        total += n
    return total


def pick_backend(model: Any, backend: str = "auto") -> str:
    if backend != "auto":
        return backend
    if not isinstance(model, str | Path):
        return "transformers"
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return "transformers"
    return "vllm" if torch.cuda.is_available() else "transformers"


class _TransformersBackend:
    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int, temperature: float, seed: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        if isinstance(model, str | Path):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(model))
            model = AutoModelForCausalLM.from_pretrained(str(model))
        if tokenizer is None:
            raise ValueError("a tokenizer is needed when the model is passed as an object")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(self.device).eval()  # explicit placement, never device_map="auto" (§13)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # decoder-only batches must be left-padded
        self.notes: list[str] = []
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
            self.notes.append("tokenizer has no pad token: using eos as pad for generation only (§13)")
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.name = getattr(model.config, "_name_or_path", "") or type(model).__name__

    def template(self, item: PromptItem) -> str:
        if item.messages is not None:
            return str(self.tokenizer.apply_chat_template(item.messages, tokenize=False, add_generation_prompt=True))
        return item.prompt or ""

    def generate(self, texts: list[str]) -> list[str]:
        torch = self.torch
        torch.manual_seed(self.seed)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = self.temperature > 0
        kwargs = {
            "do_sample": sample,
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sample:
            kwargs["temperature"] = self.temperature
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


class _VllmBackend:
    """vLLM with prefix caching. The engine is built once the prompts are known, with max_model_len just above the
    longest prompt plus the generation budget (§16: saves KV-cache memory)."""

    def __init__(self, model: str | Path, *, max_new_tokens: int, temperature: float, seed: int):
        from transformers import AutoTokenizer

        self.model, self.seed, self.max_new_tokens = str(model), seed, max_new_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(self.model)
        self.temperature = temperature
        self.llm: Any = None
        self.notes: list[str] = ["vLLM with automatic prefix caching"]
        self.name = self.model

    def template(self, item: PromptItem) -> str:
        if item.messages is not None:
            return str(self.tokenizer.apply_chat_template(item.messages, tokenize=False, add_generation_prompt=True))
        return item.prompt or ""

    def prepare(self, texts: Sequence[str]) -> None:
        from vllm import LLM, SamplingParams

        longest = max(len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        max_len = longest + self.max_new_tokens + 8
        self.llm = LLM(model=self.model, enable_prefix_caching=True, gpu_memory_utilization=0.85,
                       max_model_len=max_len, seed=self.seed)  # fmt: skip
        self.params = SamplingParams(temperature=self.temperature, max_tokens=self.max_new_tokens, seed=self.seed)
        self.notes.append(f"max_model_len {max_len} (longest prompt {longest} tokens)")

    def generate(self, texts: list[str]) -> list[str]:
        return [o.outputs[0].text for o in self.llm.generate(texts, self.params, use_tqdm=False)]


def _parse(parse: Callable[[str], Any] | None, text: str) -> tuple[Any, bool, str]:
    if parse is None:
        return text, True, ""
    try:
        value = parse(text)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a recorded parse failure, never a crash
        return None, False, f"{type(exc).__name__}: {exc}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, False, "parser returned nothing"
    return value, True, ""


def io_text(row: dict[str, Any]) -> str:
    """The §5 plain-text record of one call."""
    meta = {
        "sample_id": row["sample_id"], "group": row["group"], "ground_truth": row["ground_truth"],
        "predicted": row["parsed"], "parse_ok": row["parse_ok"], "error": row["error"],
        "valid_range": row["valid_range"], "model": row["model"], "backend": row["backend"],
    }  # fmt: skip
    if row["parse_error"]:
        meta["parse_error"] = row["parse_error"]
    meta.update(json.loads(row["meta"]) if row["meta"] else {})
    lines = ["=== INPUT ===", row["input_text"], "", "=== OUTPUT ===", row["output_text"], "", "=== METADATA ==="]
    lines += [f"{k}: {v}" for k, v in meta.items()]
    return "\n".join(lines) + "\n"


def _error(parsed: Any, truth: Any) -> float | None:
    try:
        return abs(float(parsed) - float(truth))
    except (TypeError, ValueError):
        return None


def batch_generate(
    items: Sequence[PromptItem],
    *,
    model: Any,
    out_dir: Path,
    tokenizer: Any = None,
    parse: Callable[[str], Any] | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    backend: str = "auto",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Generate for every item; returns one row per item in input order (see the module docstring)."""
    if not items:
        raise ValueError("no prompts to generate for")
    ids = [str(item.sample_id) for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("sample_id values must be unique: each names its own log file")
    kind = pick_backend(model, backend)
    if kind == "vllm":
        engine: Any = _VllmBackend(model, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    else:
        engine = _TransformersBackend(
            model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
        )
    texts = [engine.template(item) for item in items]
    if hasattr(engine, "prepare"):
        engine.prepare(texts)
    for note in engine.notes:
        log(f"batch inference: {note}")
    order = order_for_prefix_cache(texts)
    reuse = shared_prefix_chars([texts[i] for i in order])
    log(f"batch inference: {len(items)} prompts, backend {kind}, batches of {batch_size};"
        f" prefix-cache ordering shares {reuse} prompt characters with the previous prompt")  # fmt: skip
    out_dir = Path(out_dir)
    rows: list[dict[str, Any] | None] = [None] * len(items)
    failures = 0
    t0 = last_flush = time.perf_counter()
    n_batches = math.ceil(len(order) / batch_size)
    for b in range(n_batches):
        chunk = order[b * batch_size : (b + 1) * batch_size]
        outputs = engine.generate([texts[i] for i in chunk])
        for pos, (i, text) in enumerate(zip(chunk, outputs, strict=True)):
            item = items[i]
            parsed, ok, why = _parse(parse, text)
            failures += not ok
            row = {
                "sample_id": str(item.sample_id), "group": item.group or "all", "input_text": texts[i],
                "output_text": text, "parsed": json.dumps(parsed, default=str) if ok else None, "parse_ok": ok,
                "parse_error": why, "predicted": _num(parsed) if ok else None,
                "ground_truth": None if item.ground_truth is None else str(item.ground_truth),
                "error": _error(parsed, item.ground_truth) if ok else None,
                "valid_range": json.dumps(list(item.valid_range)) if item.valid_range else None,
                "model": engine.name, "backend": kind, "batch": b + 1, "order": b * batch_size + pos,
                "meta": json.dumps(item.meta, default=str) if item.meta else "",
            }  # fmt: skip
            rows[i] = row
            atomic.write_text(out_dir / "llm_logs" / safe_name(row["group"]) / f"{safe_name(row['sample_id'])}.txt",
                              io_text(row))  # fmt: skip
        done = min((b + 1) * batch_size, len(order))
        elapsed = time.perf_counter() - t0
        rate = done / elapsed if elapsed > 0 else float("inf")
        eta = (len(order) - done) / rate if rate > 0 else 0.0
        log(f"batch {b + 1}/{n_batches}: {done}/{len(order)} prompts | {rate:.3g} prompts/s | elapsed {elapsed:.1f}s"
            f" | ETA {eta:.1f}s | parse failures so far {failures}")  # fmt: skip
        if time.perf_counter() - last_flush > FLUSH_EVERY_S:  # the parquet stays current without O(n^2) rewrites
            atomic.write_parquet(out_dir / "raw_outputs.parquet", pd.DataFrame([r for r in rows if r is not None]))
            last_flush = time.perf_counter()
    table = pd.DataFrame(rows)
    atomic.write_parquet(out_dir / "raw_outputs.parquet", table)
    log(f"batch inference done: {len(table)} outputs, {failures} parse failures ({failures / len(table):.1%})")
    return table


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
