"""The graph's nodes: `spec` (PDF to approved spec), `code` (spec to finished runs, and ask_researcher), `results`
(runs to report). `common` is what every node shares (the model, progress lines, loading the paper and the spec)."""
