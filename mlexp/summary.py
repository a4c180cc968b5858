"""Log digest: a long run log turned into a short, faithful summary for a person or an LLM.

What matters in a failed run's log is almost never its bulk: it is the traceback, the last progress line and the
last metrics. So the digest (1) keeps every traceback whole, (2) collapses repeated lines and warnings into one line
with a count (lines that differ only in numbers and timestamps count as repeats), (3) shows the last progress line
with its ETA and the final metrics block, and (4) when still too long keeps the head, the tail and every line that
looks like an error. Thousands of repeated lines can therefore never push the error out of the digest.
"""

from __future__ import annotations

import re
from collections import Counter

TIMESTAMP = re.compile(r"^\s*\[?\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\]?\s*|^\s*\[?\d{4}-\d{2}-\d{2}[ T][\d:.,]+\S*\]?\s*")
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)
HEX = re.compile(r"0x[0-9a-f]+", re.IGNORECASE)
PROGRESS = re.compile(r"\bstep\s+\d+\s*/\s*\d+|\bETA\b|\d+\s*/\s*\d+\s+prompts", re.IGNORECASE)
ERRORISH = re.compile(r"error|exception|fatal|killed|failed|out of memory|nan\b|traceback|abort", re.IGNORECASE)
WARNISH = re.compile(r"warn", re.IGNORECASE)
FINAL_MARK = "=== FINAL METRICS ==="
KV = re.compile(r"^([A-Za-z_][\w./-]*)\s*:\s*(\S+)\s*$")
EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning|Fault)?(:|$)")


def strip_timestamp(line: str) -> str:
    return TIMESTAMP.sub("", line, count=1)


def _shape(line: str) -> str:
    """The line with numbers and hex ids replaced: 'step 12/100 loss=0.3' and 'step 13/100 loss=0.2' match."""
    return NUMBER.sub("#", HEX.sub("#", strip_timestamp(line))).strip()


def extract_tracebacks(lines: list[str]) -> list[list[str]]:
    """Every Python traceback, from its header to the exception line (chained ones stay separate blocks)."""
    return [lines[a:b] for a, b in _traceback_spans(lines)]


def _traceback_spans(lines: list[str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        if "Traceback (most recent call last)" in lines[i]:
            start = i
            block = [lines[i]]
            i += 1
            while i < len(lines):
                body = strip_timestamp(lines[i])
                block.append(lines[i])
                i += 1
                if body and not body[0].isspace() and EXC_LINE.match(body) and not body.startswith("Traceback"):
                    break  # the exception line ends the block (its message may continue, see below)
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("Traceback", "During", "The ")):
                if PROGRESS.search(lines[i]) or lines[i].startswith("[mlexp]"):
                    break
                if len(block) > 400:
                    break
                block.append(lines[i])  # multi-line exception messages
                i += 1
            spans.append((start, i))
        else:
            i += 1
    return spans


def final_metrics(lines: list[str]) -> dict[str, str]:
    """The last `=== FINAL METRICS ===` block's `key: value` lines (empty when the script printed none)."""
    found: dict[str, str] = {}
    for idx in range(len(lines) - 1, -1, -1):
        if FINAL_MARK in lines[idx]:
            for line in lines[idx + 1 :]:
                match = KV.match(strip_timestamp(line))
                if not match:
                    break
                found[match.group(1)] = match.group(2)
            break
    return found


def last_progress(lines: list[str]) -> str | None:
    for line in reversed(lines):
        if PROGRESS.search(line) and not line.startswith("[mlexp] digest"):
            return line.strip()
    return None


def collapse(lines: list[str]) -> list[str]:
    """One line per distinct shape, at its first position, annotated with how often it occurred.

    Progress lines are the exception: only the first and last of a run of them are kept, since their numbers matter.
    """
    counts = Counter(_shape(line) for line in lines)
    seen: set[str] = set()
    out: list[str] = []
    last_by_shape: dict[str, str] = {}
    for line in lines:
        last_by_shape[_shape(line)] = line
    for line in lines:
        shape = _shape(line)
        if shape in seen:
            continue
        seen.add(shape)
        n = counts[shape]
        if n == 1:
            out.append(line)
        elif PROGRESS.search(line):
            out.append(f"{line}   [first of {n} similar lines]")
            out.append(f"{last_by_shape[shape]}   [last of {n}]")
        else:
            out.append(f"{line}   [repeated {n}x]")
    return out


def summarize_log(text: str, *, max_lines: int = 80) -> str:
    """A digest of `text` in at most about `max_lines` lines plus the whole traceback(s)."""
    lines = [line.rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    spans = _traceback_spans(lines)
    tracebacks = [lines[a:b] for a, b in spans]
    in_tb = {i for a, b in spans for i in range(a, b)}
    body_src = [line for i, line in enumerate(lines) if i not in in_tb]
    body = collapse(body_src)
    if len(body) > max_lines:
        head_n, tail_n = max_lines // 4, max_lines // 2
        middle = body[head_n : len(body) - tail_n]
        flagged = [line for line in middle if ERRORISH.search(line) or WARNISH.search(line)]
        flagged = flagged[: max(0, max_lines - head_n - tail_n)]
        omitted = len(middle) - len(flagged)
        body = [*body[:head_n], *flagged, f"... {omitted} more distinct lines omitted ...", *body[-tail_n:]]
    out = [f"log: {len(lines)} lines, {len(set(map(_shape, lines)))} distinct"]
    progress = last_progress(body_src)
    if progress:
        out.append(f"last progress: {strip_timestamp(progress)}")
    metrics = final_metrics(lines)
    if metrics:
        out.append("final metrics: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    out.append("--- log (repeats collapsed) ---")
    out.extend(body)
    for n, block in enumerate(tracebacks[-3:], start=1):
        label = "traceback" if len(tracebacks) == 1 else f"traceback {n} of last {min(3, len(tracebacks))}"
        out.append(f"--- {label} (whole) ---")
        out.extend(block)
    return "\n".join(out)
