"""A scripted chat model for tests: real `BaseChatModel`, replies read from a JSON script, keyed by prompt name.

Loaded through the same seam as a real model: `REPLICATE_LLM=scripted:/path/script.json`. The script maps a prompt
name (the `task: NAME` first line of the system message, see agent.llm.prompts.SYSTEM) to the list of replies for
that prompt, consumed in order. A reply is a string (sent as is, so a test can script malformed output) or any other
JSON value (sent as its JSON text).

    {"draft_spec": ["not json at all", {"paper_slug": "...", ...}], "implement_code": [{...}]}

The key "*" holds the replies for every prompt the script does not name, so a script written before a prompt existed
still drives the graph.

The position in each list is persisted in `<script>.cursor.json` next to the script after every reply, so a test that
resumes the replication in a new process gets the next reply, not the first one again. Why not langchain's fakes:
`GenericFakeChatModel` drops tool calls when streaming, none of them support bind_tools, and `with_structured_output`
returns None silently when a reply has no tool call; we parse JSON from the reply text ourselves instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from agent.errors import AgentError
from mlexp import atomic


class ScriptError(AgentError):
    """The script is missing, unreadable, or has no reply left for a prompt."""


def prompt_name_of(messages: list[BaseMessage]) -> str:
    for message in messages:
        if isinstance(message, SystemMessage):
            first = str(message.content).splitlines()[0] if message.content else ""
            if first.startswith("task:"):
                return first.split(":", 1)[1].strip()
    raise ScriptError("scripted model: no 'task: NAME' line in the system message, cannot pick a reply")


class ScriptedChatModel(BaseChatModel):
    """Replies from a JSON script, in order per prompt name, with the cursor kept on disk across processes."""

    script_path: str
    model_name: str = "scripted"

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def cursor_path(self) -> Path:
        return Path(self.script_path + ".cursor.json")

    def _load_script(self) -> dict[str, list[Any]]:
        try:
            script = json.loads(Path(self.script_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ScriptError(f"scripted model: cannot read script {self.script_path}: {exc}") from exc
        if not isinstance(script, dict):
            raise ScriptError(f"scripted model: {self.script_path} must map prompt names to lists of replies")
        script = {k: v for k, v in script.items() if not k.startswith("_")}  # "_comment" keys document the script
        if not all(isinstance(v, list) for v in script.values()):
            raise ScriptError(f"scripted model: {self.script_path} must map prompt names to lists of replies")
        return script

    def next_reply(self, name: str) -> str:
        with FileLock(self.script_path + ".lock"):
            script = self._load_script()
            cursor: dict[str, int] = {}
            if self.cursor_path.exists():
                cursor = json.loads(self.cursor_path.read_text(encoding="utf-8"))
            # "*" holds the replies for any prompt the script does not name (a prompt newer than the script).
            name = name if name in script or "*" not in script else "*"
            position = cursor.get(name, 0)
            replies = script.get(name, [])
            if position >= len(replies):
                raise ScriptError(f"scripted model: no reply left for prompt {name!r} ({len(replies)} scripted)")
            reply = replies[position]
            cursor[name] = position + 1
            atomic.write_text(self.cursor_path, json.dumps(cursor))
        return reply if isinstance(reply, str) else json.dumps(reply)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self.next_reply(prompt_name_of(messages))
        # Rough token counts (4 characters a token) so usage accounting is exercised the same way as with a real model.
        n_in = sum(len(str(m.content)) for m in messages) // 4
        n_out = len(text) // 4
        message = AIMessage(
            content=text,
            usage_metadata={"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out},
            response_metadata={"model_name": self.model_name, "estimated_tokens": True},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
