"""Runner overhead: a small torch training run through `mlexp.run_script` vs the same script run directly.

    .venv/bin/python benchmarks/mlexp_overhead.py [--steps 300] [--repeats 3] [--width 512]

Both variants start the same script as a fresh process with the same run contract; the harness variant adds
identity hashing, registry updates, the run dir (README, config, metadata, digest, post-run check) and the live
tee/watchdog. Prints medians and the overhead in percent. Uses CUDA when torch sees a GPU (target there: < 2% on a
run of a minute or more), else the CPU. On CPU the work per step is small, so keep --steps high enough that the
direct run takes tens of seconds, or the fixed cost of the harness (~0.5-1 s) dominates the percentage.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = """
import time
import torch
import mlexp.log

log = mlexp.log.RunLogger()
cfg = log.config
device = "cuda" if log.device == "cuda" and torch.cuda.is_available() else "cpu"
torch.manual_seed(log.seed)
width, steps, batch = int(cfg["width"]), int(cfg["steps"]), int(cfg["batch"])
x = torch.randn(8192, 256, device=device)
y = (x[:, :10].sum(1) > 0).long()
model = torch.nn.Sequential(torch.nn.Linear(256, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                            torch.nn.ReLU(), torch.nn.Linear(width, 2)).to(device)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step in range(1, steps + 1):
    idx = torch.randint(0, x.shape[0], (batch,), device=device)
    loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step == 1 or step % 50 == 0 or step == steps:
        log.step(step, steps, loss=loss.item())
with torch.no_grad():
    acc = (model(x).argmax(1) == y).float().mean().item()
log.final(accuracy=acc, steps=steps, device=device)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import mlexp
    from mlexp.api import _device

    device = _device()
    work = Path(tempfile.mkdtemp(prefix="mlexp-bench-"))
    code = work / "code"
    code.mkdir()
    script = code / "train.py"
    script.write_text(SCRIPT)
    config = {"steps": args.steps, "width": args.width, "batch": args.batch}
    direct, harness, fixed = [], [], []
    for rep in range(args.repeats):
        run_dir = work / f"direct-{rep}"
        run_dir.mkdir()
        (run_dir / "config.json").write_text(__import__("json").dumps({**config, "seed": 0, "smoke": False}))
        env = {**os.environ, "RUN_DIR": str(run_dir), "RUN_CONFIG": str(run_dir / "config.json"), "SMOKE": "0",
               "SEED": "0", "DEVICE": device, "PYTHONUNBUFFERED": "1"}  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(script)], cwd=run_dir, env=env, check=True, capture_output=True)
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        record = mlexp.run_script(script, config, runs_root=work / "runs", name="bench", force=True)
        harness.append(time.perf_counter() - t0)
        fixed.append(harness[-1] - (record.duration_s or 0.0))  # time spent outside the script's process
        if record.status != "completed":
            raise SystemExit(f"harness run failed: {record.digest}")
        print(f"repeat {rep + 1}: direct {direct[-1]:.2f}s, through mlexp {harness[-1]:.2f}s", flush=True)
    d, h = statistics.median(direct), statistics.median(harness)
    print(f"device: {device} ({record.env.get('gpu')}), steps {args.steps}, width {args.width}, repeats {args.repeats}")
    print(f"direct median: {d:.3f}s   through mlexp median: {h:.3f}s")
    print(f"overhead: {h - d:+.3f}s ({(h - d) / d * 100:+.2f}%)")
    f = statistics.median(fixed)
    print(f"harness time outside the script's process (identity, registry, run dir, check): {f:.3f}s"
          f" = {f / d * 100:.2f}% of the direct run")  # fmt: skip


if __name__ == "__main__":
    main()
