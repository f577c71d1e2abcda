"""Reports: totals equal the ledger, savings and p95 per group, and margin on a hand-computed example."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from costkit_litellm.accounting.config import RevenueConfig, RevenuePlan
from costkit_litellm.accounting.events import UsageEvent
from costkit_litellm.accounting.report import build_report, render
from costkit_litellm.cli import main

DAY = 86400.0


def event(
    feature: str, cost: int, user: str = "u1", outcome: str = "success", t: float = 0.0, **extra: object
) -> UsageEvent:
    return UsageEvent(
        call_id=f"{feature}-{cost}-{user}-{t}",
        outcome=outcome,
        timestamp=t,
        request_model="m",
        model="m",
        cost_nano=cost,
        user=user,
        attributes={"feature": feature},
        **extra,  # type: ignore[arg-type]
    )


class TestReport:
    def test_totals_equal_the_events(self) -> None:
        """Per-group spend and requests add up to the ledger's totals."""
        events = [event("a", 100), event("a", 300), event("b", 50), event("b", 0, outcome="failure")]
        rows = build_report(events, "feature")
        assert sum(r.spend for r in rows) == 450 and sum(r.requests for r in rows) == 4
        a = next(r for r in rows if r.group == "a")
        assert (a.requests, a.billable, a.spend, a.avg_cost, a.p95_cost) == (2, 2, 400, 200, 300)

    def test_savings_by_source(self) -> None:
        """Cache and routing savings are summed separately."""
        rows = build_report(
            [
                event("a", 0, outcome="cache_hit", saved_nano=1000, saved_source="cache"),
                event("a", 10, saved_nano=40, saved_source="routing"),
            ],
            "feature",
        )
        assert (rows[0].saved_cache, rows[0].saved_routing) == (1000, 40)

    def test_margin_on_a_hand_computed_example(self) -> None:
        """Email Writer: 3 billable requests at $0.01 = $0.03 revenue, $0.012 spend -> $0.018 margin (60%)."""
        events = [
            event("email_writer", 5_000_000, t=0),
            event("email_writer", 4_000_000, t=10),
            event("email_writer", 3_000_000, t=20),
            event("email_writer", 0, outcome="failure", t=30),
            event("summarizer", 1_000_000, user="u1", t=0),
            event("summarizer", 1_000_000, user="u2", t=0),
        ]
        revenue = RevenueConfig(
            plans={
                "email_writer": RevenuePlan(per_request_usd=Decimal("0.01")),
                "summarizer": RevenuePlan(per_active_user_month_usd=Decimal("9")),
            }
        )
        rows = {r.group: r for r in build_report(events, "feature", revenue, period_s=3 * DAY)}
        writer = rows["email_writer"]
        assert (writer.revenue, writer.spend, writer.margin) == (30_000_000, 12_000_000, 18_000_000)
        # 2 active users x $9 per 30 days x 3 days = $1.80
        assert rows["summarizer"].revenue == 1_800_000_000
        table = render(list(rows.values()), "feature", "table")
        assert "| email_writer | 4 | $0.012 | $0.004 | $0.005 | $0 | $0 | $0.03 | $0.018 | 60.0% |" in table

    def test_revenue_only_for_its_attribute(self) -> None:
        """Revenue plans keyed by feature do not appear in a report by user."""
        revenue = RevenueConfig(plans={"a": RevenuePlan(per_request_usd=Decimal("1"))})
        assert build_report([event("a", 1)], "user", revenue)[0].revenue is None

    @pytest.mark.parametrize("fmt", ["csv", "json"])
    def test_machine_formats_keep_exact_dollars(self, fmt: str) -> None:
        """CSV and JSON carry exact decimal dollars."""
        text = render(build_report([event("a", 13_500)], "feature"), "feature", fmt)
        assert "0.0000135" in text


class TestReportCli:
    def test_report_from_a_ledger_export(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`costkit report --ledger FILE` reads a JSONL export and prints the margin table."""
        config = tmp_path / "p.yaml"
        config.write_text(yaml.safe_dump({"costkit": {"revenue": {"plans": {"a": {"per_request_usd": 0.001}}}}}))
        export = tmp_path / "ledger.jsonl"
        rows = [
            {"id": f"c{i}:success", "timestamp_ms": 1000 * i, **event("a", 400_000, t=i).to_fields()} for i in range(5)
        ]
        export.write_text("\n".join(json.dumps(r) for r in rows))
        assert main(["report", "--config", str(config), "--ledger", str(export), "--by", "feature"]) == 0
        out = capsys.readouterr().out
        assert "| a | 5 | $0.002 |" in out and "$0.005 | $0.003 | 60.0% |" in out
