"""The claims ledger: every numeric experimental result a paper reports, from its tables and its running text.

A claim is a result (an accuracy, an error, a BLEU score), never a hyperparameter, a dataset size or a year: later
stages check replications against these numbers. The rules are deliberately explicit (no LLM): a table column is a
result column when its header, the caption or the row names a metric; a number in running text is a result when a
metric word stands near it and nothing marks it as a setting, a count or a reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from retrieval.cells import VALUE_PATTERN, parse_number, parse_values
from retrieval.models import Claim
from retrieval.pdf import PageData, collapse, join_lines
from retrieval.tables import ExtractedTable

# (pattern, higher_is_better). Checked in order; the first that matches names the metric.
METRICS: list[tuple[re.Pattern[str], bool]] = [
    (re.compile(p, re.IGNORECASE), hib)
    for p, hib in [
        (r"\b(error rate|error|err\.?|misclassification)\b", False),
        (r"\b(perplexity|ppl)\b", False),
        (r"\b(loss|nll|log[- ]likelihood loss|cross[- ]entropy)\b", False),
        (r"\b(mse|rmse|mae|mean squared error|mean absolute error)\b", False),
        (r"\b(fid|wer|cer|word error rate|character error rate|bpc|bits per (char(acter)?|dim(ension)?))\b", False),
        (r"\b(top-?[15] accuracy|accuracy|accuracies|acc\.?|top-?[15])\b", True),
        (r"\b(f1|f-?score|f-?measure|macro-?f1|micro-?f1)\b", True),
        (r"\b(bleu|rouge(-[l12])?|meteor|cider|spice|chrf)\b", True),
        (r"\b(auc|auroc|au-?roc|auprc|m?ap(@\d+)?|average precision|mean average precision)\b", True),
        (r"\b(precision|recall|hit rate|hits@\d+|mrr|ndcg(@\d+)?|recall@\d+)\b", True),
        (r"\b(m?iou|dice|exact match|em|inception score|success rate|win rate|pass@\d+)\b", True),
        (r"\b(pearson|spearman|correlation|mcc|kappa)\b", True),
        (r"\b(reward|return|score)\b", True),
    ]
]
# Column headers and text that name settings, sizes or costs, not results.
NOT_RESULT = re.compile(
    r"(#|\bparams?\b|parameters|\bsize\b|\bepochs?\b|\blr\b|learning rate|batch|\blayers?\b|\bdim|hidden|\byear\b|"
    r"\btime\b|flops|memory|speed|\bsteps?\b|iterations|examples|samples|images|\bcount\b|\bnumber\b|\bseed|bytes)",
    re.IGNORECASE,
)
RESULTS_CAPTION = re.compile(
    r"result|performance|benchmark|comparison|compar|evaluat|ablation|accurac|error|score", re.IGNORECASE
)
SETTINGS_CAPTION = re.compile(
    r"hyper-?parameter|setting|configuration|statistics|architecture|implementation detail|notation", re.IGNORECASE
)
STD_HEADER = re.compile(r"^(std\.?|stdev|std\.? dev\.?|s\.d\.|sd|±|\+/-|standard deviation|sem|s\.e\.)$", re.I)
METHOD_HEADER = re.compile(r"method|model|classifier|approach|algorithm|architecture|network|system", re.IGNORECASE)
DATASET_HEADER = re.compile(r"^(data\s?set|data|task|benchmark|corpus)s?$", re.IGNORECASE)

KNOWN_DATASETS = [
    "Fashion-MNIST", "EMNIST", "KMNIST", "MNIST", "CIFAR-100", "CIFAR-10", "SVHN", "STL-10", "Tiny ImageNet",
    "miniImageNet", "ImageNet-1k", "ImageNet", "CelebA", "LSUN", "MS COCO", "COCO", "Pascal VOC", "Cityscapes",
    "ADE20K", "Omniglot", "CUB-200", "Caltech-101", "Places365", "SQuAD", "SuperGLUE", "GLUE", "SST-2", "MNLI",
    "QNLI", "QQP", "RTE", "CoLA", "MRPC", "STS-B", "WikiText-103", "WikiText-2", "Penn Treebank", "PTB", "enwik8",
    "text8", "IMDB", "AG News", "Yelp", "LibriSpeech", "WMT14", "WMT16", "IWSLT", "Cora", "Citeseer", "PubMed",
    "OGB", "MuJoCo", "Atari", "HumanEval", "GSM8K", "MMLU", "TinyShakespeare", "Shakespeare", "UCI", "Iris",
]  # fmt: skip

_KNOWN_RE = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(n) for n in sorted(KNOWN_DATASETS, key=len, reverse=True)) + r")(?![\w-])"
)

CITATION = re.compile(
    r"\bet al\.|\[\d+(?:[,–-]\s*\d+)*\]|\[[A-Z][^\]]*\d{4}\]|\([A-Z][A-Za-z]+[^()]*\d{4}\)|reported (in|by)"
)
ABBREVIATIONS = re.compile(r"\b(et al|e\.g|i\.e|cf|vs|Fig|Figs|Eq|Eqs|Sec|Tab|resp|approx|w\.r\.t|etc|No)\.$")


@dataclass
class Sentence:
    page: int
    index: int  # position on its page, 1-based: part of text claim ids
    text: str


class Vocabulary:
    """Dataset names the paper uses, with its own abbreviations ("Fashion-MNIST (Fashion)" -> Fashion)."""

    def __init__(self, text: str):
        names = set(_KNOWN_RE.findall(text))
        # "the EMNIST dataset", "Foo-Bar benchmark": capitalised names the paper itself calls a data set.
        for match in re.finditer(r"\b([A-Z][\w-]*[A-Z0-9][\w-]*)\s+(?:data\s?set|dataset|benchmark|corpus)\b", text):
            names.add(match.group(1))
        self.aliases: dict[str, str] = {}
        for match in re.finditer(r"([A-Z][\w-]*[A-Z0-9][\w-]*)\s+\(([A-Z][\w-]*)\)", text):
            full, short = match.group(1), match.group(2)
            if full in names and short != full and (short.lower() in full.lower() or full.startswith(short[0])):
                self.aliases[short] = full
        self.names = sorted(names, key=len, reverse=True)  # longest first: "Fashion-MNIST" before "MNIST"
        self._patterns = [(n, re.compile(rf"(?<![\w-]){re.escape(n)}(?![\w-])")) for n in self.names]
        self._patterns += [
            (full, re.compile(rf"(?<![\w-]){re.escape(s)}(?![\w-])")) for s, full in self.aliases.items()
        ]

    def find_all(self, text: str) -> list[tuple[int, str]]:
        """(position, canonical name) of every dataset mention, overlapping shorter matches dropped."""
        found: list[tuple[int, int, str]] = []
        for name, pattern in self._patterns:
            for m in pattern.finditer(text):
                if not any(s <= m.start() < e or s < m.end() <= e for s, e, _ in found):
                    found.append((m.start(), m.end(), name))
        return sorted((s, n) for s, _, n in found)

    def is_known(self, name: str) -> bool:
        """A name from the list of well-known data sets, not one inferred from this paper's wording."""
        return bool(_KNOWN_RE.fullmatch(name))

    def find(self, text: str) -> str | None:
        hits = self.find_all(text)
        return hits[0][1] if hits else None


