"""The verification stage a semantic-cache candidate must pass before its answer is served.

A cosine similarity alone cannot tell a paraphrase from a trap: "Is ibuprofen safe with alcohol?"
and "Is ibuprofen unsafe with alcohol?" sit at similarity 0.95. A candidate is served only when
all three stages agree, cheapest first:

1. **similarity** ``cos(new, cached) >= similarity_threshold`` (cosine similarity; RedisVL's
   distance is ``1 - similarity``);
2. **guards** (:func:`guard_refusal`): the two questions must carry the same numbers and amounts,
   currencies, dates and time units, negation polarity, no antonym or opposite comparison word
   across them (safe/unsafe, under/over, before/after), and no named things swapped across a
   direction word (from savings to current vs from current to savings);
3. **classifier** (:class:`PairModel`): a small MLP over features that are cheap once both
   embeddings exist (cosine, ``|u-v|`` and ``u*v``, token overlap, length ratio, guard signals),
   trained on the tune half of qqp-dev by :mod:`costkit_litellm.cache.pair_train`; its weights
   ship as ``pair_model.json`` beside this module, with the threshold calibrated there.

Pure Python and numpy: no torch, no litellm. A verdict costs about 30-140 µs per candidate
(``bench/cache_quality.py`` measures it); text analysis is memoised per distinct text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from costkit_litellm.config_base import Section
from costkit_litellm.errors import CostKitError

Floats = npt.NDArray[np.float32]

DEFAULT_MODEL_PATH = Path(__file__).with_name("pair_model.json")
MODEL_FORMAT = "costkit-pair-mlp/1"

# --------------------------------------------------------------------------- text analysis

_TOKEN = re.compile(
    r"\d+(?:[.,]\d+)*(?:st|nd|rd|th|k|m|bn)?(?![a-z0-9])"  # amounts: 1,000  2.5  15k  2nd
    r"|[a-z0-9]*[a-z][a-z0-9]*(?:'[a-z]+)?"  # words and identifiers: ps4, 2d, t3
    r"|[£$€¥₹%]"
)
# Capitalised words after the first (names, acronyms): "ECE" vs "EEE", "Poodle" vs "Beagle".
_NAME = re.compile(r"(?<=\s)[A-Z][A-Za-z0-9]*|\b[A-Z]{2,}[A-Za-z0-9]*")
_NUMBER = re.compile(r"(\d+(?:[.,]\d+)*)(st|nd|rd|th|k|m|bn)?")
_SCALE = {"k": 1e3, "m": 1e6, "bn": 1e9}

_NUMBER_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1e6, "billion": 1e9, "dozen": 12, "half": 0.5, "twice": 2, "double": 2, "triple": 3,
}  # fmt: skip
# "one" / 1 is left out on purpose: "which one", "a year" and "1 year" all mean the same.

_CURRENCIES = {
    "$": "usd", "dollar": "usd", "dollars": "usd", "usd": "usd", "£": "gbp", "gbp": "gbp", "pound": "gbp",
    "pounds": "gbp", "quid": "gbp", "€": "eur", "euro": "eur", "euros": "eur", "eur": "eur", "¥": "jpy",
    "yen": "jpy", "jpy": "jpy", "₹": "inr", "rupee": "inr", "rupees": "inr", "rs": "inr", "inr": "inr",
    "yuan": "cny", "rmb": "cny", "cny": "cny", "bitcoin": "btc", "btc": "btc", "%": "percent",
    "percent": "percent", "percentage": "percent",
}  # fmt: skip

_MONTHS = {
    "january": "jan", "jan": "jan", "february": "feb", "feb": "feb", "april": "apr", "apr": "apr",
    "june": "jun", "july": "jul", "august": "aug", "aug": "aug", "september": "sep", "sept": "sep",
    "october": "oct", "oct": "oct", "november": "nov", "nov": "nov", "december": "dec",
}  # fmt: skip
# "may" and "march" are verbs far more often than months: counted only next to a number.
_AMBIGUOUS_MONTHS = {"may": "may", "march": "mar"}
_DAYS = {
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "today", "tomorrow",
    "yesterday", "tonight", "weekend", "weekday", "weekdays", "weekends",
}  # fmt: skip
_TIME_UNITS = {
    "minute": "minute", "minutes": "minute", "hour": "hour", "hours": "hour", "hourly": "hour",
    "day": "day", "days": "day", "daily": "day", "week": "week", "weeks": "week", "weekly": "week",
    "month": "month", "months": "month", "monthly": "month", "year": "year", "years": "year",
    "yearly": "year", "annual": "year", "annually": "year", "decade": "decade", "decades": "decade",
}  # fmt: skip

_NEGATIONS = {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "cannot", "without", "nowhere"}

# Words that flip the answer when one question has one side and the other the other side.
_ANTONYMS = [
    ("safe", "dangerous"), ("safe", "harmful"), ("legal", "illegal"), ("good", "bad"), ("best", "worst"),
    ("better", "worse"), ("true", "false"), ("right", "wrong"), ("hot", "cold"), ("increase", "decrease"),
    ("rise", "fall"), ("buy", "sell"), ("buying", "selling"), ("win", "lose"), ("accept", "reject"),
    ("allowed", "forbidden"), ("allowed", "banned"), ("add", "remove"), ("enable", "disable"),
    ("start", "stop"), ("open", "close"), ("import", "export"), ("upload", "download"), ("send", "receive"),
    ("lend", "borrow"), ("first", "last"), ("early", "late"), ("fast", "slow"), ("big", "small"),
    ("large", "small"), ("long", "short"), ("high", "low"), ("easy", "hard"), ("easy", "difficult"),
    ("pros", "cons"), ("advantages", "disadvantages"), ("love", "hate"), ("happy", "sad"), ("rich", "poor"),
    ("male", "female"), ("men", "women"), ("man", "woman"), ("boy", "girl"), ("husband", "wife"),
    ("positive", "negative"), ("include", "exclude"), ("strong", "weak"), ("success", "failure"),
    ("cheap", "expensive"), ("benefits", "risks"), ("gain", "lose"), ("credit", "debit"),
    ("deposit", "withdraw"), ("inbound", "outbound"), ("input", "output"), ("before", "after"),
    ("encrypt", "decrypt"), ("encode", "decode"), ("minimum", "maximum"), ("min", "max"),
]  # fmt: skip
_NEGATIVE_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")

# Comparison words: the same question with "under" and "over" has opposite answers, and a
# question with a bound ("orders over £50") is not the question without it.
_COMPARISONS = {
    "under": "down", "below": "down", "less": "down", "fewer": "down", "lower": "down", "smaller": "down",
    "cheaper": "down", "before": "down", "earlier": "down", "least": "down", "within": "down",
    "over": "up", "above": "up", "more": "up", "greater": "up", "higher": "up", "larger": "up",
    "bigger": "up", "after": "up", "later": "up", "exceeding": "up", "beyond": "up",
}  # fmt: skip
# Only these count when present on one side alone (plain "more"/"after" are too common in paraphrases).
_BOUNDS = {"under", "below", "over", "above", "fewer", "exceeding", "less", "cheaper"}

# Words that give named things a direction: swapping the things across one of them changes the question.
_DIRECTIONS = {"to", "into", "from", "than", "before", "after", "towards", "onto", "over", "vs", "versus"}
_SYMMETRIC_DIRECTIONS = {"vs", "versus"}

_STOPWORDS = frozenset({
    "a", "an", "the", "of", "in", "on", "at", "for", "by", "with", "about", "as", "is", "are", "was", "were",
    "be", "been", "being", "am", "do", "does", "did", "done", "doing", "have", "has", "had", "having", "i",
    "me", "my", "mine", "we", "us", "our", "you", "your", "he", "him", "his", "she", "her", "it", "its", "they",
    "them", "their", "this", "that", "these", "those", "what", "which", "who", "whom", "whose", "when", "where",
    "why", "how", "there", "here", "and", "or", "but", "if", "then", "so", "than", "too", "very", "can",
    "could", "should", "would", "will", "shall", "might", "must", "may", "also", "just", "any", "some", "all",
    "each", "every", "other", "such", "own", "same", "only", "get", "got", "getting", "make", "makes", "made",
    "way", "ways", "thing", "things", "really", "much", "many", "most", "best", "good", "quora", "someone",
    "something", "anyone", "people", "person", "one", "ones", "to", "into", "from", "out", "up", "down", "off",
    "again", "further", "once", "s", "t",
})  # fmt: skip
_QUESTION_WORDS = ("what", "which", "who", "whom", "whose", "when", "where", "why", "how", "is", "are", "can", "do")


@dataclass(frozen=True)
class Analysis:
    """What the guards and the classifier need from one text, computed once per distinct text."""

    tokens: tuple[str, ...]
    token_set: frozenset[str]
    content: frozenset[str]
    numbers: frozenset[str]
    currencies: frozenset[str]
    dates: frozenset[str]
    time_units: frozenset[str]
    negation_parity: int
    comparisons: frozenset[str]
    question_word: str
    names: frozenset[str]


def _number_value(token: str) -> str | None:
    if token in _NUMBER_WORDS:
        value: float = _NUMBER_WORDS[token]
    elif not token[0].isdigit() or (token[-1].isalpha() and _NUMBER.fullmatch(token) is None):
        # An identifier with digits (ps4, 2d, t3) is compared as written; a plain word is no number.
        return token if any(c.isdigit() for c in token) else None
    else:
        match = _NUMBER.fullmatch(token)
        if match is None:
            return None
        digits, suffix = match.groups()
        # "1,000" is a thousand; "1.5" is one and a half; "3,5" (decimal comma) reads as 3.5.
        if "," in digits and re.fullmatch(r"\d{1,3}(,\d{3})+", digits):
            digits = digits.replace(",", "")
        try:
            value = float(digits.replace(",", ".")) * _SCALE.get(suffix or "", 1.0)
        except ValueError:  # "1.2.3", a version or a list: compare it as written
            return token
    return None if value == 1 else f"{value:g}"


@lru_cache(maxsize=4096)
def analyse(text: str) -> Analysis:
    """Tokens and guard-relevant facts of ``text`` (memoised: a cached entry is analysed once)."""
    tokens = tuple(t.removesuffix("'s") for t in _TOKEN.findall(text.lower().replace("\u2019", "'")))
    numbers = {n for t in tokens if (n := _number_value(t)) is not None}
    dates = {_MONTHS[t] for t in tokens if t in _MONTHS} | {t for t in tokens if t in _DAYS}
    # "a 30 year old" is an age (the number guard covers it), not a period.
    units = {
        _TIME_UNITS[t]
        for t, after in zip(tokens, (*tokens[1:], ""), strict=True)
        if t in _TIME_UNITS and after != "old"
    }
    for i, token in enumerate(tokens):
        if token in _AMBIGUOUS_MONTHS:
            neighbours = tokens[max(i - 1, 0) : i] + tokens[i + 1 : i + 2]
            if any(n[0].isdigit() for n in neighbours):
                dates.add(_AMBIGUOUS_MONTHS[token])
    negations = sum(1 for t in tokens if t in _NEGATIONS or t.endswith("n't"))
    comparisons = {t for t in tokens if t in _COMPARISONS}
    for i in range(len(tokens) - 1):
        if tokens[i] == "at" and tokens[i + 1] in ("least", "most"):
            comparisons.add(f"at {tokens[i + 1]}")
    question_word = next((t for t in tokens if t in _QUESTION_WORDS), "")
    return Analysis(
        tokens=tokens,
        token_set=frozenset(tokens),
        content=frozenset(t for t in tokens if t not in _STOPWORDS),
        numbers=frozenset(numbers),
        currencies=frozenset(_CURRENCIES[t] for t in tokens if t in _CURRENCIES),
        dates=frozenset(dates),
        time_units=frozenset(units),
        negation_parity=negations % 2,
        comparisons=frozenset(comparisons),
        question_word=question_word,
        names=frozenset(n.lower() for n in _NAME.findall(text) if len(n) > 2),
    )


# --------------------------------------------------------------------------- guards

GUARDS = ("numbers", "currency", "dates", "negation", "antonym", "comparison", "order", "names")
"""Every guard, in the order they run; each name is also the verdict reason when it refuses."""


def _differ(label: str, a: frozenset[str], b: frozenset[str]) -> str | None:
    if a == b:
        return None
    return f"{label}: {', '.join(sorted(a)) or '-'} vs {', '.join(sorted(b)) or '-'}"


def _crossing(a: frozenset[str], b: frozenset[str], x: str, y: str) -> bool:
    """One side says ``x`` where the other says ``y`` (and neither says both)."""
    return (x in a and y in b and y not in a and x not in b) or (y in a and x in b and x not in a and y not in b)


def _antonym(a: Analysis, b: Analysis) -> str | None:
    for x, y in _ANTONYMS:
        if _crossing(a.token_set, b.token_set, x, y):
            return f"antonym: {x} vs {y}"
    only_a, only_b = a.token_set - b.token_set, b.token_set - a.token_set
    for word in only_a | only_b:
        for prefix in _NEGATIVE_PREFIXES:
            if len(word) > len(prefix) + 2 and word.startswith(prefix):
                stem = word[len(prefix) :]
                other = only_b if word in only_a else only_a
                if stem in other:
                    return f"antonym: {stem} vs {word}"
    return None


def _both_differ(label: str, a: frozenset[str], b: frozenset[str]) -> str | None:
    # Named on one side only ("for Rs 60000" vs "for 60k", "how long" vs "how many hours") is
    # usually a rewording; the number guard still compares the amounts.
    return _differ(label, a, b) if a and b else None


def _dates(a: Analysis, b: Analysis) -> str | None:
    return _both_differ("dates", a.dates, b.dates) or _both_differ("periods", a.time_units, b.time_units)


def _comparison(a: Analysis, b: Analysis) -> str | None:
    for x in a.comparisons - b.comparisons:
        for y in b.comparisons - a.comparisons:
            if _COMPARISONS.get(x) != _COMPARISONS.get(y):
                return f"comparison: {x} vs {y}"
    # A bound on one side only matters next to a quantity: "orders over £50" vs "orders of £50",
    # not "under the Bush administration" vs "by the Bush administration".
    one_sided = {
        word
        for word in (a.comparisons ^ b.comparisons) & (_BOUNDS | {"at least", "at most"})
        if (a if word in a.comparisons else b).numbers
    }
    if one_sided:
        return f"comparison: {', '.join(sorted(one_sided))} on one side only"
    return None


def _directions_between(tokens: tuple[str, ...], first: int, second: int) -> frozenset[str]:
    low, high = sorted((first, second))
    return frozenset(t for t in tokens[low + 1 : high] if t in _DIRECTIONS)


def _order(a: Analysis, b: Analysis) -> str | None:
    shared = a.content & b.content
    if len(shared) < 2 or not (a.token_set & _DIRECTIONS and b.token_set & _DIRECTIONS):
        return None
    pos_a = {t: i for i, t in reversed(list(enumerate(a.tokens))) if t in shared}
    pos_b = {t: i for i, t in reversed(list(enumerate(b.tokens))) if t in shared}
    for x, y in combinations(sorted(shared), 2):
        if (pos_a[x] < pos_a[y]) == (pos_b[x] < pos_b[y]):
            continue
        common = _directions_between(a.tokens, pos_a[x], pos_a[y]) & _directions_between(b.tokens, pos_b[x], pos_b[y])
        if common - _SYMMETRIC_DIRECTIONS:
            first, second = (x, y) if pos_a[x] < pos_a[y] else (y, x)
            return f"order: {first} {'/'.join(sorted(common))} {second} reversed"
    return None


def _names(a: Analysis, b: Analysis) -> str | None:
    # A name on each side that the other side never mentions: one thing swapped for another.
    only_a, only_b = a.names - b.token_set, b.names - a.token_set
    if only_a and only_b:
        return f"names: {', '.join(sorted(only_a))} vs {', '.join(sorted(only_b))}"
    return None


def _numbers(a: Analysis, b: Analysis) -> str | None:
    return _differ("numbers", a.numbers, b.numbers)


def _currency(a: Analysis, b: Analysis) -> str | None:
    return _both_differ("currency", a.currencies, b.currencies)


def _negation(a: Analysis, b: Analysis) -> str | None:
    return None if a.negation_parity == b.negation_parity else "negation: polarity differs"


_CHECKS: dict[str, Callable[[Analysis, Analysis], str | None]] = {
    "numbers": _numbers,
    "currency": _currency,
    "dates": _dates,
    "negation": _negation,
    "antonym": _antonym,
    "comparison": _comparison,
    "order": _order,
    "names": _names,
}


def guard_refusal(a: Analysis, b: Analysis, only: Collection[str] | None = None) -> tuple[str, str] | None:
    """``(guard, detail)`` of the first guard that refuses serving one question's answer for the other."""
    for name in GUARDS if only is None else [g for g in GUARDS if g in only]:
        detail = _CHECKS[name](a, b)
        if detail is not None:
            return name, detail
    return None


