"""The replication agent: a LangGraph state machine that drives ingestion, retrieval, spec, code, runs and report."""
