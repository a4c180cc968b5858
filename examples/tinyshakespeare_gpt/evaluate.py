"""The fixed evaluation of the tinyshakespeare GPT: data split, vocabulary and validation loss.

`replicate tune` hashes this file before and after every trial and rejects any trial that changes it, so a proposer
(Optuna or an LLM editing train.py) can change the model and the training but never the yardstick. Everything that
decides what the metric means lives here: the character vocabulary (built from the whole text, as nanoGPT does), the
90/10 train/val split (the last 10% of the characters are validation), and the loss: mean next-character
cross-entropy in nats over a fixed, contiguous prefix of the validation split, cut into non-overlapping windows of the
model's context length. No sampling is involved, so two evaluations of the same weights give the same number.

train.py must give a model whose `model(idx)` returns logits of shape (batch, time, vocab) (or a tuple whose first
element is that), and must not see the validation characters during training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

VAL_FRACTION = 0.1
DEFAULT_EVAL_TOKENS = 32768
EVAL_BATCH = 64  # windows per forward pass; only affects memory, not the number


@dataclass(frozen=True)
class CharData:
    """The encoded corpus, split once. `train` and `val` are int64 tensors of character ids."""

    chars: tuple[str, ...]
    train: torch.Tensor
    val: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.chars)}
        return [index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


def load_data(path: str | Path) -> CharData:
    """Read the corpus, build the character vocabulary and split it 90/10 (train first, validation last)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tinyshakespeare text not found: {path}")
    text = path.read_text(encoding="utf-8")
    if len(text) < 1000:
        raise ValueError(f"{path} has only {len(text)} characters; expected the tinyshakespeare corpus")
    chars = tuple(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    cut = int(len(ids) * (1 - VAL_FRACTION))
    return CharData(chars=chars, train=ids[:cut], val=ids[cut:])


@torch.no_grad()
def val_loss(
    model: torch.nn.Module,
    data: CharData,
    block_size: int,
    *,
    device: str = "cpu",
    eval_tokens: int = DEFAULT_EVAL_TOKENS,
) -> float:
    """Mean next-character cross-entropy (nats) over the first `eval_tokens` predictions of the validation split.

    The validation prefix is cut into non-overlapping windows of `block_size` inputs (plus the next character as the
    last target); every window position counts, as in nanoGPT's estimate_loss, but deterministically.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    n_windows = max(1, min(eval_tokens, len(data.val) - 1) // block_size)
    starts = torch.arange(n_windows) * block_size
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for lo in range(0, n_windows, EVAL_BATCH):
            batch = starts[lo : lo + EVAL_BATCH]
            x = torch.stack([data.val[s : s + block_size] for s in batch.tolist()]).to(device)
            y = torch.stack([data.val[s + 1 : s + 1 + block_size] for s in batch.tolist()]).to(device)
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out
            if logits.shape[:2] != y.shape or logits.shape[-1] != data.vocab_size:
                raise ValueError(
                    f"model returned logits of shape {tuple(logits.shape)}; "
                    f"expected ({len(batch)}, {block_size}, {data.vocab_size})"
                )
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
            total += float(loss)
            count += y.numel()
    finally:
        model.train(was_training)
    result = total / count
    if not math.isfinite(result):
        raise FloatingPointError(f"validation loss is {result}")
    return result
