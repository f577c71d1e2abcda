"""The ``costkit`` command: check a config, print the config reference, read the ledger.

Later capabilities add subcommands here (budgets, cache, router, report).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from costkit_litellm.cache.cli import add_cache_parser, run_cache
from costkit_litellm.config import CostKitConfig, load_config
from costkit_litellm.errors import ConfigError
from costkit_litellm.redact import mask_url
from costkit_litellm.routing.cli import add_router_parser, run_router
from costkit_litellm.store import StoreError

CALLBACK_PATH = "costkit_litellm.litellm_adapter.proxy.costkit_callback"


def _callbacks(document: Any) -> list[str]:
    settings = document.get("litellm_settings") if isinstance(document, dict) else None
    value = settings.get("callbacks") if isinstance(settings, dict) else None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def print_problems(exc: ConfigError, path: str) -> None:
    """One ``costkit:`` line per problem on stderr (the lines the proxy prints at start-up)."""
    for problem in exc.problems:
        print(f"costkit: {exc.source or path}: {problem}", file=sys.stderr)


def check_config(path: str, connect: bool = False) -> int:
    """Validate a proxy config's ``costkit:`` section (and with ``connect``, what it connects to);
    print what it sets up."""
    try:
        config = load_config(path)
        if connect:
            from costkit_litellm.preflight import check_connections

            check_connections(config, path, load_models=True)
    except ConfigError as exc:
        print_problems(exc, path)
        return 1
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    callbacks = _callbacks(document)
    print(f"{path}: costkit configuration is valid" + (" and its Redis, cache and models answer" if connect else ""))
    print(f"  state: {'Redis ' + mask_url(config.redis_url) if config.redis_url else 'in process (embedded default)'}")
    print(f"  metrics labels: {', '.join(('model', *config.metrics.tag_labels))}")
    for budget in config.budgets:
        only = f" ({', '.join(budget.values)})" if budget.values else ""
        print(
            f"  budget {budget.name}: ${budget.limit_usd} per {budget.scope}{only} per {budget.window}, "
            f"{budget.action}" + (f" to {budget.downgrade_to}" if budget.downgrade_to else "")
        )
    if config.breaker.enabled:
        b = config.breaker
        print(f"  breaker: {b.max_steps} steps, ${b.max_spend_usd} per session, loops at {b.loop_threshold} repeats")
    if CALLBACK_PATH not in callbacks:
        print(f"warning: litellm_settings.callbacks does not name {CALLBACK_PATH}; the proxy will not load the pack")
        return 0 if "costkit" not in document else 2
    return 0


async def _read_ledger(config: CostKitConfig, since_s: float | None, limit: int | None) -> list[dict[str, Any]]:
    from costkit_litellm.store.factory import store_from_url

    if not config.redis_url:
        raise StoreError("the ledger of the embedded default lives inside the proxy process; set costkit.redis_url")
    store = store_from_url(config.redis_url, prefix=config.key_prefix, cluster=config.redis_cluster)
    await store.start()
    try:
        since_ms = int((time.time() - since_s) * 1000) if since_s else None
        entries = await store.ledger_read(since_ms=since_ms, limit=limit)
    finally:
        await store.close()
    return [{"id": e.entry_id, "timestamp_ms": e.timestamp_ms, **e.fields} for e in entries]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d`` -> seconds."""
    try:
        return float(text[:-1]) * _UNITS[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 15m, 24h or 7d") from None


def ledger(path: str, since: float | None, limit: int | None, fmt: str) -> int:
    """Print ledger entries from the configured Redis as JSON lines or CSV."""
    try:
        rows = asyncio.run(_read_ledger(load_config(path), since, limit))
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if fmt == "jsonl":
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    else:
        columns = sorted({k for row in rows for k in row})
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return 0


async def _budgets(args: argparse.Namespace) -> int:
    from costkit_litellm.budgets.admin import BudgetAdmin
    from costkit_litellm.money import format_usd_short
    from costkit_litellm.store.factory import store_from_url

    config = load_config(args.config)
    if not config.redis_url:
        raise StoreError(
            "budgets of the embedded default live inside the proxy process; set costkit.redis_url "
            "(e.g. REDIS_URL) to show, set or reset them from here"
        )
    store = store_from_url(config.redis_url, prefix=config.key_prefix, cluster=config.redis_cluster)
    await store.start()
    try:
        admin = BudgetAdmin(config, store)
        if args.action == "show":
            rows = await admin.show(args.budget)
            if args.format == "json":
                for row in rows:
                    print(json.dumps(_row_json(row), sort_keys=True))
                return 0
            print(f"{'budget':<20}{'value':<20}{'window':<8}{'slot':<12}{'spent':>12}{'held':>12}{'limit':>12}  source")
            for row in rows:
                print(
                    f"{row.budget:<20}{row.value:<20}{row.window:<8}{row.slot:<12}"
                    f"{format_usd_short(row.committed):>12}{format_usd_short(row.reserved):>12}"
                    f"{format_usd_short(row.limit):>12}  {row.limit_source}"
                )
            if not rows:
                print("(no spend recorded in any live window)")
        elif args.action == "set":
            nano = await admin.set_limit(args.budget, args.limit_usd, args.value)
            who = f"value {args.value!r}" if args.value else "every value"
            print(
                f"budget {args.budget!r}: limit {format_usd_short(nano)} for {who} (runtime setting, wins over config)"
            )
        elif args.action == "unset":
            removed = await admin.unset_limit(args.budget, args.value)
            print("runtime limit removed; the config applies again" if removed else "no runtime limit was set")
        else:
            keys = await admin.reset(args.budget, args.value)
            print(f"reset {len(keys)} window(s) of budget {args.budget!r}")
    finally:
        await store.close()
    return 0


def _row_json(row: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(row)


def budgets(args: argparse.Namespace) -> int:
    """``costkit budgets show|set|unset|reset``: runtime budgets in the configured Redis."""
    from costkit_litellm.errors import CostKitError

    try:
        return asyncio.run(_budgets(args))
    except (ConfigError, CostKitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _events_from_rows(rows: list[dict[str, Any]]) -> list[Any]:
    from costkit_litellm.accounting.events import UsageEvent

    events = []
    for row in rows:
        fields = {k: str(v) for k, v in row.items() if k not in ("id", "timestamp_ms")}
        call_id = str(row.get("id", "")).rsplit(":", 1)[0]
        event = UsageEvent.from_fields(call_id, fields)
        if not event.timestamp and row.get("timestamp_ms"):
            event = UsageEvent.from_fields(
                call_id, {**fields, "costkit.timestamp": str(int(row["timestamp_ms"]) / 1000)}
            )
        events.append(event)
    return events


def report(args: argparse.Namespace) -> int:
    """``costkit report``: spend, savings and margin by a grouping, from the ledger."""
    from costkit_litellm.accounting.report import build_report, plot_spend, render

    try:
        config = load_config(args.config)
        if args.ledger:
            rows = [json.loads(line) for line in Path(args.ledger).read_text(encoding="utf-8").splitlines() if line]
            if args.since:
                cutoff = (time.time() - args.since) * 1000
                rows = [r for r in rows if int(r.get("timestamp_ms", 0)) >= cutoff]
        else:
            rows = asyncio.run(_read_ledger(config, args.since, None))
    except (ConfigError, StoreError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    events = _events_from_rows(rows)
    result = build_report(events, args.by, config.revenue, period_s=args.since)
    print(render(result, args.by, args.format))
    if args.plot:
        try:
            plot_spend(events, args.by, args.plot)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


CONFIG_HELP = "the proxy config file whose costkit: section to use"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every option with a default, unless its help already says."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or unset or action.required:
            return text
        return super()._get_help_string(action) or text


def iter_parsers(
    parser: argparse.ArgumentParser, name: str = "costkit"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command, with its full name (``costkit budgets set``)."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from iter_parsers(sub, f"{name} {sub_name}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``costkit`` command."""
    parser = argparse.ArgumentParser(prog="costkit", description="Cost management for the LiteLLM proxy and Router.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate the costkit: section of a proxy config")
    check.add_argument("config", help="path to the proxy config file (e.g. proxy_config.yaml)")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also connect: Redis answers, the cache's Redis has the search module, the embedder and the "
        "router model load (default: off, the file alone is checked)",
    )
    sub.add_parser("config-reference", help="print every costkit: key as a markdown table")
    led = sub.add_parser("ledger", help="print the usage ledger kept in Redis")
    led.add_argument("--config", default="proxy_config.yaml", help=CONFIG_HELP)
    led.add_argument("--since", type=parse_duration, default=None, help="e.g. 15m, 24h, 7d (default: all)")
    led.add_argument("--limit", type=int, default=None, help="most entries to print (default: no limit)")
    led.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="output format")
    rep = sub.add_parser("report", help="spend, savings and margin by feature, user, team, model, tier or endpoint")
    rep.add_argument("--config", default="proxy_config.yaml", help=CONFIG_HELP)
    rep.add_argument("--by", default="feature", help="feature, user, team, model, tier, outcome, endpoint, tag:<key>")
    rep.add_argument("--since", type=parse_duration, default=None, help="e.g. 24h, 7d (default: all)")
    rep.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    rep.add_argument(
        "--ledger",
        default=None,
        help="read a JSONL export (costkit ledger --format jsonl) instead of Redis (default: Redis)",
    )
    rep.add_argument("--plot", default=None, help="write spend over time by group to this PNG (default: no plot)")
    add_router_parser(sub)
    add_cache_parser(sub)
    bud = sub.add_parser("budgets", help="show, set, unset or reset budgets at runtime (needs costkit.redis_url)")
    bud_sub = bud.add_subparsers(dest="action", required=True)
    show = bud_sub.add_parser("show", help="spend, holds and limits of every live budget window")
    show.add_argument("budget", nargs="?", default=None, help="one budget's name (default: every budget)")
    show.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    setp = bud_sub.add_parser("set", help="set a runtime limit (wins over the config on every replica)")
    setp.add_argument("budget", help="the budget's name in the config")
    setp.add_argument("--limit-usd", required=True, help="the new cap in dollars, e.g. 5 or 0.50")
    setp.add_argument("--value", default=None, help="one scope value (a user, a feature); default: all")
    unset = bud_sub.add_parser("unset", help="remove a runtime limit")
    unset.add_argument("budget", help="the budget's name in the config")
    unset.add_argument(
        "--value", default=None, help="the scope value whose limit to remove (default: the all-values one)"
    )
    reset = bud_sub.add_parser("reset", help="forget the spend of the current window")
    reset.add_argument("budget", help="the budget's name in the config")
    reset.add_argument("--value", default=None, help="one scope value (default: every value)")
    for p in (show, setp, unset, reset):
        p.add_argument("--config", default="proxy_config.yaml", help=CONFIG_HELP)
    for _, each in iter_parsers(parser):
        each.formatter_class = HelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``costkit`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config, connect=args.connect)
    if args.command == "config-reference":
        from costkit_litellm.reference import config_reference

        print(config_reference())
        return 0
    if args.command == "ledger":
        return ledger(args.config, args.since, args.limit, args.format)
    if args.command == "budgets":
        return budgets(args)
    if args.command == "report":
        return report(args)
    if args.command == "router":
        return run_router(args)
    if args.command == "cache":
        return run_cache(args)
    return 2  # unreachable: argparse requires a command


if __name__ == "__main__":
    raise SystemExit(main())
