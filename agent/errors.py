"""Named exceptions of the agent. LLM-caused failures go into graph state for a retry; these reach the CLI."""


class AgentError(Exception):
    """Base class, reported by the CLI as one line."""


class LLMNotConfiguredError(AgentError):
    """No LLM endpoint is configured; the message says exactly what to set."""


class LLMOutputError(AgentError):
    """The LLM's reply did not parse or validate, after the allowed retries."""


class ReplicationNotFoundError(AgentError):
    """No replication with that id exists in the checkpointer database."""


class ReviewError(AgentError):
    """A review answer was invalid, or the replication is not waiting for that review."""
