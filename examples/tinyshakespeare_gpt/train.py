"""A small character-level GPT on tinyshakespeare, following the mlexp run contract.

Reads its config from RUN_CONFIG (mlexp.log.load_config), SEED, SMOKE and DEVICE from the environment, logs progress
through mlexp.log.RunLogger (step 1 at once, then s/step and ETA) and ends with the final `key: value` block that the
harness parses into metrics.json. The metric, `val_loss`, comes from the fixed evaluate.py, which `replicate tune`
protects; everything in this file (model, optimiser, schedule) is fair game for a proposer.

Training stops at `max_iters` or when `time_budget_s` seconds of training have passed, whichever comes first, and
then evaluates. The learning-rate schedule runs on progress = max(iter / max_iters, elapsed / time_budget_s), so a
time-limited run still decays its learning rate fully by the end of its budget (as in karpathy/autoresearch).

Defaults are nanoGPT's small CPU configuration: 4 layers, 4 heads, 128 channels, context 64, batch 12, 2000 iters
(nanoGPT reports ~1.88 validation loss after ~3 minutes on a CPU).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))  # evaluate.py sits beside this file

import evaluate

from mlexp.log import RunLogger, load_config

DEFAULTS: dict = {
    "data_path": None,  # tinyshakespeare input.txt; None: $TINYSHAKESPEARE_PATH or ../shared/data/tinyshakespeare
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "block_size": 64,
    "batch_size": 12,
    "dropout": 0.0,
    "bias": False,
    "learning_rate": 1e-3,
    "min_lr_ratio": 0.1,  # final learning rate as a fraction of the peak
    "schedule": "cosine",  # cosine | linear | constant (after warmup)
    "warmup_iters": 100,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.99,
    "grad_clip": 1.0,  # 0 disables clipping
    "max_iters": 2000,
    "time_budget_s": 0.0,  # 0: no time limit, train for max_iters
    "eval_tokens": evaluate.DEFAULT_EVAL_TOKENS,
    "log_interval": 50,
    "threads": 0,  # torch CPU threads; 0 keeps torch's default
}


def resolve_config(raw: dict) -> dict:
    raw = {k: v for k, v in raw.items() if k not in ("seed", "smoke")}  # the harness adds these; read from env
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise SystemExit(f"config error: unknown keys {unknown}; known keys: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **raw}
    if cfg["n_embd"] % cfg["n_head"]:
        raise SystemExit(f"config error: n_embd={cfg['n_embd']} is not divisible by n_head={cfg['n_head']}")
    if cfg["schedule"] not in ("cosine", "linear", "constant"):
        raise SystemExit(f"config error: schedule must be cosine, linear or constant, got {cfg['schedule']!r}")
    return cfg


def find_data(cfg: dict) -> Path:
    candidates = [cfg["data_path"], os.environ.get("TINYSHAKESPEARE_PATH")]
    if os.environ.get("REPLICATE_SHARED"):
        candidates.append(Path(os.environ["REPLICATE_SHARED"]) / "data/tinyshakespeare/input.txt")
    for parent in Path(__file__).resolve().parents:
        candidates.append(parent / "shared/data/tinyshakespeare/input.txt")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit("data error: tinyshakespeare input.txt not found; set data_path in the config")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.n_head, self.dropout = cfg["n_head"], cfg["dropout"]
        self.qkv = nn.Linear(cfg["n_embd"], 3 * cfg["n_embd"], bias=cfg["bias"])
        self.proj = nn.Linear(cfg["n_embd"], cfg["n_embd"], bias=cfg["bias"])
        self.resid_drop = nn.Dropout(cfg["dropout"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_drop(self.proj(y.transpose(1, 2).contiguous().view(b, t, c)))


class Block(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        width = cfg["n_embd"]
        self.ln1 = nn.LayerNorm(width, bias=cfg["bias"])
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(width, bias=cfg["bias"])
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width, bias=cfg["bias"]),
            nn.GELU(),
            nn.Linear(4 * width, width, bias=cfg["bias"]),
            nn.Dropout(cfg["dropout"]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: dict, vocab_size: int):
        super().__init__()
        self.block_size = cfg["block_size"]
        self.tok = nn.Embedding(vocab_size, cfg["n_embd"])
        self.pos = nn.Embedding(cfg["block_size"], cfg["n_embd"])
        self.drop = nn.Dropout(cfg["dropout"])
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layer"]))
        self.ln_f = nn.LayerNorm(cfg["n_embd"], bias=cfg["bias"])
        self.head = nn.Linear(cfg["n_embd"], vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying, as in nanoGPT
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2 scaled init of the residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg["n_layer"]))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.drop(self.tok(idx) + self.pos(torch.arange(t, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]))


def lr_at(it: int, progress: float, cfg: dict) -> float:
    peak, floor = cfg["learning_rate"], cfg["learning_rate"] * cfg["min_lr_ratio"]
    if it < cfg["warmup_iters"]:
        return peak * (it + 1) / (cfg["warmup_iters"] + 1)
    progress = min(1.0, max(0.0, progress))
    if cfg["schedule"] == "constant":
        return peak
    if cfg["schedule"] == "linear":
        return peak - (peak - floor) * progress
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def main() -> None:
    log = RunLogger()
    smoke = os.environ.get("SMOKE") == "1"
    seed = int(os.environ.get("SEED", "0"))
    cfg = resolve_config(load_config())
    if smoke:  # a seconds-long end-to-end pass over the real code path
        cfg.update(max_iters=min(cfg["max_iters"], 5), eval_tokens=min(cfg["eval_tokens"], 2048), log_interval=1)
    device = os.environ.get("DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device error: DEVICE=cuda but torch sees no CUDA device")
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(seed)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    # bf16 autocast on GPU speeds up the larger config; the CPU path stays in fp32
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    )

    data = evaluate.load_data(find_data(cfg))
    model = GPT(cfg, data.vocab_size).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    bs, ctx = cfg["batch_size"], cfg["block_size"]
    log.info(
        f"device={device} params={n_params} vocab={data.vocab_size} train_chars={len(data.train)} "
        f"val_chars={len(data.val)} tokens/step={bs * ctx} max_iters={cfg['max_iters']} "
        f"time_budget_s={cfg['time_budget_s']} seed={seed} smoke={smoke}"
    )

    budget = float(cfg["time_budget_s"] or 0.0)
    started = time.monotonic()
    it, loss_value, stopped_by = 0, float("nan"), "iters"
    while it < cfg["max_iters"]:
        elapsed = time.monotonic() - started
        if budget and elapsed >= budget:
            stopped_by = "time"
            break
        progress = max(it / cfg["max_iters"], elapsed / budget if budget else 0.0)
        lr = lr_at(it, progress, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(len(data.train) - ctx - 1, (bs,), generator=gen)
        x = torch.stack([data.train[s : s + ctx] for s in starts.tolist()]).to(device)
        y = torch.stack([data.train[s + 1 : s + 1 + ctx] for s in starts.tolist()]).to(device)
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        it += 1
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise SystemExit(f"training diverged: loss={loss_value} at iter {it}")
        if it == 1 or it % cfg["log_interval"] == 0 or it == cfg["max_iters"]:
            log.step(it, cfg["max_iters"], loss=round(loss_value, 4), lr=f"{lr:.2e}")

    train_time = time.monotonic() - started
    log.info(f"training stopped by {stopped_by} after {it} iters in {train_time:.1f}s; evaluating")
    with autocast:
        val = evaluate.val_loss(model, data, ctx, device=device, eval_tokens=int(cfg["eval_tokens"]))
    log.final(
        val_loss=round(val, 5),
        train_loss=round(loss_value, 5),
        iters=it,
        train_time_s=round(train_time, 2),
        tokens_seen=it * bs * ctx,
        params=n_params,
        stopped_by_time=int(stopped_by == "time"),
    )


if __name__ == "__main__":
    main()
