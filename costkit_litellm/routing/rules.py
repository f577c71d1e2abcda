"""The rule-based classifier: the zero-setup default, deterministic and explainable.

It adds up a few cheap signals, each with a weight, and maps the sum through a logistic
function to a score in [0, 1]:

- **length**: longer prompts tend to carry harder tasks (about 4 characters per token);
- **code**: a fenced code block, or code-shaped lines (``def``, ``class``, ``{ ... }``, ``;``,
  ``import``, SQL);
- **math**: equations, LaTeX, operators between numbers, math vocabulary (solve, integral,
  probability...);
- **multi-step reasoning cues**: "step by step", "explain why", "prove", "compare", "trade-off",
  several questions or numbered steps;
- **extraction / formatting tasks** push toward economy: "extract", "summarize", "translate",
  "reformat", "convert to JSON", "classify", "fix the grammar".

The reason lists the signals that fired, e.g. ``"long (820 tokens); code block; 3 reasoning
cues"``. Patterns are compiled once; scoring a typical prompt takes a few microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from costkit_litellm.embeddings import Vectors
from costkit_litellm.routing.classifiers import Decision


@dataclass(frozen=True)
class RuleWeights:
    """The weights of the rule-based classifier (the defaults need no setup)."""

    bias: float = -1.6
    """Log-odds of a short plain prompt: a score of about 0.17."""
    per_doubling_of_tokens: float = 0.35
    """Added for each doubling of the token estimate above ``short_tokens``."""
    short_tokens: int = 64
    long_tokens: int = 600
    """From here on the reason says "long"."""
    code_block: float = 1.4
    code_lines: float = 0.9
    math: float = 0.5
    """Per math signal, up to ``max_math``."""
    max_math: int = 3
    reasoning: float = 0.55
    """Per reasoning cue, up to ``max_reasoning``."""
    max_reasoning: int = 4
    extraction: float = -0.9
    """Per extraction or formatting cue, up to ``max_extraction``."""
    max_extraction: int = 2


# str.translate + split is several times faster than a regex tokenizer on CPython.
_PUNCTUATION_TO_SPACE = str.maketrans({c: " " for c in "\t\n\r.,;:!?()[]{}<>\"'`*/\\|=+_~#@%&^$"})
_MATH_MARKS = ("=", "^", "\\frac", "\\sqrt", "\\sum", "\\int", "∫", "∑", "√", "π", "∞", "≈", "≠", "≤", "≥", "±")
_MATH_WORDS = frozenset(
    [
        "solve",
        "equation",
        "equations",
        "integral",
        "integrals",
        "derivative",
        "derivatives",
        "probability",
        "theorem",
        "prove",
        "proof",
        "matrix",
        "matrices",
        "polynomial",
        "polynomials",
        "logarithm",
        "eigenvalue",
        "eigenvalues",
        "eigenvector",
        "modulo",
        "factorial",
        "variance",
        "compute",
        "calculate",
        "calculated",
        "evaluate",
        "simplify",
        "inequality",
        "converge",
        "converges",
        "limit",
        "sqrt",
    ]
)
_REASONING_WORDS = frozenset(
    [
        "why",
        "prove",
        "derive",
        "justify",
        "compare",
        "contrast",
        "trade-off",
        "trade-offs",
        "tradeoff",
        "tradeoffs",
        "analyze",
        "analyse",
        "analyzing",
        "analysing",
        "design",
        "reasoning",
        "implications",
        "implication",
        "infer",
        "inference",
        "argue",
        "critique",
        "assess",
        "strongest",
        "weakest",
    ]
)
_REASONING_PHRASES = (
    "step by step",
    "step-by-step",
    "explain how",
    "pros and cons",
    "think through",
    "statement 1",
    "which of the following is not",
    "all of the following except",
    "best explains",
)
_EXTRACTION_WORDS = frozenset(
    [
        "extract",
        "summarize",
        "summarise",
        "summarizing",
        "summarising",
        "summary",
        "translate",
        "translation",
        "reformat",
        "rewrite",
        "paraphrase",
        "proofread",
        "classify",
        "categorize",
        "categorise",
        "tl",
        "tldr",
    ]
)
_EXTRACTION_PHRASES = (
    "as json",
    "as csv",
    "as a table",
    "as yaml",
    "into json",
    "to json",
    "fix the grammar",
    "fix grammar",
)
_CODE_STARTS = (
    "def ",
    "class ",
    "import ",
    "from ",
    "#include",
    "public ",
    "private ",
    "function ",
    "const ",
    "let ",
    "var ",
    "return ",
    "for (",
    "while (",
    "if (",
    "select ",
    "insert ",
    "create table",
    "print(",
)
_CODE_ENDS = (";", "{", "}", "):")


def _signals(prompt: str) -> tuple[bool, int, int, int, int]:
    """(code block, code lines, math signals, reasoning cues, extraction cues)."""
    lower = prompt.lower()
    code_block = "```" in prompt
    code_lines = numbered = 0
    if not code_block:
        for line in lower.splitlines():
            stripped = line.strip()
            if stripped.startswith(_CODE_STARTS) or stripped.endswith(_CODE_ENDS):
                code_lines += 1
            elif stripped[:1].isdigit() and stripped[1:3].startswith((". ", ") ")):
                numbered += 1
    words = set(lower.translate(_PUNCTUATION_TO_SPACE).split())
    maths = sum(map(prompt.count, _MATH_MARKS)) + len(words & _MATH_WORDS)
    cues = len(words & _REASONING_WORDS) + sum(map(lower.count, _REASONING_PHRASES))
    cues += (numbered >= 3) + (prompt.count("?") >= 2) + ("first" in lower and "then" in lower)
    extraction = len(words & _EXTRACTION_WORDS) + sum(map(lower.count, _EXTRACTION_PHRASES))
    return code_block, code_lines, maths, cues, extraction


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


class RuleClassifier:
    """Scores prompts by length, code, math, reasoning cues and extraction tasks."""

    name = "rules"
    needs_embedding = False

    def __init__(self, weights: RuleWeights | None = None) -> None:
        self.weights = weights or RuleWeights()

    def score(self, prompt: str, embedding: Vectors | None = None) -> Decision:
        """The decision for one prompt (the embedding is ignored)."""
        w = self.weights
        reasons: list[str] = []
        tokens = max(1, len(prompt) // 4)
        logit = w.bias + w.per_doubling_of_tokens * max(0.0, math.log2(tokens / w.short_tokens))
        if tokens >= w.long_tokens:
            reasons.append(f"long ({tokens:,} tokens)")
        code_block, code_lines, maths, cues, extraction = _signals(prompt)
        if code_block:
            logit += w.code_block
            reasons.append("code block")
        elif code_lines >= 2:
            logit += w.code_lines
            reasons.append(_plural(code_lines, "code line"))
        maths = min(maths, w.max_math)
        if maths:
            logit += w.math * maths
            reasons.append(_plural(maths, "math signal"))
        cues = min(cues, w.max_reasoning)
        if cues:
            logit += w.reasoning * cues
            reasons.append(_plural(cues, "reasoning cue"))
        extraction = min(extraction, w.max_extraction)
        if extraction:
            logit += w.extraction * extraction
            reasons.append("extraction/formatting task")
        if not reasons:
            reasons.append("short plain prompt" if tokens < w.long_tokens // 4 else "plain prompt")
        return Decision(1.0 / (1.0 + math.exp(-logit)), "; ".join(reasons))


class LengthClassifier:
    """Prompt length alone (a reference in evaluations): longer means more likely premium."""

    name = "length"
    needs_embedding = False

    def __init__(self, scale_tokens: float = 256.0) -> None:
        self._scale = scale_tokens

    def score(self, prompt: str, embedding: Vectors | None = None) -> Decision:
        """``tokens / (tokens + scale)``: monotone in length, in [0, 1)."""
        tokens = len(prompt) / 4
        return Decision(tokens / (tokens + self._scale), f"{int(tokens):,} tokens")