# --------------------------------------------------------------------------- features

SCALAR_FEATURES = (
    "cosine",
    "cosine_squared",
    "token_jaccard",
    "content_jaccard",
    "unmatched_min",
    "unmatched_max",
    "unmatched_count_max",
    "length_ratio",
    "log_length_diff",
    "same_question_word",
    "same_text",
    *(f"guard_{g}" for g in GUARDS),
)
"""Names of the scalar features, in order; they follow ``|u-v|`` and ``u*v`` in the feature vector."""


def scalar_features(a: Analysis, b: Analysis, cosine: float, cleared: Collection[str] = ()) -> list[float]:
    """The scalar features of a pair (symmetric in ``a`` and ``b``); ``cleared``: guards known to pass."""
    union = len(a.token_set | b.token_set) or 1
    content_union = len(a.content | b.content) or 1
    only_a, only_b = len(a.content - b.content), len(b.content - a.content)
    frac_a, frac_b = only_a / (len(a.content) or 1), only_b / (len(b.content) or 1)
    len_a, len_b = len(a.tokens) or 1, len(b.tokens) or 1
    values = [
        cosine,
        cosine * cosine,
        len(a.token_set & b.token_set) / union,
        len(a.content & b.content) / content_union,
        min(frac_a, frac_b),
        max(frac_a, frac_b),
        min(max(only_a, only_b), 10) / 10,
        min(len_a, len_b) / max(len_a, len_b),
        abs(float(np.log(len_a / len_b))),
        float(a.question_word == b.question_word),
        float(a.tokens == b.tokens),
    ]
    values.extend(0.0 if g in cleared else float(_CHECKS[g](a, b) is not None) for g in GUARDS)
    return values


