"""The `replicate` command line: the app, its commands, and the one place errors become one line.

Each command group lives in its own module of this package (`flow`, `llm`, `index`, `ingest`, `runs`, `tune`) and
exposes `register(app)`; `build_app()` calls them in a fixed order, so the app is complete once this module is
imported and no command module imports the app. `main()` does two things typer cannot: it routes
`replicate paper.pdf` to the `start` command, and it turns every expected failure (bad input, dead server, disk full)
into one line on stderr and a non-zero exit, while our own bugs still raise with a traceback (set
`REPLICATE_DEBUG=1` to see tracebacks for expected failures too).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from pathlib import Path

import typer

from agent.cli import claims, flow, index, ingest, llm, runs, tune
from agent.errors import AgentError
from mlexp.errors import MlexpError
from retrieval.arxiv_fetch import arxiv_id
from retrieval.errors import RetrievalError


def build_app() -> typer.Typer:
    """The `replicate` app with every command; the order of registration is the order of `replicate --help`."""
    app = typer.Typer(
        name="replicate",
        help="Replicate published ML results: read the paper, draft a spec, run it, compare with the paper.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module in (flow, claims, llm, index, ingest, runs, tune):
        module.register(app)
    return app


app = build_app()

EXPECTED_ERRORS = (RetrievalError, MlexpError, AgentError)


def _one_line(message: str) -> str:
    return " ".join(str(message).split()) or "unknown error"


def _route_pdf(argv: list[str]) -> list[str]:
    """`replicate paper.pdf [opts]` means `replicate start paper.pdf [opts]`."""
    if not argv:
        return argv
    first = argv[0]
    commands = {cmd.name or (cmd.callback.__name__ if cmd.callback else "") for cmd in app.registered_commands}
    commands |= {group.name for group in app.registered_groups if group.name}
    if first.startswith("-") or first in commands:
        return argv
    if first.lower().endswith(".pdf") or Path(first).exists() or arxiv_id(first):
        return ["start", *argv]
    return argv


def _interrupted(signum: int, frame: object) -> None:
    # Said here, at the signal: typer turns a KeyboardInterrupt into a silent exit 130 before main() could say it.
    print("replicate: interrupted; the state is kept at the last finished step (see `replicate status`)",
          file=sys.stderr, flush=True)  # fmt: skip
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    args = _route_pdf(list(sys.argv[1:] if argv is None else argv))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupted)
    debug = os.environ.get("REPLICATE_DEBUG") == "1"
    try:
        app(args=args, prog_name="replicate")
    except EXPECTED_ERRORS as exc:
        if debug:
            raise
        print(f"replicate: error: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        # The user's environment, not our bug: a full disk, a read-only or missing path.
        if debug or exc.errno not in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.ENOENT, errno.EDQUOT):
            raise
        what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
        where = f": {exc.filename}" if exc.filename else ""
        then = (
            "; free space, then rerun (a replication goes on from its last step with `replicate resume ID`)"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else ""
        )
        print(f"replicate: error: {what}{where}{then}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)  # the message was printed by _interrupted


if __name__ == "__main__":
    main()
