"""Harness and sandbox overhead: one training script run directly, through mlexp without the sandbox
(--no-sandbox) and through mlexp in its default bubblewrap sandbox, interleaved in the same run.

    .venv/bin/python benchmarks/mlexp_overhead.py [--steps 800] [--repeats 3] [--width 256]

Each variant starts the same script as a fresh process with the same run contract. "harness" adds identity
hashing, registry updates, the run dir (README, config, metadata, digest, post-run check) and the live
tee/watchdog; "sandbox" adds bwrap (mount/PID/network namespaces, the read-only view). The three variants are run
in turn within each repeat so machine drift hits them alike. The sandbox's own cost is also measured apart, as the
start-up of `python -c pass` with and without bwrap (20 times each), and as the CPU seconds the script itself used
(`time.process_time()`, reported in its final block; less sensitive to a busy machine than wall time), since on a
shared machine the end-to-end wall-time medians of 20-second runs move by more than the figure being measured.

Uses CUDA when torch sees a GPU, else the CPU. Target: sandbox overhead under 2% of a 20-second CPU run. Prints a
final `key: value` block.
"""

from __future__ import annotations

import argparse
import json
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
log.final(accuracy=acc, steps=steps, device=device, cpu_s=time.process_time())
"""


def _startup(cmd: list[str], cwd: Path, env: dict[str, str], n: int) -> float:
    """Median wall time of running `cmd` to completion, `n` times."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sandbox_startup(work: Path, n: int = 20) -> tuple[float, float]:
    """(median start-up of `python -c pass` directly, the same inside the run's bwrap sandbox), seconds."""
    from mlexp.runner import scrubbed_env
    from mlexp.sandbox import SandboxPolicy, bwrap_command, sandbox_env

    run_dir = work / "startup-run"
    run_dir.mkdir()
    env = scrubbed_env()
    policy = SandboxPolicy(run_dir=run_dir, code_dir=work)
    argv = [sys.executable, "-c", "pass"]
    plain = _startup(argv, run_dir, env, n)
    boxed = _startup(bwrap_command(policy, argv, env), run_dir, sandbox_env(env), n)
    return plain, boxed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import mlexp
    from mlexp.api import default_device

    device = default_device()
    work = Path(tempfile.mkdtemp(prefix="mlexp-bench-"))
    code = work / "code"
    code.mkdir()
    script = code / "train.py"
    script.write_text(SCRIPT)
    config = {"steps": args.steps, "width": args.width, "batch": args.batch}
    times: dict[str, list[float]] = {"direct": [], "harness": [], "sandbox": []}
    cpu: dict[str, list[float]] = {"direct": [], "harness": [], "sandbox": []}  # the script's own CPU seconds
    for rep in range(args.repeats):
        run_dir = work / f"direct-{rep}"
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps({**config, "seed": 0, "smoke": False}))
        env = {**os.environ, "RUN_DIR": str(run_dir), "RUN_CONFIG": str(run_dir / "config.json"), "SMOKE": "0",
               "SEED": "0", "DEVICE": device, "PYTHONUNBUFFERED": "1"}  # fmt: skip
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(script)], cwd=run_dir, env=env, check=True, capture_output=True,
                             text=True).stdout  # fmt: skip
        times["direct"].append(time.perf_counter() - t0)
        cpu["direct"].append(float(out.rsplit("cpu_s:", 1)[1].split()[0]))
        for variant, sandbox in (("harness", False), ("sandbox", True)):
            t0 = time.perf_counter()
            record = mlexp.run_script(script, config, runs_root=work / f"runs-{variant}", name="bench", force=True,
                                      sandbox=sandbox)  # fmt: skip
            times[variant].append(time.perf_counter() - t0)
            cpu[variant].append(record.metrics["cpu_s"])
            if record.status != "completed":
                raise SystemExit(f"{variant} run failed: {record.digest}")
        print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    d, h, s = (statistics.median(times[k]) for k in ("direct", "harness", "sandbox"))
    plain, boxed = sandbox_startup(work)
    print(f"device: {device} ({record.env.get('gpu')}), steps {args.steps}, width {args.width}, repeats {args.repeats}")
    print(f"sandbox: {record.sandbox}")
    print("--- final ---")
    print(f"direct_median_s: {d:.3f}")
    print(f"harness_no_sandbox_median_s: {h:.3f}")
    print(f"harness_sandbox_median_s: {s:.3f}")
    print(f"harness_overhead_pct: {(h - d) / d * 100:+.2f}")
    print(f"sandbox_vs_no_sandbox_pct: {(s - h) / h * 100:+.2f}")
    dc, hc, sc = (statistics.median(cpu[k]) for k in ("direct", "harness", "sandbox"))
    print(f"cpu_s_direct_median: {dc:.3f}")
    print(f"cpu_s_no_sandbox_median: {hc:.3f}")
    print(f"cpu_s_sandbox_median: {sc:.3f}")
    print(f"sandbox_vs_no_sandbox_cpu_pct: {(sc - hc) / hc * 100:+.2f}")
    print(f"sandbox_startup_s: {boxed - plain:.4f}  (python -c pass: {plain:.4f}s direct, {boxed:.4f}s in bwrap)")
    print(f"sandbox_startup_pct_of_direct_run: {(boxed - plain) / d * 100:.3f}")


if __name__ == "__main__":
    main()