def pair_features(a: Analysis, u: Floats, b: Analysis, v: Floats, cleared: Collection[str] = ()) -> Floats:
    """``[|u-v|, u*v, scalars]`` for two L2-normalised embeddings and their texts' analyses."""
    cosine = float(u @ v)
    scalars = np.asarray(scalar_features(a, b, cosine, cleared), dtype=np.float32)
    return np.concatenate([np.abs(u - v), u * v, scalars]).astype(np.float32)


# --------------------------------------------------------------------------- the model


class PairModelError(CostKitError):
    """``pair_model.json`` is missing, corrupt, or for other embeddings; the message names the file."""


def encode_array(array: npt.ArrayLike) -> dict[str, Any]:
    """A float32 array as JSON: shape, base64 of its little-endian bytes, and their sha256."""
    data = np.ascontiguousarray(array, dtype="<f4")
    raw = data.tobytes()
    return {"shape": list(data.shape), "sha256": hashlib.sha256(raw).hexdigest(), "b64": base64.b64encode(raw).decode()}


def _decode_array(value: Any, name: str, source: Path) -> Floats:
    try:
        raw = base64.b64decode(value["b64"], validate=True)
        shape = tuple(int(n) for n in value["shape"])
        digest = value["sha256"]
    except (KeyError, TypeError, ValueError) as exc:
        raise PairModelError(f"{source}: array {name!r} is malformed ({exc})") from None
    if hashlib.sha256(raw).hexdigest() != digest:
        raise PairModelError(f"{source}: array {name!r} fails its checksum (the file is corrupt)")
    if len(raw) != 4 * int(np.prod(shape)):
        raise PairModelError(f"{source}: array {name!r} holds {len(raw)} bytes, not the shape {list(shape)}")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


