"""Outcome data: for each prompt, whether the economy (weak) and the premium (strong) model got it right.

Two formats, same meaning:

- **RouteLLM's CSV** (``routellm/evals/mmlu/responses/mmlu_<subject>.csv``): a header
  ``prompt,<weak model>,<strong model>`` (e.g. ``prompt,mistralai/Mixtral-8x7B-Instruct-v0.1,
  gpt-4-1106-preview``) with ``True``/``False`` cells. The weak model is the second column, the
  strong the third, unless the columns are named ``weak_correct`` and ``strong_correct``. The
  group (the MMLU subject) is the file name without ``.csv`` and a leading ``mmlu_``. A directory
  loads every ``*.csv`` in it, sorted by name.
- **JSONL**, one object per line: ``{"prompt": str, "weak_correct": bool, "strong_correct": bool,
  "group": str?}`` (``group`` e.g. a feature or team; default: the file name), so teams can train
  on their own logged traffic.

Contamination: RouteLLM's ``contaminated_prompts.jsonl`` lists eval prompts that overlap its
training data as ``{"train_prompt", "eval_prompt", "train_idx", "eval_idx"}``; its benchmark drops
rows whose prompt equals an ``eval_prompt`` exactly. ``load_outcomes(..., exclude=path)`` does the
same (a line with a ``prompt`` key is accepted too).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from costkit_litellm.routing.classifiers import OutcomeDataError

BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.intp]

_TRUE = {"true", "1", "yes", "t"}
_FALSE = {"false", "0", "no", "f", ""}


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Per-prompt outcomes of an economy and a premium model, aligned by row."""

    prompts: tuple[str, ...]
    weak_correct: BoolArray
    strong_correct: BoolArray
    groups: tuple[str, ...]
    """The subject (MMLU) or any grouping used for leave-groups-out validation."""

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if not (len(self.weak_correct) == len(self.strong_correct) == len(self.groups) == n):
            raise ValueError("prompts, weak_correct, strong_correct and groups must have the same length")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def premium_gain(self) -> BoolArray:
        """True where only the premium model is right: the rows a router must send to premium."""
        return self.strong_correct & ~self.weak_correct

    def subset(self, rows: Sequence[int] | IndexArray) -> Outcomes:
        """The rows given by index, in that order."""
        index = np.asarray(rows, dtype=np.intp)
        return Outcomes(
            prompts=tuple(self.prompts[i] for i in index),
            weak_correct=self.weak_correct[index],
            strong_correct=self.strong_correct[index],
            groups=tuple(self.groups[i] for i in index),
        )

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, bool, bool, str]]) -> Outcomes:
        """Build from ``(prompt, weak_correct, strong_correct, group)`` tuples."""
        items = list(rows)
        return cls(
            prompts=tuple(r[0] for r in items),
            weak_correct=np.array([r[1] for r in items], dtype=np.bool_),
            strong_correct=np.array([r[2] for r in items], dtype=np.bool_),
            groups=tuple(r[3] for r in items),
        )


def _flag(value: object, path: Path, line: int, column: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE and text:
            return False
    raise OutcomeDataError(path, f"line {line}: {column} must be true or false, got {value!r}")


def _group_name(path: Path) -> str:
    return path.stem.removeprefix("mmlu_")


def _read_csv(path: Path) -> Iterator[tuple[str, bool, bool, str]]:
    csv.field_size_limit(sys.maxsize)
    group = _group_name(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise OutcomeDataError(path, "empty file (expected a header: prompt,<weak model>,<strong model>)")
            if "prompt" not in header:
                raise OutcomeDataError(path, f"no 'prompt' column in the header {header!r}")
            p = header.index("prompt")
            if "weak_correct" in header and "strong_correct" in header:
                w, s = header.index("weak_correct"), header.index("strong_correct")
            else:
                others = [i for i in range(len(header)) if i != p]
                if len(others) != 2:
                    raise OutcomeDataError(
                        path, f"expected prompt and two model columns (weak, then strong), got {header!r}"
                    )
                w, s = others
            for record in reader:
                line = reader.line_num
                if not record:
                    continue
                if len(record) != len(header):
                    raise OutcomeDataError(path, f"line {line}: {len(record)} cells, header has {len(header)}")
                yield (
                    record[p],
                    _flag(record[w], path, line, header[w]),
                    _flag(record[s], path, line, header[s]),
                    group,
                )
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OutcomeDataError(path, f"cannot read CSV: {exc}") from exc


def _read_jsonl(path: Path) -> Iterator[tuple[str, bool, bool, str]]:
    default_group = _group_name(path)
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    item = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise OutcomeDataError(path, f"line {number}: not JSON ({exc.msg})") from None
                if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                    raise OutcomeDataError(path, f"line {number}: expected an object with a string 'prompt'")
                for key in ("weak_correct", "strong_correct"):
                    if key not in item:
                        raise OutcomeDataError(path, f"line {number}: missing {key!r}")
                group = item.get("group", default_group)
                yield (
                    item["prompt"],
                    _flag(item["weak_correct"], path, number, "weak_correct"),
                    _flag(item["strong_correct"], path, number, "strong_correct"),
                    str(group),
                )
    except (OSError, UnicodeDecodeError) as exc:
        raise OutcomeDataError(path, f"cannot read JSONL: {exc}") from exc


def _files(source: Path) -> list[Path]:
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.suffix in (".csv", ".jsonl") and p.is_file())
        # A contamination list beside the data is not data.
        found = [p for p in found if p.name != "contaminated_prompts.jsonl"]
        if not found:
            raise OutcomeDataError(source, "no .csv or .jsonl outcome files in this directory")
        return found
    if not source.exists():
        raise OutcomeDataError(source, "no such file or directory")
    return [source]


def read_excluded_prompts(path: str | Path) -> frozenset[str]:
    """Prompts to leave out: ``eval_prompt`` (RouteLLM's contamination list) or ``prompt`` of each line."""
    file = Path(path)
    found: set[str] = set()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OutcomeDataError(file, f"cannot read the exclusion list: {exc}") from exc
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OutcomeDataError(file, f"line {number}: not JSON ({exc.msg})") from None
        prompt = item.get("eval_prompt", item.get("prompt")) if isinstance(item, dict) else None
        if not isinstance(prompt, str):
            raise OutcomeDataError(file, f"line {number}: expected an 'eval_prompt' or 'prompt' string")
        found.add(prompt)
    return frozenset(found)


def load_outcomes(source: str | Path, exclude: str | Path | None = None) -> Outcomes:
    """Load a CSV/JSONL file or a directory of them; drop prompts listed in ``exclude``."""
    rows: list[tuple[str, bool, bool, str]] = []
    for file in _files(Path(source)):
        rows.extend(_read_jsonl(file) if file.suffix == ".jsonl" else _read_csv(file))
    if exclude is not None:
        excluded = read_excluded_prompts(exclude)
        rows = [row for row in rows if row[0] not in excluded]
    if not rows:
        raise OutcomeDataError(source, "no outcome rows")
    return Outcomes.from_rows(rows)


def default_exclusion(source: str | Path) -> Path | None:
    """``contaminated_prompts.jsonl`` beside (or inside) a RouteLLM data directory, if there is one."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    candidate = folder / "contaminated_prompts.jsonl"
    return candidate if candidate.is_file() else None
