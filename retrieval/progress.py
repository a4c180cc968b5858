"""A small progress display on stderr: done/total, rate and ETA, redrawn in place on a terminal.

Off a terminal (logs, CI) it prints one line every 10 s instead of carriage-return redraws, so long imports leave a
readable trace. The position that drives the ETA (e.g. compressed bytes read) can differ from the count shown as a
rate (records), because a gzip file's record count is unknown until it has been read.
"""

from __future__ import annotations

import sys
import time


def _fmt_secs(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, label: str, *, total: int, unit: str = "", enabled: bool = True, count_label: str = ""):
        self.label, self.total, self.unit = label, max(total, 0), unit
        self.count_label = count_label or unit
        self.enabled = enabled and total > 0
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.pos = 0
        self.count = 0
        self._last = 0.0
        self._drawn: tuple[int, int] | None = None

    def advance(self, n: int) -> None:
        self.update(self.pos + n, count=n)

    def update(self, pos: int, *, count: int = 0) -> None:
        self.pos = pos
        self.count += count
        now = time.perf_counter()
        if self.enabled and (now - self._last >= (0.2 if self.tty else 10.0)):
            self._last = now
            self._draw(now)

    def _draw(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.start, 1e-9)
        frac = min(self.pos / self.total, 1.0) if self.total else 1.0
        rate = self.count / elapsed
        eta = elapsed * (1 - frac) / frac if 0 < frac < 1 else 0.0
        self._drawn = (self.pos, self.count)
        width = 28
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = (
            f"{self.label} [{bar}] {frac:6.1%} {self.count:,} {self.count_label} "
            f"{rate:,.0f}/s elapsed {_fmt_secs(elapsed)} ETA {_fmt_secs(eta)}"
        )
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            if self.tty or self._drawn != (self.pos, self.count):  # off a terminal, never repeat a line
                self._draw(time.perf_counter(), final=True)
            self.enabled = False