@dataclass(frozen=True)
class OperatingPoint:
    """Thresholds calibrated together for one wrong-hit target (5-fold out-of-fold scores on tune)."""

    max_wrong_hit_rate: float
    similarity_threshold: float
    classifier_threshold: float
    tune_hit_rate: float
    """Share of the tune split's duplicates hit at these thresholds (out-of-fold)."""


class PairModel:
    """A one-hidden-layer MLP scoring ``P(duplicate)`` from :func:`pair_features`, with input scaling."""

    def __init__(
        self,
        mean: Floats,
        scale: Floats,
        w1: Floats,
        b1: Floats,
        w2: Floats,
        b2: float,
        threshold: float,
        similarity_threshold: float,
        meta: dict[str, Any] | None = None,
        operating_points: Sequence[OperatingPoint] = (),
    ) -> None:
        # Fold the input scaling into the first layer, once, so scoring is one matmul per layer.
        self.w1 = (w1 / scale[:, None]).astype(np.float32)
        self.b1 = (b1 - (mean / scale) @ w1).astype(np.float32)
        self.w2 = w2.astype(np.float32)
        self.b2 = float(b2)
        self.threshold = threshold
        """The classifier threshold calibrated on the tune split (see ``meta``)."""
        self.similarity_threshold = similarity_threshold
        """The similarity threshold it was calibrated together with."""
        self.meta = meta or {}
        self.inputs = w1.shape[0]
        self.operating_points = sorted(operating_points, key=lambda p: p.max_wrong_hit_rate)
        """Other calibrated (similarity, classifier) threshold pairs, by wrong-hit target on the tune split."""

    def operating_point(self, max_wrong_hit_rate: float) -> OperatingPoint:
        """The calibrated point with the highest wrong-hit target at or under ``max_wrong_hit_rate``."""
        fitting = [p for p in self.operating_points if p.max_wrong_hit_rate <= max_wrong_hit_rate]
        if not fitting:
            known = ", ".join(f"{p.max_wrong_hit_rate:g}" for p in self.operating_points) or "none"
            raise ValueError(f"no calibrated operating point at or under {max_wrong_hit_rate:g} (known: {known})")
        return fitting[-1]

    def score(self, features: Floats) -> float:
        """``P(duplicate)`` of one feature vector."""
        hidden = np.maximum(features @ self.w1 + self.b1, 0.0)
        logit = float(hidden @ self.w2) + self.b2
        return float(1.0 / (1.0 + np.exp(-logit)))

    def score_many(self, features: Floats) -> Floats:
        """``P(duplicate)`` of each row."""
        hidden = np.maximum(features @ self.w1 + self.b1, 0.0)
        result: Floats = (1.0 / (1.0 + np.exp(-(hidden @ self.w2 + self.b2)))).astype(np.float32)
        return result


