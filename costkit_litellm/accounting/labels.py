"""Bounded label values: what a client sends can never create a metric series of its own.

* ``model``: only a name the operator configured (a model group the router knows, a provider
  model its deployments resolve to, an alias, a wildcard group's pattern, a model the pack's own
  config names), else ``other`` (``ModelLabels``).
* ``team``: the authenticated key's team, never client metadata (``LabelLimiter``).
* free-form tag labels (``feature``...): the values the operator declared
  (``metrics.tag_values``), or the first ``max_label_values`` distinct values, of which one tenant
  (the key's team, else the key) may introduce at most ``max_label_values_per_tenant``; the rest
  are counted as ``other``, so sums stay exact.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

OTHER = "other"
NONE = "none"
IDENTITY_LABELS = frozenset({"team"})
"""Tag labels whose value comes from the authenticated key (the event's field), never from attributes."""


class ModelCatalog(Protocol):
    """The models the operator configured (the adapter's: the router's model list)."""

    def resolve(self, model: str) -> str | None:
        """The configured name ``model`` counts as (itself, or its wildcard group); None if not configured."""


class ModelLabels:
    """Maps the model of an event to a ``model`` label: a configured name, or ``other``.

    A cap (the first N names kept) would not do: a client could fill it with invented names before
    the real models are used. Here only the operator's configuration decides, so the label has at
    most (configured names + 2) values whatever clients send.
    """

    def __init__(self, configured: Collection[str] = (), catalog: ModelCatalog | None = None) -> None:
        self._configured = frozenset(configured)
        self._catalog = catalog

    def set_catalog(self, catalog: ModelCatalog | None) -> None:
        """Plug in the gateway's model list (the adapter does this)."""
        self._catalog = catalog

    def label(self, model: str) -> str:
        """The label value of ``model``: a configured name, ``unknown`` when empty, else ``other``."""
        if not model:
            return "unknown"
        if model in self._configured:
            return model
        if self._catalog is not None:
            try:
                resolved = self._catalog.resolve(model)
            except Exception:  # a metric label must never fail the accounting
                resolved = None
            if resolved is not None:
                return resolved
        return OTHER


class PricedModels:
    """A ``ModelCatalog`` outside LiteLLM: a model is configured when the price source prices it."""

    def __init__(self, priced: Callable[[str], bool]) -> None:
        self._priced = priced

    def resolve(self, model: str) -> str | None:
        """``model`` itself when it has a price, else None."""
        return model if self._priced(model) else None


class LabelLimiter:
    """Maps an event's tag attributes to label values with a bound on distinct values per label.

    Sums stay exact (an overflowing value is still counted, as ``other``) and the number of
    values stays bounded by ``max_values + 2`` per label (``none`` and ``other`` included), or by
    the declared values + 2. ``team`` is the authenticated team passed in, never an attribute.
    A tenant (the key's team, else the key) may introduce at most ``per_tenant`` of the
    ``max_values`` first-come values, so one tenant's junk cannot take every slot.
    """

    def __init__(
        self,
        names: Sequence[str],
        max_values: int,
        per_tenant: int | None = None,
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        self.names = tuple(names)
        self._max = max_values
        self._per_tenant = max_values if per_tenant is None else min(per_tenant, max_values)
        self._allowed = {name: frozenset(values) for name, values in (allowed or {}).items()}
        self._seen: dict[str, set[str]] = {name: set() for name in self.names}
        self._claims: dict[tuple[str, str], int] = {}
        """Values introduced per (label, tenant): at most ``max_values`` entries per label."""

    def values(
        self, attributes: Mapping[str, str], team: str | None = None, tenant: str | None = None
    ) -> tuple[str, ...]:
        """Label values for ``names``, in order: the value, ``none`` or ``other``.

        ``team`` is the key's team (the ``team`` label); ``tenant`` is who introduces a new value."""
        out = []
        for name in self.names:
            value = team if name in IDENTITY_LABELS else attributes.get(name)
            if not value:
                out.append(NONE)
                continue
            allowed = self._allowed.get(name)
            if allowed is not None:
                out.append(value if value in allowed else OTHER)
                continue
            seen = self._seen[name]
            if value in seen:
                out.append(value)
                continue
            claim = (name, tenant or "")
            claimed = self._claims.get(claim, 0)
            if len(seen) < self._max and claimed < self._per_tenant:
                seen.add(value)
                self._claims[claim] = claimed + 1
                out.append(value)
            else:
                out.append(OTHER)
        return tuple(out)
