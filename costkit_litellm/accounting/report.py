"""Spend reports from the ledger: by feature, user, team, model, tier or endpoint, with savings and margin.

Per group: requests, spend, average cost per billable request (successes and cache hits), p95
cost, cache and routing savings, and, with ``revenue:`` configured for the grouping attribute,
revenue and margin. Revenue per request counts billable requests; revenue per active user per
month counts distinct users over the report's period, pro-rated to 30 days.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal

from costkit_litellm.accounting.config import RevenueConfig
from costkit_litellm.accounting.events import UsageEvent
from costkit_litellm.money import format_usd_short, nano_to_decimal, usd_to_nano

GROUPINGS = ("feature", "user", "team", "model", "tier", "outcome", "end_user", "api_key", "endpoint")
BILLABLE = frozenset({"success", "cache_hit"})
MONTH_S = 30 * 86400


def group_of(event: UsageEvent, by: str) -> str:
    """The group an event falls in for a grouping (``tag:<key>`` reads any attribute)."""
    value: str | None
    if by == "user":
        value = event.user
    elif by == "team":
        value = event.team or event.attributes.get("team")
    elif by == "model":
        value = event.model
    elif by == "tier":
        value = event.tier
    elif by == "outcome":
        value = event.outcome
    elif by == "endpoint":
        value = event.endpoint
    elif by == "end_user":
        value = event.end_user
    elif by == "api_key":
        value = event.api_key_hash
    else:
        value = event.attributes.get(by[4:] if by.startswith("tag:") else by)
    return value or "(none)"


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One group's figures; money in nano-dollars."""

    group: str
    requests: int
    billable: int
    spend: int
    avg_cost: int
    p95_cost: int
    saved_cache: int
    saved_routing: int
    revenue: int | None = None
    margin: int | None = None


def _p95(values: list[int]) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def build_report(
    events: Iterable[UsageEvent],
    by: str,
    revenue: RevenueConfig | None = None,
    period_s: float | None = None,
) -> list[ReportRow]:
    """Aggregate events into rows, most spend first; ``period_s`` pro-rates per-user-month revenue."""
    grouped: dict[str, list[UsageEvent]] = defaultdict(list)
    first, last = math.inf, -math.inf
    for event in events:
        grouped[group_of(event, by)].append(event)
        first, last = min(first, event.timestamp), max(last, event.timestamp)
    period = period_s if period_s is not None else max(last - first, 1.0) if grouped else 0.0
    plans = revenue.plans if revenue and (by == revenue.attribute or by == f"tag:{revenue.attribute}") else {}
    rows = []
    for group, items in grouped.items():
        costs = [e.cost_nano for e in items if e.cost_nano is not None and e.outcome in BILLABLE]
        billable = sum(1 for e in items if e.outcome in BILLABLE)
        spend = sum(e.cost_nano or 0 for e in items)
        earned: int | None = None
        plan = plans.get(group)
        if plan is not None and plan.per_request_usd is not None:
            earned = billable * usd_to_nano(plan.per_request_usd)
        elif plan is not None and plan.per_active_user_month_usd is not None:
            users = {e.user for e in items if e.user and e.outcome in BILLABLE}
            monthly = Decimal(usd_to_nano(plan.per_active_user_month_usd))
            earned = int(monthly * len(users) * Decimal(period) / MONTH_S)
        rows.append(
            ReportRow(
                group=group,
                requests=len(items),
                billable=billable,
                spend=spend,
                avg_cost=spend // billable if billable else 0,
                p95_cost=_p95(costs),
                saved_cache=sum(e.saved_nano or 0 for e in items if e.saved_source == "cache"),
                saved_routing=sum(e.saved_nano or 0 for e in items if e.saved_source == "routing"),
                revenue=earned,
                margin=earned - spend if earned is not None else None,
            )
        )
    return sorted(rows, key=lambda r: (-r.spend, r.group))


def render(rows: Sequence[ReportRow], by: str, fmt: str) -> str:
    """The report as a table (markdown), CSV or JSON (dollars as decimal strings)."""
    dollars = ("spend", "avg_cost", "p95_cost", "saved_cache", "saved_routing", "revenue", "margin")
    if fmt == "json":
        return json.dumps(
            [
                {k: (str(nano_to_decimal(v)) if k in dollars and v is not None else v) for k, v in asdict(r).items()}
                for r in rows
            ],
            indent=2,
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([by, *[f.replace("_", " ") for f in asdict(rows[0])][1:]] if rows else [by])
        for row in rows:
            writer.writerow(
                [str(nano_to_decimal(v)) if k in dollars and v is not None else v for k, v in asdict(row).items()]
            )
        return out.getvalue()
    with_margin = any(r.revenue is not None for r in rows)
    header = [by, "requests", "spend", "avg/request", "p95", "saved (cache)", "saved (routing)"]
    if with_margin:
        header += ["revenue", "margin", "margin %"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            r.group,
            str(r.requests),
            format_usd_short(r.spend),
            format_usd_short(r.avg_cost),
            format_usd_short(r.p95_cost),
            format_usd_short(r.saved_cache),
            format_usd_short(r.saved_routing),
        ]
        if with_margin:
            if r.revenue is None or r.margin is None:
                cells += ["", "", ""]
            else:
                percent = f"{100 * r.margin / r.revenue:.1f}%" if r.revenue else ""
                cells += [format_usd_short(r.revenue), format_usd_short(r.margin), percent]
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(r.spend for r in rows)
    lines.append(f"\n{sum(r.requests for r in rows)} requests, {format_usd_short(total)} spent")
    return "\n".join(lines)


def plot_spend(events: Iterable[UsageEvent], by: str, path: str, buckets: int = 48) -> None:
    """Spend over time by group as a stacked area PNG (needs matplotlib: the ``plots`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'costkit-litellm[plots]'") from None
    items = [e for e in events if e.cost_nano]
    if not items:
        raise RuntimeError("no spend to plot in the selected period")
    start = min(e.timestamp for e in items)
    width = max((max(e.timestamp for e in items) - start) / buckets, 1.0)
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * buckets)
    for event in items:
        index = min(int((event.timestamp - start) / width), buckets - 1)
        series[group_of(event, by)][index] += (event.cost_nano or 0) / 1e9
    hours = [(start + (i + 0.5) * width - start) / 3600 for i in range(buckets)]
    names = sorted(series, key=lambda g: -sum(series[g]))
    figure, axes = plt.subplots(figsize=(9, 4.5))
    axes.stackplot(hours, [series[n] for n in names], labels=names)
    axes.set_xlabel("hours since the first event")
    axes.set_ylabel("spend (USD) per interval")
    axes.set_title(f"Spend over time by {by}")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