def find_metric(text: str) -> tuple[str, bool] | None:
    """(metric as printed, lowercased, with its qualifier; higher_is_better) for the first metric word in text."""
    text = text.replace(" / ", " ")  # a header stacked over two lines: "Test / accuracy"
    arrow = "↑" in text or "(higher is better)" in text.lower()
    down = "↓" in text or "(lower is better)" in text.lower()
    for pattern, hib in METRICS:
        match = pattern.search(text)
        if match:
            # Keep a qualifier printed right before it: "test accuracy", "top-1 accuracy", "validation error".
            before = re.search(
                r"(test|validation|val\.?|dev|train(ing)?|top-?[15]|mean|average|avg\.?)\s+$",
                text[: match.start()],
                re.IGNORECASE,
            )
            name = (before.group(0) if before else "") + match.group(0)
            name = re.sub(r"\baccuracies\b", "accuracy", collapse(name).lower())
            if re.fullmatch(r"top-?[15]", name):
                name += " accuracy"
            return name, (True if arrow else False if down else hib)
    return None


def _claim_id(table: ExtractedTable, row: int, col: int) -> str:
    return f"T{table.number}-r{row}-c{col}"


def _fill_down(rows: list[list[str]], label_cols: list[int]) -> list[list[str]]:
    """Blank group cells mean "same as above" (Classifier printed once per group); the last label column is the
    row's own name and is never filled."""
    filled = [list(r) for r in rows]
    group_cols = label_cols[:-1]
    for col in group_cols:
        last = ""
        for row in filled:
            if row[col]:
                last = row[col]
            elif any(row[c] for c in label_cols if c > col):
                row[col] = last
    return filled


