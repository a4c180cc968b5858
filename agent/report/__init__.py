"""The replication report (report.html from a jinja2 template, report.md, plots) and EXPERIMENT_LOG.md."""
