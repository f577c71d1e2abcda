"""``costkit cache stats`` and ``costkit cache clear [--scope ...]``: the shared (Redis) cache, from outside;
``costkit cache export-onnx``: write the local MiniLM's ONNX file now (e.g. while building an image)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from costkit_litellm.cache.scope import CacheBackend, CacheError, CacheStats, parse_tenant
from costkit_litellm.cache.stage import make_backend
from costkit_litellm.config import load_config
from costkit_litellm.errors import ConfigError
from costkit_litellm.money import format_usd_short
from costkit_litellm.redact import mask_url


def add_cache_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cache stats`` and ``cache clear`` to the ``costkit`` command's subparsers."""
    cache = subparsers.add_parser("cache", help="semantic cache: entries, hit rate, savings; clear entries")
    sub = cache.add_subparsers(dest="cache_command", required=True)
    stats = sub.add_parser("stats", help="entries, hits, misses, skips, hit rate and dollars saved")
    stats.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    clear = sub.add_parser("clear", help="remove cached answers (all, or one tenant's)")
    clear.add_argument(
        "--scope", default=None, help="global, team:<id>, api_key:<hash>, user:<id> or end_user:<id>; default: all"
    )
    export = sub.add_parser(
        "export-onnx", help="export the local MiniLM to ONNX now (needs torch once; the proxy then runs without it)"
    )
    export.add_argument(
        "--dir", default=None, help="where to write it (default: $COSTKIT_ONNX_DIR or ~/.cache/costkit/onnx)"
    )
    export.add_argument(
        "--precision",
        choices=("fp32", "int8", "both"),
        default="fp32",
        help="fp32 (runtime onnx, the default) or int8 (runtime onnx-int8; needs the fp32 file, made too)",
    )
    for parser in (stats, clear):
        parser.add_argument(
            "--config", default="proxy_config.yaml", help="the proxy config file whose costkit: section to use"
        )
    return cache  # type: ignore[no-any-return]


def render_stats(stats: CacheStats, where: str) -> str:
    """The ``stats`` table."""
    return "\n".join(
        [
            f"cache: {where}",
            f"  entries   {stats.entries:,}",
            f"  hits      {stats.hits:,}",
            f"  misses    {stats.misses:,}",
            f"  skipped   {stats.skips:,}",
            f"  hit rate  {stats.hit_rate:.1%} (hits / (hits + misses))",
            f"  saved     {format_usd_short(stats.saved_nano)}",
        ]
    )


async def _run(args: argparse.Namespace, backend: CacheBackend, where: str) -> int:
    try:
        if args.cache_command == "stats":
            stats = await backend.stats()
            if args.format == "json":
                fields = {k: getattr(stats, k) for k in ("backend", "entries", "hits", "misses", "skips", "saved_nano")}
                print(json.dumps({**fields, "hit_rate": stats.hit_rate}))
            else:
                print(render_stats(stats, where))
            return 0
        tenant = parse_tenant(args.scope) if args.scope else None
        removed = await backend.clear(tenant)
        print(f"removed {removed:,} cache entries" + (f" of {args.scope}" if args.scope else ""))
        return 0
    finally:
        await backend.close()


def export_onnx_file(directory: str | None, precision: str = "fp32") -> int:
    """``costkit cache export-onnx``: each file's path on stdout; 1 when one cannot be made here."""
    from pathlib import Path

    from costkit_litellm.embeddings import EmbedderUnavailable
    from costkit_litellm.embeddings.local import export_onnx, local_model_path
    from costkit_litellm.embeddings.onnx_minilm import exported_path

    precisions = ("fp32", "int8") if precision == "both" else (precision,)
    try:
        model_dir = local_model_path()
        for wanted in precisions:
            target = exported_path(model_dir, Path(directory) if directory else None, wanted)
            if not target.is_file():
                export_onnx(model_dir, target, wanted)
            print(target)
    except EmbedderUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_cache(args: argparse.Namespace) -> int:
    """Run ``costkit cache stats|clear|export-onnx``; 1 on a bad config, scope or unreachable Redis."""
    if args.cache_command == "export-onnx":
        return export_onnx_file(args.dir, args.precision)
    try:
        config = load_config(args.config)
        backend = make_backend(config.cache, config.redis_url, config.key_prefix)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if backend.name == "memory":
        print(
            "error: the cache is kept inside each proxy process (no costkit.redis_url): nothing to read from here",
            file=sys.stderr,
        )
        return 1
    where = f"Redis {mask_url(config.redis_url or '')} (prefix {config.key_prefix})"
    try:
        return asyncio.run(_run(args, backend, where))
    except (CacheError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