def table_claims(table: ExtractedTable, vocab: Vocabulary, context: str = "", section: str = "") -> list[Claim]:
    """Claims from one table: one per numeric cell of each result column. `context` is text that cites the table;
    `section` is the title of the section it sits in ("5.2 Results on CIFAR-10" names the data set last)."""
    body = [r for r in table.rows if r.kind == "body"]
    if not body:
        return []
    n_cols = table.n_cols
    header = table.header + [""] * (n_cols - len(table.header))
    numeric_share = []
    for col in range(n_cols):
        cells = [r.cells[col] for r in body if r.cells[col]]
        numeric_share.append(sum(1 for c in cells if parse_values(c)) / len(cells) if cells else 0.0)
    label_cols = [c for c in range(n_cols) if numeric_share[c] < 0.5]
    value_cols = [c for c in range(n_cols) if numeric_share[c] >= 0.5 and not NOT_RESULT.search(header[c])]
    # A "Std" / "±" column is the spread of the result column to its left, not a result of its own.
    std_of = {}
    for c in list(value_cols):
        if STD_HEADER.match(header[c].split(" / ")[-1].strip()):
            value_cols.remove(c)
            left = [v for v in value_cols if v < c]
            if left:
                std_of[left[-1]] = c
    if not label_cols and value_cols and header[0] == "":  # a first numeric column with no header is a row label
        label_cols = [0]
        value_cols = value_cols[1:]
    caption_metric = find_metric(table.caption) or find_metric(context)
    caption_direction = _direction(table.caption)
    column_metric = {c: _column_metric(header[c]) for c in value_cols}
    printed_header = any(header)
    row_metric_possible = any(find_metric(r.cells[c]) for r in body for c in label_cols)
    results_caption = RESULTS_CAPTION.search(table.caption) and not SETTINGS_CAPTION.search(table.caption)
    if not (caption_metric or any(column_metric.values()) or row_metric_possible or results_caption):
        return []  # not a results table (a list of files with sizes, the hyperparameters behind the results)
    dataset_cols = [c for c in label_cols if DATASET_HEADER.match(header[c].split(" / ")[-1].strip())]
    method_cols = [c for c in label_cols if c not in dataset_cols]
    method_col = next(
        (c for c in method_cols if METHOD_HEADER.search(header[c])), method_cols[0] if method_cols else None
    )
    caption_dataset = vocab.find_all(table.caption)
    single_caption_dataset = caption_dataset[0][1] if len({n for _, n in caption_dataset}) == 1 else None
    section_names = {n for _, n in vocab.find_all(section)}
    if single_caption_dataset is None and not caption_dataset and len(section_names) == 1:
        single_caption_dataset = section_names.pop()
    filled = _fill_down([r.cells for r in table.rows], label_cols) if label_cols else [r.cells for r in table.rows]
    claims: list[Claim] = []
    section_dataset: str | None = None
    body_index = 0
    for row, cells in zip(table.rows, filled, strict=False):
        if row.kind == "section":
            section_dataset = vocab.find(" ".join(cells)) or section_dataset
            continue
        body_index += 1
        labels = [cells[c] for c in label_cols if cells[c]]
        row_label = " / ".join(labels) or None
        row_metric = next((m for m in (find_metric(cells[c]) for c in label_cols) if m), None)
        row_dataset = next((d for d in (vocab.find(cells[c]) for c in dataset_cols + method_cols) if d), None)
        for col in value_cols:
            text = cells[col]
            values = parse_values(text) if text else []
            if not values:
                continue
            if len(values) == 1 and values[0][1] is None and col in std_of:
                spread = parse_number(cells[std_of[col]]) if cells[std_of[col]] else None
                values = [(values[0][0], spread[0] if spread else None)]
            column = _column_name(header, col, printed_header)
            names = _pair_names(column, len(values))
            metric = column_metric.get(col) or row_metric or caption_metric
            dataset = vocab.find(header[col]) or row_dataset or section_dataset or single_caption_dataset
            method = cells[method_col] if method_col is not None and cells[method_col] else row_label
            for k, ((value, std), name) in enumerate(zip(values, names, strict=True)):
                named = _column_metric(name) if len(values) > 1 else column_metric.get(col)
                own_metric = named or metric
                # "lower is better" in the caption decides for a column whose header names no metric of its own.
                direction = own_metric[1] if own_metric else None
                if caption_direction is not None and named is None:
                    direction = caption_direction
                suffix = "ab"[k] if len(values) > 1 else ""
                claims.append(
                    Claim(
                        id=_claim_id(table, body_index, col + 1) + suffix,
                        value=value,
                        text=text,
                        std=std,
                        page=row.page,
                        table=table.label,
                        row=row_label,
                        column=name,
                        metric=own_metric[0] if own_metric else None,
                        dataset=dataset,
                        method=method,
                        higher_is_better=direction,
                        quote=row.line,
                    )
                )
    return claims


