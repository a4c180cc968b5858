"""`replicate tune`, a second application beside the graph: noise-aware hyperparameter and code search.

`target` (what to tune: tune.yaml), `workspace` (the git worktree trials edit), `proposers` (optuna, LLM, hybrid),
`stats` (the noise floor and keep/discard), `ledger` (results.tsv, plots, the HTML page), `tuner` (the loop).
"""
