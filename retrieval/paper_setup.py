"""The experimental setup a replication needs, each fact with the page and sentence that states it.

Rules are explicit patterns over sentences of running text (tables give the evaluated models). A key no rule finds
is listed in `Setup.missing`: the paper does not say it, and we do not guess it. Each rule returns a short `value`
(the phrase that matched, or a normalised form such as "train=60000; test=10000") and the whole sentence as `quote`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from retrieval.claims import Sentence, Vocabulary
from retrieval.models import Claim, Setup, SetupItem
from retrieval.pdf import collapse

SETUP_KEYS = [
    "dataset",
    "split",
    "model",
    "optimizer",
    "learning_rate",
    "batch_size",
    "epochs",
    "seeds",
    "aggregation",
    "preprocessing",
    "hardware",
]
MAX_PER_KEY = {"model": 60, "dataset": 20}  # other keys: 8 items at most

_NUM = r"\d[\d,]*(?:\s\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?"
_COUNT = r"\d{1,3}(?:,\s?\d{3})+|\d+(?:\.\d+)?\s*[kKM]\b|\d+"


def _count(text: str) -> str:
    return re.sub(r",\s", ",", text)


def _split(sentence: str) -> str | None:
    """ "train=60,000; test=10,000" from a sentence that gives split sizes."""
    parts = []
    pattern = re.compile(
        rf"(?P<name>train(?:ing)?|test(?:ing)?|validation|val|dev(?:elopment)?|held-out)\b[^.;]*?"
        rf"(?P<n>{_COUNT})\s*(?:images|examples|samples|instances|sentences|documents|pairs|points|records|items)"
        rf"|(?P<n2>{_COUNT})\s*(?:images|examples|samples|instances|sentences|documents|pairs)\s+(?:for|in|as)\s+"
        rf"(?:the\s+)?(?P<name2>train(?:ing)?|test(?:ing)?|validation|val|dev)",
        re.IGNORECASE,
    )
    for m in pattern.finditer(sentence):
        name = (m.group("name") or m.group("name2")).lower()
        name = {"training": "train", "testing": "test", "val": "validation", "development": "dev"}.get(name, name)
        per_class = re.match(
            r"\s*(\w+\s+){0,2}(from each|per|for each|in each)\s+(class|category|label)",
            sentence[m.end() :],
            re.IGNORECASE,
        )
        parts.append(f"{name}={_count(m.group('n') or m.group('n2'))}{' per class' if per_class else ''}")
    if parts:
        return "; ".join(dict.fromkeys(parts))
    if re.search(r"\b(divided|split|partitioned)\s+into\b.*\b(train|test|validation)", sentence, re.IGNORECASE):
        return collapse(re.search(r"(divided|split|partitioned)\s+into\b[^.;]*", sentence, re.IGNORECASE).group(0))
    if re.search(r"(\d+\s*(/|:)\s*\d+\s*(/|:)?\s*\d*\s*(split|ratio))|\b\d+-fold cross[- ]validation", sentence, re.I):
        return collapse(re.search(r"\d+\s*(/|:)\s*\d+[^.;,]*|\d+-fold cross[- ]validation", sentence, re.I).group(0))
    return None


def _clause(pattern: str, flags: int = re.IGNORECASE, stops: str = ".;,") -> Callable[[str], str | None]:
    """The clause (between `stops` characters) around the first match of a keyword pattern.

    Cheaper and safer than a regex with a leading `[^.;,]*`, which backtracks over every start position.
    """
    compiled = re.compile(pattern, flags)

    def rule(sentence: str) -> str | None:
        match = compiled.search(sentence)
        if not match:
            return None
        start = max(sentence.rfind(c, 0, match.start()) for c in stops) + 1
        ends = [i for i in (sentence.find(c, match.end()) for c in stops) if i >= 0]
        return collapse(sentence[start : min(ends) if ends else len(sentence)]).rstrip(" ,;") or None

    return rule


def _phrase(pattern: str, flags: int = re.IGNORECASE) -> Callable[[str], str | None]:
    compiled = re.compile(pattern, flags)

    def rule(sentence: str) -> str | None:
        match = compiled.search(sentence)
        return collapse(match.group(0)).rstrip(" ,;") if match else None

    return rule


_RULES: dict[str, list[Callable[[str], str | None]]] = {
    "split": [_split],
    "optimizer": [
        _phrase(
            r"\b(Adam[WaxX]?|AdaGrad|Adadelta|RMSProp|LAMB|LARS|Adafactor|L-BFGS|Lion|"
            r"(?:stochastic gradient descent|SGD)(?:\s+with\s+(?:Nesterov\s+)?momentum(?:\s+(?:of\s+)?[\d.]+)?)?)\b"
            r"(?!\w)(?![-_]?Classifier)",
            0,
        )
    ],
    "learning_rate": [_phrase(rf"\b(learning[- ]rate|\blr\b)[^.;]{{0,40}}?{_NUM}(?:\s*[×x]\s*10\s*[-−]\s*\d+)?")],
    "batch_size": [
        _phrase(rf"\b(mini-?)?batch(?:[- ]size)?(?:\s+(?:of|is|was|=|:))?\s*{_NUM}"),
        _phrase(rf"{_NUM}\s+(?:examples|samples|images|sequences|tokens)\s+per\s+(?:mini-?)?batch"),
    ],
    "epochs": [
        _phrase(rf"\b{_NUM}\s*[kKM]?\s+(?:training\s+)?(epochs|iterations|steps|updates|gradient steps)\b"),
        _phrase(rf"\b(epochs|iterations|training steps)\s+(?:of|is|was|=|:|to)\s*{_NUM}"),
    ],
    "seeds": [
        _phrase(r"\brepeated\s+(\w+)\s+times(?:\s+(?:by|with|using|on)\s+[^,.;]+?)?(?=\s+and\s+the\b|[,.;]|$)"),
        _phrase(r"\b(\w+)\s+(?:random\s+|different\s+|independent\s+)*(seeds|runs|trials|repetitions|restarts)\b"),
        _phrase(
            r"\b(averaged|mean|median)\s+(?:over|of|across)\s+(\w+)\s+(?:random\s+|independent\s+)*(runs|seeds|trials)"
        ),
        _phrase(r"\brandom seeds?\b[^.;]{0,40}"),
    ],
    "aggregation": [
        _phrase(
            r"\b(the\s+)?(average|averaged|mean|median)\s+(\w+\s+){0,3}(accuracy|error|performance|score|results?|"
            r"loss|over|of|across)\b[^,.;]*"
        ),
        _phrase(r"\bmean\s*(±|\+/-|and)\s*(standard deviation|std|standard error)[^,.;]*"),
        _phrase(r"(±|\+/-)[^.;]{0,40}\b(standard deviation|std|standard error)s?\b[^,.;]*"),
        _phrase(
            r"\b(standard deviation|standard error|confidence interval)s?\s+(over|across|of|from)\s+[^,.;]*"
            r"\b(runs|seeds|trials|repetitions)\b"
        ),
    ],
    "preprocessing": [
        _clause(
            r"\b(normaliz|normalis|standardiz|augment|random(ly)? crop|horizontal(ly)? flip|resiz|rescal|"
            r"whiten|zero[- ]mean|unit variance|tokeniz|lower-?cased|lower-?casing|convert\w* [^.;,]*gr[ae]yscale|"
            r"downsampl|subsampl|pixel values|center[- ]crop|mean subtraction|preprocess|pre-process)"
        )
    ],
    "hardware": [
        _clause(
            r"\b(GPUs?|TPUs?|NVIDIA|Tesla|V100|A100|H100|P100|K80|T4|RTX\s?\d+|GTX\s?\d+|TITAN|"
            r"\d+\s*(CPU\s+)?cores|CPU|Xeon)\b",
            0,
            stops=".;",
        )
    ],
    "model": [
        _phrase(
            r"\b(ResNet-?\d+|ResNeXt-?\d*|WideResNet|WRN-\d+-\d+|VGG-?\d+|DenseNet-?\d*|EfficientNet-?B?\d*|ViT-?[A-Z]?/?\d*|"
            r"BERT(-base|-large)?|RoBERTa(-base|-large)?|GPT-?\d?|T5(-\w+)?|LSTM|GRU|Transformer|CNN|MLP|"
            r"multi-?layer perceptron|convolutional neural network|\d+-layer\s+\w+|\d+\s+hidden\s+units|"
            r"hidden (layer|size|dimension)s?\s+of\s+\d+)\b",
            0,
        )
    ],
}


def extract_setup(sentences: list[Sentence], vocab: Vocabulary, claims: list[Claim]) -> Setup:
    items: list[SetupItem] = []
    seen: set[tuple[str, str]] = set()

    def add(key: str, value: str, page: int, quote: str) -> None:
        if (key, value.lower()) in seen or sum(1 for i in items if i.key == key) >= MAX_PER_KEY.get(key, 8):
            return
        seen.add((key, value.lower()))
        items.append(SetupItem(key=key, value=value, page=page, quote=quote))

    # Datasets: those the results are reported on, and those the paper keeps returning to (not a passing mention
    # such as "CIFAR-10 and ImageNet are popular").
    mentions: dict[str, int] = {}
    for sentence in sentences:
        for name in {n for _, n in vocab.find_all(sentence.text)}:
            mentions[name] = mentions.get(name, 0) + 1
    used = {c.dataset for c in claims if c.dataset and not c.cited}
    relevant = used | {name for name, count in mentions.items() if count >= 3}
    for sentence in sentences:  # "we train / evaluate / use ... on X": the paper's own data, however rarely named
        if re.search(
            r"\b(we|our)\b[^.]*\b(use|train|fine-tun|evaluat|experiment|test|benchmark|report)",
            sentence.text,
            re.IGNORECASE,
        ):
            relevant |= {n for _, n in vocab.find_all(sentence.text)}
    for sentence in sentences:
        text = sentence.text
        if len(text) > 600:  # a run-on "sentence" (a list or a broken layout) is no good as a quote
            continue
        for name in dict.fromkeys(n for _, n in vocab.find_all(text)):
            if name in relevant and re.search(
                r"\b(data\s?sets?|benchmark|corpus|train|test|evaluat|experiment)", text, re.IGNORECASE
            ):
                add("dataset", name, sentence.page, text)
        for key, rules in _RULES.items():
            for rule in rules:
                value = rule(text)
                if value:
                    add(key, value, sentence.page, text)
                    break
    # The methods a results table compares are the models a replication must build.
    for claim in claims:
        if claim.table and claim.method:
            add("model", claim.method, claim.page, claim.quote)
        if claim.table and claim.dataset:
            add("dataset", claim.dataset, claim.page, claim.quote)
    order = {key: i for i, key in enumerate(SETUP_KEYS)}
    items.sort(key=lambda item: (order.get(item.key, len(order)), item.page))
    missing = [key for key in SETUP_KEYS if not any(item.key == key for item in items)]
    return Setup(items=items, missing=missing)