_LOWER_BETTER = re.compile(r"lower (is|=) better|lower values? (is|are) better|\(lower\)|smaller is better|↓")
_HIGHER_BETTER = re.compile(r"higher (is|=) better|higher values? (is|are) better|\(higher\)|larger is better|↑")


def _direction(text: str) -> bool | None:
    """higher_is_better as the text states it ("↓", "lower is better"), or None when it says nothing."""
    lowered = text.lower()
    down, up = bool(_LOWER_BETTER.search(lowered)), bool(_HIGHER_BETTER.search(lowered))
    return None if down == up else up


def _column_metric(header: str | None) -> tuple[str, bool] | None:
    """The metric a column header names; an unknown name with an arrow ("SycoRate ↓") is a metric too."""
    if not header:
        return None
    found = find_metric(header)
    if found:
        return found
    direction = _direction(header)
    if direction is not None:
        name = collapse(re.sub(r"[↑↓()]", " ", header.split(" / ")[-1])).lower()
        return (name, direction) if name else None
    return None


def _column_name(header: list[str], col: int, printed_header: bool) -> str | None:
    """The column as its header prints it ("Test Accuracy / MNIST"); a column the header leaves blank takes the
    spanning label to its left when the table prints a header, and "column N" only when it prints none."""
    if header[col]:
        return header[col]
    if printed_header:
        left = next((header[i] for i in range(col - 1, -1, -1) if header[i]), None)
        return left
    return f"column {col + 1}"


def _pair_names(column: str | None, count: int) -> list[str | None]:
    """Names for the results of one cell: "EM/F1" over "75.3/80.1" names them "EM" and "F1"."""
    if count == 1:
        return [column]
    if column:
        *above, last = column.split(" / ")
        parts = [p.strip() for p in re.split(r"\s*/\s*", last) if p.strip()]
        if len(parts) == count:
            return [" / ".join([*above, part]) for part in parts]
        return [f"{column} [{k + 1}]" for k in range(count)]
    return [None] * count


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences without breaking at "et al.", "e.g.", "Fig." or decimals."""
    sentences: list[str] = []
    start = 0
    for match in re.finditer(r"[.!?](?=\s+(?:[A-Z(\[\"“]|\d{1,2}\.\s+[A-Z]))", text):
        candidate = text[start : match.end()]
        if ABBREVIATIONS.search(candidate) or re.search(r"\b[A-Z]\.$", candidate):
            continue  # "et al." / initials "Y. LeCun": not a sentence end
        sentences.append(collapse(candidate))
        start = match.end()
    tail = collapse(text[start:])
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def page_sentences(page: PageData, skip: list[tuple[float, float, float, float]]) -> list[Sentence]:
    """Sentences of a page's running text; blocks inside `skip` areas (tables, captions) are left out."""
    out: list[Sentence] = []
    for block in page.blocks:
        xc, yc = (block.x0 + block.x1) / 2, (block.y0 + block.y1) / 2
        lines = [
            ln
            for ln in block.lines
            if not any(x0 <= (ln.x0 + ln.x1) / 2 <= x1 and y0 <= (ln.y0 + ln.y1) / 2 <= y1 for x0, y0, x1, y1 in skip)
        ]
        if not lines or any(x0 <= xc <= x1 and y0 <= yc <= y1 for x0, y0, x1, y1 in skip) and len(lines) < 2:
            continue
        for sentence in split_sentences(join_lines([ln.text for ln in lines])):
            out.append(Sentence(page.number, len(out) + 1, sentence))
    return out