def load_pair_model(path: Path = DEFAULT_MODEL_PATH) -> PairModel:
    """Read ``pair_model.json``; a missing, corrupt or incompatible file raises :class:`PairModelError`."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PairModelError(f"{path}: cannot read the pair model ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise PairModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise PairModelError(f"{path}: not a pair model of format {MODEL_FORMAT!r} (found {found!r})")
    try:
        arrays = {name: _decode_array(document["arrays"][name], name, path) for name in _ARRAYS}
        threshold = float(document["threshold"])
        similarity_threshold = float(document["similarity_threshold"])
        features = list(document["scalar_features"])
        points = [
            OperatingPoint(
                float(p["max_wrong_hit_rate"]),
                float(p["similarity_threshold"]),
                float(p["classifier_threshold"]),
                float(p["tune_hit_rate"]),
            )
            for p in document.get("operating_points", [])
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise PairModelError(f"{path}: missing or malformed field {exc}") from None
    if features != list(SCALAR_FEATURES):
        raise PairModelError(f"{path}: trained on other scalar features than this version computes; retrain it")
    hidden = arrays["w1"].shape[1] if arrays["w1"].ndim == 2 else -1
    inputs = arrays["mean"].shape[0]
    if (
        arrays["w1"].shape != (inputs, hidden)
        or arrays["scale"].shape != (inputs,)
        or arrays["b1"].shape != (hidden,)
        or arrays["w2"].shape != (hidden,)
        or arrays["b2"].shape != (1,)
    ):
        raise PairModelError(f"{path}: array shapes do not fit together")
    return PairModel(
        arrays["mean"],
        arrays["scale"],
        arrays["w1"],
        arrays["b1"],
        arrays["w2"],
        float(arrays["b2"][0]),
        threshold=threshold,
        similarity_threshold=similarity_threshold,
        meta=document.get("meta") or {},
        operating_points=points,
    )


_ARRAYS = ("mean", "scale", "w1", "b1", "w2", "b2")


# --------------------------------------------------------------------------- the verifier


class VerifierSettings(Section):
    """Knobs of the verification stage (the ``costkit.cache.verify`` config section)."""

    similarity_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    """Minimum cosine similarity of a candidate (RedisVL distance = 1 - similarity); unset: the value
    the shipped classifier was calibrated with (or 0.9 without the classifier)."""
    guards: bool = True
    """Refuse hits whose numbers, currencies, dates, negation, comparison words, order or names differ."""
    disabled_guards: frozenset[str] = frozenset()
    """Guards to skip by name (``numbers``, ``currency``, ``dates``, ``negation``, ``antonym``,
    ``comparison``, ``order``, ``names``)."""
    classifier: bool = True
    """Require the pair classifier's score to reach ``classifier_threshold``."""
    classifier_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum classifier score; unset: the threshold calibrated on the tune split (wrong hits <= 1%)."""
    max_wrong_hit_rate: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Trade safety for hits by choosing another calibrated operating point (the shipped model has
    0.0075, 0.01, 0.02, 0.03 and 0.05): both thresholds come from it unless set above."""
    model_path: Path | None = None
    """Another ``pair_model.json`` (e.g. retrained for another embedding model); unset: the shipped one."""


