"""Read one table cell as printed: a number with its spread, two numbers, a mark, or nothing.

"0.812±0.003", "93.02 (0.11)", "89.7%", "0.889*", "224.80 [196.80 284.20]" are one value (with its std where the
cell prints one); "75.3/80.1" is two; "—", "-", "n/a" are empty; "✓"/"✗" are marks, not numbers.
"""

from __future__ import annotations

import re

VALUE_PATTERN = r"[-+]?(?:\d{1,3}(?:,\s?\d{3})+(?:\.\d+)?|\d*\.\d+|\d+)(?:[eE][-+]?\d+)?"
_PM = r"(?:±|\+/-|\+-|\+ -)"
# A cell that is one number, possibly with a percent sign, a ± spread, a parenthesised spread and footnote marks.
NUMBER_CELL_RE = re.compile(
    rf"^[(\[]?(?P<value>{VALUE_PATTERN})\s*(?P<pct>%|[kKMBG]\b)?\s*"
    rf"(?:(?:{_PM})\s*(?P<std>{VALUE_PATTERN})\s*%?|\(\s*(?:{_PM})?\s*(?P<std2>{VALUE_PATTERN})\s*%?\s*\))?"
    # a confidence interval after the value: "224.80 [196.80 284.20]", "0.91 (0.88, 0.94)", "54 (32–76)"
    rf"(?:\s*[\[(]\s*{VALUE_PATTERN}\s*%?\s*(?:,|;|–|-|to)?\s*{VALUE_PATTERN}\s*%?\s*[\])])?"
    r"[)\]]?\s*[*†‡§¶⋆∗]*\s*[a-z]?$"
)


def parse_number(text: str) -> tuple[float, float | None] | None:
    """(value, std) when `text` is one printed number such as "0.812±0.003", "89.7%", "60, 000"; else None."""
    match = NUMBER_CELL_RE.match(text.strip())
    if not match:
        return None
    try:
        value = float(match.group("value").replace(",", "").replace(" ", ""))
        raw_std = match.group("std") or match.group("std2")
        std = float(raw_std.replace(",", "").replace(" ", "")) if raw_std else None
    except ValueError:
        return None
    return value, std


# A cell that holds two results side by side: "75.3/80.1", "75.3 / 80.1%" (e.g. EM/F1, P/R).
_PAIR_RE = re.compile(rf"^(?P<a>{VALUE_PATTERN})\s*%?\s*[*†‡§¶⋆∗]*\s*/\s*(?P<b>{VALUE_PATTERN})\s*%?\s*[*†‡§¶⋆∗]*$")
MARKS = frozenset("✓✔✗✘×•●○◦◯✅❌")


def parse_values(text: str) -> list[tuple[float, float | None]]:
    """Every result a cell prints: one (value, std), two for "75.3/80.1", none for text, marks and dashes."""
    single = parse_number(text)
    if single is not None:
        return [single]
    match = _PAIR_RE.match(text.strip())
    # Two whole numbers ("1/168", "3/4") are a fraction or a count, not two results.
    if match and ("." in text or "%" in text):
        try:
            return [(float(match.group(g).replace(",", "").replace(" ", "")), None) for g in ("a", "b")]
        except ValueError:
            return []
    return []


def is_mark(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and all(ch in MARKS or ch.isspace() for ch in stripped)


def is_value_cell(text: str) -> bool:
    """A body cell: a number (or two) or a check mark."""
    return bool(parse_values(text)) or is_mark(text)