NUMBER_IN_TEXT = re.compile(
    rf"(?<![\w.=/-])(?P<value>{VALUE_PATTERN})(?:\s*(?P<pct>%|percent\b))?"
    rf"(?:\s*(?:±|\+/-|\+-)\s*(?P<std>{VALUE_PATTERN})\s*(?:%|percent\b)?)?(?![\w/=-])"
)
REFERENCE_BEFORE = re.compile(
    r"(table|figure|fig\.|section|sec\.|eq\.|equation|appendix|algorithm|chapter|line|step|page|pp?\.|"
    r"top-|layer|version|v|stage|phase|class|classes|label)\s*$",
    re.IGNORECASE,
)
SETTING_BEFORE = re.compile(
    r"(learning rate|\blr\b|batch size|momentum|weight decay|dropout|decay|beta\d?|lambda|λ|α|β|γ|temperature|"
    r"warm-?up|seed|window|kernel|stride|size of|=|≤|≥|<|>|epochs? of|rate of|ratio of|factor of|threshold of|"
    r"within|radius|deviation of)\W*(\w+\W+){0,2}$",
    re.IGNORECASE,
)
COUNT_AFTER = re.compile(
    r"^\s*(%\s*)?(images?|examples?|samples?|instances?|classes|categories|pixels?|tokens?|words?|sentences?|"
    r"documents?|users?|items?|points?|products?|hours?|minutes?|seconds?|days?|gpus?|cpus?|tpus?|cores?|epochs?|"
    r"steps?|iterations?|layers?|units?|neurons?|heads?|parameters?|params|dimensions?|times|runs?|seeds?|folds?|"
    r"trials?|[kmgt]?b\b|[kmgt]?bytes|mb|gb|x\b|×|m\b|k\b|bn?\b|million|billion|thousand|languages?|subjects?|"
    r"-?bit|-?class|-?fold|-?layer|-?dimensional|-?way|-?shot|-?d\b|th\b|st\b|nd\b|rd\b)",
    re.IGNORECASE,
)
ACHIEVE = re.compile(r"achiev|obtain|reach|score|attain|yield|get|improv|outperform|reduc|surpass|gain", re.IGNORECASE)


def text_claims(sentences: list[Sentence], vocab: Vocabulary, methods: Iterable[str] = ()) -> list[Claim]:
    """Claims from running text: a number with a metric word close by, not a setting, count, year or reference.

    `methods` are the method names the tables use; one named in the sentence becomes the claim's method.
    """
    claims: list[Claim] = []
    method_patterns = [
        (m, re.compile(rf"(?<![\w-]){re.escape(m)}(?![\w-])")) for m in sorted(set(methods), key=len, reverse=True)
    ]
    for sentence in sentences:
        text = sentence.text
        if not re.search(r"\d", text):
            continue
        metric_hits = []
        for pattern, hib in METRICS:
            for m in pattern.finditer(text):
                metric_hits.append((m.start(), m.end(), hib))
        if not metric_hits:
            continue
        number_index = 0
        for match in NUMBER_IN_TEXT.finditer(text):
            raw = match.group("value")
            before = text[max(0, match.start() - 40) : match.start()]
            after = text[match.end() : match.end() + 20]
            try:
                value = float(raw.replace(",", "").replace(" ", ""))
            except ValueError:
                continue
            pct = bool(match.group("pct"))
            is_decimal = "." in raw
            # "a perplexity of 57", "FID is 112.3": a metric word right before the number, only words between.
            tight = any(
                0 <= match.start() - h[1] <= 25 and not re.search(r"[\d%(),;]", text[h[1] : match.start()])
                for h in metric_hits
            )
            if not (pct or is_decimal or tight):
                continue  # integers in prose are counts, years, sizes, section numbers
            if REFERENCE_BEFORE.search(before) or SETTING_BEFORE.search(before) or COUNT_AFTER.match(after):
                continue
            if value > 100 and not (tight and not pct):
                continue
            # The metric word must be close: within ~60 characters either side of the number.
            near = [h for h in metric_hits if h[1] >= match.start() - 60 and h[0] <= match.end() + 60]
            if not near:
                continue
            if not pct and not ACHIEVE.search(text) and not re.search(r"\b(of|is|was|at|to|by)\s*$", before):
                continue
            start, end, hib = min(near, key=lambda h: min(abs(h[0] - match.end()), abs(h[1] - match.start())))
            metric = find_metric(text[max(0, start - 20) : end]) or (text[start:end].lower(), hib)
            mentions = vocab.find_all(text)
            dataset = None
            if mentions:
                prior = [n for pos, n in mentions if pos < match.start()]
                dataset = prior[-1] if prior else mentions[0][1]
            number_index += 1
            printed = collapse(match.group(0))
            claims.append(
                Claim(
                    id=f"p{sentence.page}-s{sentence.index}-n{number_index}",
                    value=value,
                    text=printed,
                    std=float(match.group("std").replace(",", "")) if match.group("std") else None,
                    page=sentence.page,
                    table=None,
                    row=None,
                    column=None,
                    metric=metric[0],
                    dataset=dataset,
                    method=next((m for m, pattern in method_patterns if pattern.search(text)), None),
                    higher_is_better=metric[1],
                    quote=text,
                    cited=bool(CITATION.search(text)),
                )
            )
    return claims
