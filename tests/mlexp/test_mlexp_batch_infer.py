"""Batch inference through the transformers path with a tiny GPT-2 built here (random weights, offline tokenizer)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from mlexp.batch_infer import PromptItem, batch_generate, order_for_prefix_cache, pick_backend, shared_prefix_chars

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 1-layer GPT-2 with a word-level tokenizer, saved like a hub model and loaded back by path."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = "rate the review from 1 to 6 : great bad okay movie plot acting 2 3 4 5 score is".split()
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<eos>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>",
                                             *dict.fromkeys(words)])}  # fmt: skip
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    import torch

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        eos_token_id=1, bos_token_id=1)  # fmt: skip
    model = GPT2LMHeadModel(config)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def parse_score(text: str) -> float:
    match = re.search(r"\b([1-6])\b", text)
    if not match:
        raise ValueError("no score 1-6 in the output")
    return float(match.group(1))


def test_prefix_cache_ordering_groups_shared_prefixes() -> None:
    texts = ["SYS A q1", "SYS B q1", "SYS A q2", "SYS B q2", "SYS A q3"]
    order = order_for_prefix_cache(texts)
    assert [texts[i] for i in order] == ["SYS A q1", "SYS A q2", "SYS A q3", "SYS B q1", "SYS B q2"]
    assert shared_prefix_chars([texts[i] for i in order]) > shared_prefix_chars(texts)
    assert pick_backend(object()) == "transformers"


def test_transformers_batch_generation_keeps_every_pair(tiny_model: Path, tmp_path: Path) -> None:
    reviews = ["great movie", "bad plot", "okay acting", "great plot", "bad acting", "okay movie", "great acting"]
    items = []
    for i, review in enumerate(reviews):
        system = "rate the review from 1 to 6" if i % 2 else "score the review from 1 to 6"
        items.append(PromptItem(sample_id=f"r{i}", group="even" if i % 2 == 0 else "odd", ground_truth=3.0 + i % 3,
                                valid_range=(1.0, 6.0), messages=[{"role": "system", "content": system},
                                                                  {"role": "user", "content": review}]))  # fmt: skip
    items.append(PromptItem(sample_id="raw", prompt="score is", ground_truth=4, group="odd"))
    logs: list[str] = []
    table = batch_generate(items, model=str(tiny_model), out_dir=tmp_path, parse=parse_score, batch_size=3,
                           max_new_tokens=6, log=logs.append)  # fmt: skip
    assert list(table["sample_id"]) == [item.sample_id for item in items], "results in input order"
    assert len(table) == len(items) and table["backend"].eq("transformers").all()
    assert table["input_text"].str.contains("<|assistant|>", regex=False).sum() == len(reviews), "template applied"
    assert sorted(table["order"]) == list(range(len(items)))
    batch_lines = [line for line in logs if line.startswith("batch ") and "/3:" in line]
    assert len(batch_lines) == 3
    assert all("prompts/s" in line and "ETA" in line and "parse failures so far" in line for line in batch_lines)
    assert any("prefix-cache ordering" in line for line in logs)
    assert (~table["parse_ok"]).sum() + table["parse_ok"].sum() == len(items)
    # §5 plain-text file for every call, with ground truth and valid range
    for item in items:
        group = item.group or "all"
        text = (tmp_path / "llm_logs" / group / f"{item.sample_id}.txt").read_text()
        assert text.index("=== INPUT ===") < text.index("=== OUTPUT ===") < text.index("=== METADATA ===")
        assert f"sample_id: {item.sample_id}" in text and f"ground_truth: {item.ground_truth}" in text
        row = table.set_index("sample_id").loc[item.sample_id]
        assert row["input_text"] in text and row["output_text"] in text
    assert "valid_range: [1.0, 6.0]" in (tmp_path / "llm_logs" / "even" / "r0.txt").read_text()
    stored = pd.read_parquet(tmp_path / "raw_outputs.parquet")
    assert len(stored) == len(items) and {"input_text", "output_text", "parse_ok", "ground_truth"} <= set(stored)
    failed = stored[~stored["parse_ok"]]
    assert failed["parse_error"].str.len().gt(0).all(), "every failure says why"


def test_every_output_parsed_when_the_parser_accepts_all(tiny_model: Path, tmp_path: Path) -> None:
    items = [PromptItem(sample_id=str(i), prompt=f"score is {i % 5 + 1}") for i in range(4)]
    table = batch_generate(items, model=str(tiny_model), out_dir=tmp_path, parse=len, batch_size=4,
                           max_new_tokens=3, log=lambda _: None)  # fmt: skip
    assert table["parse_ok"].all() and table["predicted"].notna().all()
    with pytest.raises(ValueError, match="unique"):
        batch_generate(items + items[:1], model=str(tiny_model), out_dir=tmp_path, log=lambda _: None)
