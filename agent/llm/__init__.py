"""The LLM seam: `seam` loads a chat model and makes every structured call (validated, retried, logged); `prompts`
holds every prompt the agent sends; `scripted` is the scripted model the tests run through the same seam."""
