"""Benchmark `replicate tune` with the Optuna proposer on the shipped tinyshakespeare GPT (not in CI).

CPU (default): 20 trials x 60 s of training each, baseline = nanoGPT's small CPU config (4 layers, 4 heads, 128
channels, context 64, batch 12), on 3 baseline seeds for the noise floor. Takes ~30 minutes on 2 cores.
GPU (--gpu): the same with a 5-minute budget and nanoGPT's shakespeare_char config (6 layers, 6 heads, 384 channels,
context 256, batch 64, dropout 0.2) and a knob space scaled to it.

Prints the baseline's validation loss with its seed noise, the best loss found, the improvement (absolute, relative,
and beyond the noise threshold), and the best config re-measured on fresh seeds (the in-search best is biased low by
selection). Target: >= 3% improvement beyond noise.

    .venv/bin/python benchmarks/tune_shakespeare.py [--trials 20] [--trial-time 60] [--gpu] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.tune.stats import diff_ci, threshold  # noqa: E402
from agent.tune.target import load_target  # noqa: E402
from agent.tune.tuner import TuneOptions, Tuner  # noqa: E402

EXAMPLE = REPO / "examples" / "tinyshakespeare_gpt"

GPU_BASELINE = {  # nanoGPT config/train_shakespeare_char.py
    "n_layer": 6,
    "n_head": 6,
    "n_embd": 384,
    "block_size": 256,
    "batch_size": 64,
    "dropout": 0.2,
    "learning_rate": 1e-3,
    "min_lr_ratio": 0.1,
    "warmup_iters": 100,
    "beta2": 0.99,
    "max_iters": 5000,
}
GPU_KNOBS = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "min_lr_ratio": {"type": "float", "low": 0.0, "high": 0.5},
    "schedule": {"type": "categorical", "choices": ["cosine", "linear", "constant"]},
    "warmup_iters": {"type": "int", "low": 0, "high": 1000, "step": 50},
    "weight_decay": {"type": "float", "low": 0.0, "high": 0.3},
    "beta2": {"type": "float", "low": 0.9, "high": 0.999},
    "n_layer": {"type": "int", "low": 2, "high": 12},
    "n_head": {"type": "categorical", "choices": [2, 4, 6, 8, 12]},
    "n_embd": {"type": "int", "low": 192, "high": 768, "step": 96},  # multiples of 96 split into any head count
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
    "batch_size": {"type": "int", "low": 16, "high": 256, "log": True},
    "block_size": {"type": "categorical", "choices": [128, 256, 512]},
}


def gpu_target(out: Path) -> Path:
    target = out / "target-gpu"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    spec = yaml.safe_load((EXAMPLE / "tune.yaml").read_text())
    data = (EXAMPLE / spec["baseline"]["data_path"]).resolve()
    spec["baseline"] = {**spec["baseline"], **GPU_BASELINE, "data_path": str(data)}
    spec["knobs"] = GPU_KNOBS
    spec["name"] = "tinyshakespeare_gpt_gpu"
    (target / "tune.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--trial-time", type=float, default=None, help="seconds (default 60 on CPU, 300 with --gpu)")
    ap.add_argument("--baseline-seeds", type=int, default=3)
    ap.add_argument("--remeasure-seeds", type=int, default=2, help="fresh seeds to re-measure baseline and best on")
    ap.add_argument("--recheck-every", type=int, default=5, help="re-measure the incumbent every n trials (0: off)")
    ap.add_argument("--sampler", default="tpe", choices=["tpe", "cmaes"])
    ap.add_argument("--gpu", action="store_true", help="the larger config with a 5-minute budget")
    ap.add_argument("--data", type=Path, default=None, help="tinyshakespeare input.txt (default: ../shared)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / f"tune-{time.strftime('%Y%m%d-%H%M%S')}")
    args = ap.parse_args()
    trial_time = args.trial_time or (300.0 if args.gpu else 60.0)
    args.out.mkdir(parents=True, exist_ok=True)
    target_dir = gpu_target(args.out) if args.gpu else EXAMPLE
    overrides = {"data_path": str(args.data.resolve())} if args.data else {}
    target = load_target(target_dir, overrides=overrides)
    opts = TuneOptions(
        budget=args.trials,
        trial_time_s=trial_time,
        proposer="optuna",
        seeds=1,
        baseline_seeds=args.baseline_seeds,
        sampler=args.sampler,
        recheck_every=args.recheck_every,
    )
    t0 = time.time()
    stamp = lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)  # noqa: E731
    tuner = Tuner(target, opts, args.out / "tune", log=stamp)
    result = tuner.run()
    search_s = time.time() - t0

    base = result.rows[0]
    need = threshold(tuner.noise, len(result.best_values), len(base.values), opts.confidence)
    beyond = result.improvement - need
    print("\n=== tune_shakespeare results ===")
    print(f"machine: {'GPU' if args.gpu else 'CPU'}; {args.trials} trials x {trial_time:g} s, sampler {args.sampler}")
    print(f"baseline val_loss: {base.metric_mean:.4f} ± {base.metric_std:.4f} (std over {len(base.values)} seeds)")
    print(f"seed noise (pooled std): {tuner.noise.std:.4f} (df {tuner.noise.df}); threshold at 95%: {need:.4f}")
    print(f"best val_loss (in-search): {result.best_mean:.4f} (trial {tuner.incumbent['trial']})")
    print(
        f"improvement: {result.improvement:.4f} ({100 * result.relative_improvement:.2f}%); beyond the noise "
        f"threshold: {beyond:.4f} ({100 * beyond / base.metric_mean:.2f}% of baseline)"
    )
    print(
        f"kept: {sum(r.verdict == 'keep' for r in result.rows)}, discarded: "
        f"{sum(r.verdict == 'discard' for r in result.rows)}, crashed: {sum(r.verdict == 'crash' for r in result.rows)}"
    )
    print(f"best config: {json.dumps({k: result.best_config.get(k) for k in target.knobs})}")
    print(f"search wall time: {search_s / 60:.1f} min; ledger: {result.tune_dir / 'tune.tsv'}")
    if args.remeasure_seeds:
        seeds = list(range(100, 100 + args.remeasure_seeds))
        best_again = tuner.evaluate_incumbent(seeds, name="remeasure-best")
        tuner.incumbent = {**tuner.incumbent, "commit": base.commit, "config": base.config}
        base_again = tuner.evaluate_incumbent(seeds, name="remeasure-baseline")
        gain = diff_ci(base_again, best_again)
        print(
            f"re-measured on fresh seeds {seeds}: baseline {statistics.fmean(base_again):.4f}, best "
            f"{statistics.fmean(best_again):.4f}; improvement {gain.describe()} "
            f"= {100 * gain.diff / statistics.fmean(base_again):.2f}%"
        )
    verdict = "MET" if beyond / base.metric_mean >= 0.03 else "NOT met"
    print(f"target (>= 3% beyond noise): {verdict}; total {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
