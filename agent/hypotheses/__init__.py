"""Why a number may differ from the paper, and what to try next.

`model` (Hypothesis, Citation, Ablation); the deterministic checklist, one module per concern (`setup_checks`,
`seed_checks`, `metric_checks`, `run_checks`) over shared `config_keys` and `inputs`, run by `checklist`;
`literature` (the LLM's hypotheses with citations checked by `citations`); `ablations` (approved hypotheses to runs).
"""
