"""The import's fast paths must give exactly what the slow, obviously right code gives."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

from retrieval.arxiv_import import clean_text, parse_line, rfc2822_day
from retrieval.index_models import snippet, stem_pattern


def test_clean_equals_split_and_join_on_every_whitespace_shape() -> None:
    rng = random.Random(0)
    pieces = ["word", "é", "x", " ", "  ", "\n", "\t", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\u00a0", "\u2009", "."]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        for cap in (3, 10, 1000):
            assert clean_text(text, cap) == " ".join(text[: cap * 2].split())[:cap], (text, cap)


def test_rfc2822_fast_path_equals_the_email_parser() -> None:
    rng = random.Random(1)
    start = date(1991, 1, 1)
    for _ in range(2000):
        day = start + timedelta(days=rng.randrange(0, 13_000))
        stamp = format_datetime(datetime(day.year, day.month, day.day, rng.randrange(24), 5, 7, tzinfo=UTC))
        stamp = stamp.replace("-0000", "GMT").replace("+0000", "GMT")
        assert rfc2822_day(stamp) == parsedate_to_datetime(stamp).date().isoformat(), stamp
    # other shapes go to the email parser, and an impossible day is no date
    assert rfc2822_day("Mon, 2 Apr 2007 19:18:42 +0100") is None
    assert rfc2822_day("Fri, 30 Feb 2008 00:00:00 GMT") is None
    rec = parse_line(b'{"id": "0704.0001", "title": "T", "versions": [{"created": "Mon, 2 Apr 2007 19:18:42 GMT"}]}')
    assert not isinstance(rec, str) and rec.date == "2007-04-02"


def test_snippet_picks_the_sentence_with_most_query_stems() -> None:
    text = "We present a method. Augmentation studies of generators follow. The end."
    # stems as the analyser makes them: "studi" (from "studies"/"study"), "augment", "generat"
    assert snippet(text, stem_pattern({"studi", "augment", "generat"})).startswith("Augmentation studies")
    assert snippet("Only one sentence here.", None) == "Only one sentence here."