SIMILARITY_ONLY_DEFAULT = 0.9
"""The similarity threshold when the classifier is off (RedisVL's default distance 0.1)."""


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate may be served, and why."""

    ok: bool
    score: float
    """The classifier's ``P(duplicate)`` when it ran, else the cosine similarity (0.0 after a guard refusal)."""
    reason: str
    """``accepted``, ``similarity``, ``classifier`` or the refusing guard (a bounded set: fit for metric labels)."""
    similarity: float = 0.0
    """The cosine similarity of the two embeddings."""
    detail: str = ""
    """A human-readable explanation (``numbers: 50 vs 100``)."""


class Verifier:
    """Decides whether a cached question's answer may be served for a new question."""

    def __init__(self, settings: VerifierSettings | None = None, model: PairModel | None = None) -> None:
        settings = settings or VerifierSettings()
        self.settings = settings
        self.model: PairModel | None = None
        if settings.classifier:
            self.model = model or load_pair_model(settings.model_path or DEFAULT_MODEL_PATH)
        similarity, classifier = SIMILARITY_ONLY_DEFAULT, 0.0
        if self.model is not None:
            similarity, classifier = self.model.similarity_threshold, self.model.threshold
            if settings.max_wrong_hit_rate is not None:
                point = self.model.operating_point(settings.max_wrong_hit_rate)
                similarity, classifier = point.similarity_threshold, point.classifier_threshold
        if settings.similarity_threshold is not None:
            similarity = settings.similarity_threshold
        if settings.classifier_threshold is not None:
            classifier = settings.classifier_threshold
        self.similarity_threshold = similarity
        self.classifier_threshold = classifier
        unknown = settings.disabled_guards - set(GUARDS)
        if unknown:
            raise ValueError(f"unknown guards: {', '.join(sorted(unknown))} (known: {', '.join(GUARDS)})")
        self._guards = tuple(
            (name, _CHECKS[name]) for name in GUARDS if settings.guards and name not in settings.disabled_guards
        )
        # Guards that ran and passed need not be recomputed as classifier features.
        self._cleared = frozenset(name for name, _ in self._guards)

    def verify(self, new_text: str, new_vec: Floats, cached_text: str, cached_vec: Floats) -> Verdict:
        """The verdict on serving the answer cached for ``cached_text`` to ``new_text``."""
        similarity = float(new_vec @ cached_vec)
        if similarity < self.similarity_threshold:
            return Verdict(
                False,
                similarity,
                "similarity",
                similarity,
                f"similarity {similarity:.3f} < {self.similarity_threshold}",
            )
        new, cached = analyse(new_text), analyse(cached_text)
        for name, check in self._guards:
            detail = check(new, cached)
            if detail is not None:
                return Verdict(False, 0.0, name, similarity, detail)
        if self.model is None:
            return Verdict(True, similarity, "accepted", similarity)
        score = self.model.score(pair_features(new, new_vec, cached, cached_vec, self._cleared))
        if score < self.classifier_threshold:
            return Verdict(
                False, score, "classifier", similarity, f"classifier {score:.3f} < {self.classifier_threshold:.3f}"
            )
        return Verdict(True, score, "accepted", similarity)
