"""The experimental setup a replication needs, each fact with the page and sentence that states it.

Rules are explicit patterns over sentences of running text (tables give the evaluated models). A key no rule finds
is listed in `Setup.missing`: the paper does not say it, and we do not guess it. Each rule returns a short `value`
(the phrase that matched, or a normalised form such as "train=60000; test=10000") and the whole sentence as `quote`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from retrieval.claims import Sentence, Vocabulary
from retrieval.models import Claim, Confidence, Setup, SetupItem
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
        divided = re.search(r"(divided|split|partitioned)\s+into\b[^.;]*", sentence, re.IGNORECASE)
        return collapse(divided.group(0)) if divided else None
    if re.search(r"(\d+\s*(/|:)\s*\d+\s*(/|:)?\s*\d*\s*(split|ratio))|\b\d+-fold cross[- ]validation", sentence, re.I):
        ratio = re.search(r"\d+\s*(/|:)\s*\d+[^.;,]*|\d+-fold cross[- ]validation", sentence, re.I)
        return collapse(ratio.group(0)) if ratio else None
    return None


Rule = Callable[[str], "tuple[str, Confidence] | None"]
_COUNT_WORD = r"(?:\d+|two|three|four|five|six|seven|eight|nine|ten|twenty|fifty|hundred)"
# A "." ends a clause only before a space or the end: "Python 3.7.5", "3.60GHz" and "vLLM 0.9.2" stay whole.
_STOP = re.compile(r"[;,]|\.(?=\s|$)")


def _clause(pattern: str, flags: int = re.IGNORECASE, stops: re.Pattern[str] = _STOP) -> Callable[[str], str | None]:
    """The clause (between stop characters) around the first match of a keyword pattern.

    Cheaper and safer than a regex with a leading `[^.;,]*`, which backtracks over every start position.
    """
    compiled = re.compile(pattern, flags)

    def rule(sentence: str) -> str | None:
        match = compiled.search(sentence)
        if not match:
            return None
        before = [m.end() for m in stops.finditer(sentence, 0, match.start())]
        after = stops.search(sentence, match.end())
        start = before[-1] if before else 0
        return collapse(sentence[start : after.start() if after else len(sentence)]).strip(" ,;") or None

    return rule


def _phrase(pattern: str, flags: int = re.IGNORECASE) -> Callable[[str], str | None]:
    compiled = re.compile(pattern, flags)

    def rule(sentence: str) -> str | None:
        match = compiled.search(sentence)
        return collapse(match.group(0)).rstrip(" ,;") if match else None

    return rule


def _sure(rule: Callable[[str], str | None], confidence: Confidence, unless: str | None = None) -> Rule:
    """A rule whose matches carry `confidence`; `unless` names sentences it must not read (a decay factor is not
    a learning rate, "every 10 epochs" is a schedule, not the training length)."""
    veto = re.compile(unless, re.IGNORECASE) if unless else None

    def sure(sentence: str) -> tuple[str, Confidence] | None:
        value = rule(sentence)
        if value is None or (veto is not None and veto.search(value)):
            return None
        return value, confidence

    return sure


# Data words a preprocessing clause must mention: "normalization term" of a formula is not data preprocessing.
_DATA_WORDS = re.compile(
    r"\b(images?|inputs?|pixels?|data|dataset|tokens?|text|words?|sentences?|features?|samples?|examples?|"
    r"training set|channels?|audio|signals?|recordings?|crops?|patches)\b",
    re.IGNORECASE,
)


def _preprocessing(sentence: str) -> tuple[str, Confidence] | None:
    value = _clause(
        r"\b(normaliz|normalis|standardiz|augment|random(ly)? crop|horizontal(ly)? flip|resiz|rescal|"
        r"whiten|zero[- ]mean|unit variance|tokeniz|lower-?cased|lower-?casing|convert\w* [^.;,]*gr[ae]yscale|"
        r"downsampl|subsampl|pixel values|center[- ]crop|mean subtraction|preprocess|pre-process)"
    )(sentence)
    if value is None or not _DATA_WORDS.search(sentence):
        return None
    return value, ("high" if _DATA_WORDS.search(value) else "medium")


# A coined model name the text introduces: "our GatedMixer-B model", "we propose PaSa-7b", "we train X-Net".
_NAME = r"([A-Z][\w.]*(?:[-/][\w.]+)*)"
_NAMED_MODEL = re.compile(
    rf"\b(?i:our|the proposed)\s+{_NAME}\s+(?i:model|network|architecture|classifier|method)\b"
    rf"|\b(?i:we)\s+(?:propose|introduce|present|train|fine-tune|pre-train)\s+(?:a\s+|an\s+|the\s+)?{_NAME}"
    rf"(?=[\s,.;)])"
)


def _named_model(sentence: str) -> str | None:
    """The name, when it looks coined (a capital inside, a digit or a hyphen: "GatedMixer-B", "BiLSTM")."""
    for match in _NAMED_MODEL.finditer(sentence):
        name = (match.group(1) or match.group(2)).rstrip(".")
        if re.match(
            r"[^.;]{0,60}?\b(benchmark|data\s?set|corpus|suite|library|toolkit)\b", sentence[match.end() :], re.I
        ):
            continue  # "we introduce SycoBench-600, a ... benchmark": data, not a model
        if re.search(r"[A-Z].*[A-Z]|\d|-", name[1:]) and len(name) >= 3:
            return name
    return None


_TRAINED_FOR = re.compile(
    rf"\b(?:train(?:ed|s|ing)?|fine-?tun(?:ed|es|ing)?|run|ran)\s+(?:\w+\s+){{0,4}}?for\s+"
    rf"(?P<n>{_NUM}\s*[kKM]?\s+(?:training\s+)?(?:epochs|iterations|steps|updates|gradient steps))\b",
    re.IGNORECASE,
)
_N_EPOCHS = re.compile(rf"(?<![\w.])(?P<n>{_NUM}\s*[kKM]?\s+(?:training\s+)?epochs)\b", re.IGNORECASE)
_SCHEDULE = re.compile(r"\b(every|each|first|last|after|within|per)\s+$", re.IGNORECASE)


def _epochs(sentence: str) -> tuple[str, Confidence] | None:
    """ "90 epochs": sure when the sentence trains for it, less so for a bare count, never "every 10 epochs"."""
    trained = _TRAINED_FOR.search(sentence)
    if trained:
        return collapse(trained.group("n")), "high"
    for match in _N_EPOCHS.finditer(sentence):
        if not _SCHEDULE.search(sentence[: match.start()]):
            return collapse(match.group("n")), "medium"
    return None


_RULES: dict[str, list[Rule]] = {
    "split": [_sure(_split, "high")],
    "optimizer": [
        _sure(
            _phrase(
                r"\b(Adam[WaxX]?|AdaGrad|Adadelta|RMSProp|LAMB|LARS|Adafactor|L-BFGS|Lion|"
                r"(?:stochastic gradient descent|SGD)(?:\s+with\s+(?:Nesterov\s+)?momentum(?:\s+(?:of\s+)?[\d.]+)?)?)\b"
                r"(?!\w)(?![-_]?Classifier)",
                0,
            ),
            "high",
        )
    ],
    "learning_rate": [
        # "a learning rate of 1e-5", "learning rate = 0.1", "lr: 3e-4"; never "multiplies the learning rate by 0.9"
        # (a decay factor) nor "Lr(θf, θr)" (a loss).
        _sure(
            _phrase(
                rf"\b(?:(?:initial|base|peak|maximum|max\.?)\s+)?learning[- ]rates?\s*(?:\(lr\)\s*)?"
                rf"(?:of|=|:|is|was|set to|equal to|starting (?:at|from)|starting with a rate of)\s*"
                rf"{_NUM}(?:\s*[×x]\s*10\s*[-−]\s*\d+)?"
            ),
            "high",
        ),
        _sure(_phrase(rf"\blr\s*(?:=|:)\s*{_NUM}(?:\s*[×x]\s*10\s*[-−]\s*\d+)?"), "high"),
        _sure(
            _phrase(rf"\blearning[- ]rates?\b[^.;]{{0,30}}?(?<![\w.]){_NUM}(?:\s*[×x]\s*10\s*[-−]\s*\d+)?"),
            "medium",
            unless=r"\b(by|factor|every|decay|warm-?up|after)\b",
        ),
    ],
    "batch_size": [
        _sure(_phrase(rf"\b(mini-?)?batch[- ]size(?:\s+(?:of|is|was|=|:|to))?\s*{_NUM}"), "high"),
        _sure(_phrase(rf"\bbatch(?:es)?\s+of\s+{_NUM}"), "medium"),
        _sure(_phrase(rf"{_NUM}\s+(?:examples|samples|images|sequences|tokens)\s+per\s+(?:mini-?)?batch"), "high"),
    ],
    "epochs": [_epochs],
    "seeds": [
        _sure(
            _phrase(r"\brepeated\s+(\w+)\s+times(?:\s+(?:by|with|using|on)\s+[^,.;]+?)?(?=\s+and\s+the\b|[,.;]|$)"),
            "high",
        ),
        _sure(
            _phrase(
                rf"\b{_COUNT_WORD}\s+(?:random\s+|different\s+|independent\s+|fixed\s+)*"
                r"(seeds|runs|trials|repetitions|restarts)\b"
            ),
            "high",
        ),
        _sure(
            _phrase(r"\b(random\s+)?seeds?\s*(?:\(\w\)\s*)?(?:of|=|:|is|was|set to)?\s*[^.;]{0,30}?\d[\d, ]*"), "medium"
        ),
        _sure(_phrase(r"\b(fixed|random)\s+seeds\b"), "low"),
    ],
    "aggregation": [
        _sure(
            _phrase(
                rf"\b(the\s+)?(average|averaged|mean|median)\s+(?:\w+\s+){{0,2}}?(over|across|of)\s+{_COUNT_WORD}\s+"
                r"(?:\w+\s+){0,2}?(runs|seeds|trials|repetitions|folds|splits|restarts)\b[^,.;]*"
            ),
            "high",
        ),
        _sure(_phrase(r"\bmean\s*(±|\+/-|and)\s*(standard deviation|std|standard error)[^,.;]*"), "high"),
        _sure(_phrase(r"(±|\+/-)[^.;]{0,40}\b(standard deviation|std|standard error)s?\b[^,.;]*"), "high"),
        _sure(
            _phrase(
                r"\b(standard deviation|standard error|confidence interval)s?\s+(over|across|of|from)\s+[^,.;]*"
                r"\b(runs|seeds|trials|repetitions)\b"
            ),
            "high",
        ),
        _sure(
            _phrase(
                r"\b(the\s+)?(average|mean|median)\s+(test\s+|validation\s+)?(accuracy|error|score|performance|"
                r"result)s?(?:\s+\w+){0,5}?\s+(is|are|was|were)\s+reported\b[^,.;]*"
            ),
            "medium",
        ),
    ],
    "preprocessing": [_preprocessing],
    "hardware": [
        _sure(
            _clause(
                r"\b(GPUs?|TPUs?|NVIDIA|Tesla|V100|A100|H100|P100|K80|T4|RTX\s?\d+|GTX\s?\d+|TITAN|"
                r"\d+\s*(CPU\s+)?cores|CPU|Xeon)\b",
                0,
                stops=re.compile(r";|\.(?=\s|$)"),
            ),
            "high",
        )
    ],
    "model": [
        _sure(
            _phrase(
                r"\b(ResNet-?\d+|ResNeXt-?\d*|WideResNet|WRN-\d+-\d+|VGG-?\d+|DenseNet-?\d*|EfficientNet-?B?\d*|"
                r"ViT-?[A-Z]?/?\d*|BERT(-base|-large)?|RoBERTa(-base|-large)?|GPT-?\d[\w.]*(?:-mini)?|T5(-\w+)?|"
                r"Llama-?\d[\w.-]*|Mistral-?\d*[\w.-]*|Qwen[\w.-]*|Gemma-?\d[\w.-]*)(?![\w-])",
                0,
            ),
            "high",
        ),
        _sure(_named_model, "medium"),
        _sure(
            _phrase(
                r"\b(LSTM|GRU|Transformer|CNN|MLP|multi-?layer perceptron|convolutional neural network|"
                r"\d+-layer\s+\w+|\d+\s+hidden\s+units|hidden (layer|size|dimension)s?\s+of\s+\d+)\b",
                0,
            ),
            "medium",
        ),
    ],
}
# Bibliography entries and citations in running text are no setup: "Adam: A method for stochastic optimization".
_REFERENCE_CUES = re.compile(
    r"\b(In Proceedings|Proceedings of|arXiv(:| preprint)|Advances in Neural|Conference on|Journal of|"
    r"Transactions on|pp\. ?\d|vol\. ?\d|doi:|ISBN)\b|https?://",
    re.IGNORECASE,
)


def _is_reference(text: str) -> bool:
    return (
        bool(_REFERENCE_CUES.search(text))
        or len(re.findall(r"\b(19|20)\d\d[a-z]?\b", text)) >= 2
        and (text.count(",") >= 4)
    )


def extract_setup(sentences: list[Sentence], vocab: Vocabulary, claims: list[Claim]) -> Setup:
    """Setup facts from running text, each with its quote and how sure the rule is; precision over recall.

    Models come from the text only: a results table's row labels name what was compared (baselines among them),
    and the spec drafter reads the table itself.
    """
    items: list[SetupItem] = []
    seen: set[tuple[str, str]] = set()

    def add(key: str, value: str, page: int, quote: str, confidence: Confidence) -> None:
        if (key, value.lower()) in seen or sum(1 for i in items if i.key == key) >= MAX_PER_KEY.get(key, 8):
            return
        seen.add((key, value.lower()))
        items.append(SetupItem(key=key, value=value, page=page, quote=quote, confidence=confidence))

    sentences = [s for s in sentences if len(s.text) <= 600 and not _is_reference(s.text)]
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
        for name in dict.fromkeys(n for _, n in vocab.find_all(text)):
            if name in relevant and re.search(
                r"\b(data\s?sets?|benchmark|corpus|train|test|evaluat|experiment)", text, re.IGNORECASE
            ):
                known = vocab.is_known(name)
                if known or len(name) >= 3:  # "MC", "FF": abbreviations, not data sets
                    add("dataset", name, sentence.page, text, "high" if known else "medium")
        for key, rules in _RULES.items():
            for rule in rules:
                found = rule(text)
                if found:
                    add(key, found[0], sentence.page, text, found[1])
                    break
    for claim in claims:  # the data sets results are reported on, as the table or sentence names them
        if claim.table and claim.dataset and (vocab.is_known(claim.dataset) or len(claim.dataset) >= 3):
            add("dataset", claim.dataset, claim.page, claim.quote, "medium")
    order = {key: i for i, key in enumerate(SETUP_KEYS)}
    items.sort(key=lambda item: (order.get(item.key, len(order)), item.page))
    missing = [key for key in SETUP_KEYS if not any(item.key == key for item in items)]
    return Setup(items=items, missing=missing)
