"""Bounded label values: the first N distinct values of a label are kept, later ones become ``other``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

OTHER = "other"
NONE = "none"


class LabelLimiter:
    """Maps attribute values to label values with a cap on distinct values per label.

    Sums stay exact (an overflowing value is still counted, as ``other``) and the number of
    series stays bounded by ``max_values + 2`` per label.
    """

    def __init__(self, names: Sequence[str], max_values: int) -> None:
        self.names = tuple(names)
        self._max = max_values
        self._seen: dict[str, set[str]] = {name: set() for name in self.names}

    def values(self, attributes: Mapping[str, str]) -> tuple[str, ...]:
        """Label values for ``names``, in order: the attribute, ``none`` or ``other``."""
        out = []
        for name in self.names:
            value = attributes.get(name)
            if not value:
                out.append(NONE)
                continue
            seen = self._seen[name]
            if value in seen:
                out.append(value)
            elif len(seen) < self._max:
                seen.add(value)
                out.append(value)
            else:
                out.append(OTHER)
        return tuple(out)
