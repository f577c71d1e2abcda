"""``make demo``: a real LiteLLM proxy with the pack, offline, and a short scripted workload.

Starts the local fake OpenAI-compatible provider and ``litellm --config proxy_config.yaml`` (the
embedded default store: no Redis, no API keys), drives requests from several users and features
through it, and prints what the pack saw: requests and cost by feature and by model, read back
from the proxy's ``/metrics``. The gateway keeps running afterwards; ``make demo-stop`` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from costkit_litellm.testing.ports import free_port, port_is_free

STATE = Path(".costkit") / "demo"
WORKLOAD = [
    # (user, feature, model, prompt)
    ("alice", "email_writer", "gpt-4o-mini", "Write a short, friendly follow-up email after a sales call."),
    ("bob", "email_writer", "gpt-4o-mini", "Draft a polite reminder that the invoice is overdue."),
    (
        "carol",
        "summarizer",
        "gpt-4o-mini",
        "Summarize: the quarterly report shows revenue up 12% and costs flat.",
    ),
    ("dave", "summarizer", "gpt-4o", "Summarize the key risks in a 40-page vendor contract in five bullets."),
    ("alice", "chat", "gpt-4o", "Explain the difference between a budget and a forecast, with an example."),
    ("bob", "chat", "gpt-4o-mini", "What is a token in an LLM API?"),
]
ROUNDS = 4


DEFAULT_PORT = 4000


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def stop() -> None:
    """Stop a running demo (proxy and fake provider)."""
    stopped = 0
    for name in ("proxy", "provider"):
        pid_file = STATE / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not _pid_alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
            stopped += 1
        pid_file.unlink()
    print("demo stopped" if stopped else "no demo running")


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(STATE / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child, which outlives us
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    (STATE / f"{name}.pid").write_text(str(process.pid))
    return process


def _wait(url: str, process: subprocess.Popen[bytes], name: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (STATE / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"{name} exited during start-up:\n{tail}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{name} did not answer at {url} within {timeout_s:.0f}s; see {STATE / (name + '.log')}")


async def _drive(base_url: str, key: str) -> list[tuple[str, str, Decimal, Decimal]]:
    """Send the workload; return (feature, model, cost, litellm cost) per request."""
    results = []
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        for round_no in range(ROUNDS):
            batch = [
                client.post(
                    "/v1/chat/completions",
                    json={
                        "model": model,
                        "messages": [{"role": "user", "content": f"{prompt} (take {round_no + 1})"}],
                        "max_tokens": 200,
                        "metadata": {"user_id": user, "feature": feature},
                    },
                )
                for user, feature, model, prompt in WORKLOAD
            ]
            for (_, feature, model, _), response in zip(WORKLOAD, await asyncio.gather(*batch), strict=True):
                response.raise_for_status()
                results.append(
                    (
                        feature,
                        model,
                        Decimal(response.headers["x-costkit-cost-usd"]),
                        Decimal(response.headers["x-litellm-response-cost"]),
                    )
                )
    return results


async def _routing_and_cache(base_url: str, key: str) -> list[tuple[str, dict[str, str]]]:
    """The virtual model 'auto', and a question asked twice in other words (temperature 0)."""
    asks: list[tuple[str, dict[str, Any]]] = [
        ("auto: a simple question", {"model": "auto", "content": "What is the capital of France?"}),
        ("auto: a hard question", {"model": "auto", "content": "Prove step by step that sqrt(2) is irrational."}),
        ("cache: first ask", {"model": "gpt-4o-mini", "temperature": 0, "content": "How do I reset my password?"}),
        (
            "cache: same, reworded",
            {"model": "gpt-4o-mini", "temperature": 0, "content": "How can I reset my password?"},
        ),
    ]
    shown = []
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        for label, ask in asks:
            body = {k: v for k, v in ask.items() if k != "content"}
            body["messages"] = [{"role": "user", "content": ask["content"]}]
            response = await client.post("/v1/chat/completions", json={**body, "max_tokens": 100})
            response.raise_for_status()
            headers = {k: v for k, v in response.headers.items() if k in _SHOWN}
            shown.append((label, headers))
    return shown


_SHOWN = ("x-costkit-tier", "x-costkit-cache", "x-costkit-cache-similarity", "x-costkit-cost-usd")


async def _runaway_agent(base_url: str, key: str) -> list[tuple[int, str]]:
    """An agent that keeps calling the same search tool: the breaker stops it at the third call."""
    headers = {"Authorization": f"Bearer {key}", "x-costkit-session": "demo-agent-" + secrets.token_hex(4)}
    messages: list[dict[str, object]] = [{"role": "user", "content": "When was Python 3.0 released?"}]
    seen = []
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        for step in range(4):
            response = await client.post(
                "/v1/chat/completions", json={"model": "gpt-4o-mini", "max_tokens": 100, "messages": messages}
            )
            detail = response.json()["error"]["type"] if response.status_code != 200 else "answered"
            seen.append((response.status_code, detail))
            if response.status_code != 200:
                break
            call = {
                "id": f"call_{step}",
                "type": "function",
                "function": {"name": "search", "arguments": '{"q": "python"}'},
            }
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            messages.append({"role": "tool", "tool_call_id": f"call_{step}", "content": "Pythons are large snakes."})
    return seen


_SAMPLE = re.compile(r"^costkit_spend_usd_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)


def _scrape(base_url: str, key: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{base_url}/metrics/", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    out: dict[tuple[str, str], float] = {}
    for match in _SAMPLE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        out[(labels.get("feature", ""), labels.get("model", ""))] = float(match.group("value"))
    return out


def _table(title: str, rows: dict[str, tuple[int, Decimal]]) -> None:
    print(f"\n{title}")
    print(f"  {'':<16}{'requests':>10}{'cost (USD)':>16}")
    for name, (count, cost) in sorted(rows.items()):
        print(f"  {name:<16}{count:>10}{cost:>16.9f}")


def start(config: str, port: int | None) -> None:
    """Start the gateway, drive the workload, print the report."""
    STATE.mkdir(parents=True, exist_ok=True)
    stop_quietly()
    provider_port = free_port()
    proxy_port = port or (DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port())
    key = "sk-demo-" + secrets.token_hex(16)
    (STATE / "master_key").write_text(key)
    env = dict(os.environ)
    env.pop("REDIS_URL", None)  # the embedded default: state in the proxy process
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_MASTER_KEY=key,
        OPENAI_API_BASE=f"http://127.0.0.1:{provider_port}/v1",
        OPENAI_API_KEY="not-a-real-key (the demo talks to a local fake provider)",
    )
    bin_dir = Path(sys.executable).parent
    print(f"starting the fake provider on :{provider_port} and the proxy on :{proxy_port} ...")
    provider = _spawn(
        "provider",
        [
            sys.executable,
            "-m",
            "costkit_litellm.testing.fake_provider",
            "--port",
            str(provider_port),
            "--latency-ms",
            "40",
        ],
        env,
    )
    _wait(f"http://127.0.0.1:{provider_port}/v1/models", provider, "provider", 30)
    litellm = str(bin_dir / "litellm") if (bin_dir / "litellm").exists() else "litellm"
    proxy = _spawn("proxy", [litellm, "--config", config, "--port", str(proxy_port)], env)
    base_url = f"http://127.0.0.1:{proxy_port}"
    _wait(f"{base_url}/health/liveliness", proxy, "proxy")

    results = asyncio.run(_drive(base_url, key))
    by_feature: dict[str, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
    by_model: dict[str, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
    for feature, model, cost, _ in results:
        n, c = by_feature[feature]
        by_feature[feature] = (n + 1, c + cost)
        n, c = by_model[model]
        by_model[model] = (n + 1, c + cost)
    total = sum((cost for *_, cost, _ in results), Decimal(0))
    litellm_total = sum((lc for *_, lc in results), Decimal(0))
    print(f"\n{len(results)} requests from {len({w[0] for w in WORKLOAD})} users, total ${total:.9f}")
    _table("cost by feature (x-costkit-cost-usd headers)", by_feature)
    _table("cost by model", by_model)
    # Success callbacks run just after each response is sent: wait until all are counted.
    deadline = time.monotonic() + 10
    while True:
        scraped = _scrape(base_url, key)
        metric_total = sum(scraped.values())
        if abs(Decimal(repr(metric_total)) - total) < Decimal("1e-9") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print("\ncostkit_spend_usd_total on /metrics (by feature, model):")
    for (feature, model), value in sorted(scraped.items()):
        print(f"  feature={feature:<14} model={model:<12} {value:.9f}")
    print(
        f"\ncheck: metrics total ${metric_total:.9f}, headers total ${total:.9f}, "
        f"LiteLLM's own x-litellm-response-cost total ${litellm_total:.9f}"
    )
    print("\nrouting and the semantic cache:")
    for label, headers in asyncio.run(_routing_and_cache(base_url, key)):
        print(f"  {label:<24} " + "  ".join(f"{k.removeprefix('x-costkit-')}={v}" for k, v in headers.items()))
    print("\na runaway agent searching for 'python' again and again (breaker: loop_threshold 3):")
    for step, (status, detail) in enumerate(asyncio.run(_runaway_agent(base_url, key)), start=1):
        print(f"  step {step}: HTTP {status} {detail}")
    print(
        "\nThe gateway is still running. Call it:\n"
        f"  curl {base_url}/v1/chat/completions -H 'Authorization: Bearer {key}' \\\n"
        "    -H 'Content-Type: application/json' -D - \\\n"
        "    -d '"
        + json.dumps(
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hi"}],
                "metadata": {"feature": "email_writer", "user_id": "123"},
            }
        )
        + "'\n"
        f"  curl {base_url}/metrics/ -H 'Authorization: Bearer {key}' | grep costkit_\n"
        f"Logs: {STATE}/proxy.log   Stop it: make demo-stop"
    )


def stop_quietly() -> None:
    """Stop an earlier demo if one is still running."""
    if any((STATE / f"{n}.pid").exists() for n in ("proxy", "provider")):
        stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m costkit_litellm.demo start|stop``."""
    parser = argparse.ArgumentParser(prog="python -m costkit_litellm.demo")
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--config", default="proxy_config.yaml")
    parser.add_argument("--port", type=int, default=None, help="proxy port (default: a free one)")
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop()
    else:
        start(args.config, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
