"""`costkit budgets show|set|unset|reset` against a real Redis, seen by a running CostKit like a proxy replica."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from costkit_litellm.budgets.admin import BudgetAdmin, UnknownBudget
from costkit_litellm.config import load_config
from costkit_litellm.context import RequestContext, SamplingParams
from costkit_litellm.errors import RequestRejected
from costkit_litellm.kit import CostKit
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Outcome
from costkit_litellm.pricing import ModelPrice
from costkit_litellm.store import RedisStore
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis
PRICE = ModelPrice(input_nano_per_mtok=10**9, output_nano_per_mtok=10**9, max_output_tokens=1000)


class Prices:
    def price(self, model: str) -> ModelPrice | None:
        return PRICE


@pytest.fixture
def config_path(tmp_path: Path, redis_server: RedisServer) -> Path:
    path = tmp_path / "proxy_config.yaml"
    section = {
        "redis_url": redis_server.url,
        "key_prefix": f"admin-{uuid.uuid4().hex[:8]}",
        "budgets": [{"name": "user-daily", "scope": "user", "limit_usd": "0.001", "window": "day"}],
        "budget_settings": {"runtime_refresh_s": 0},
    }
    path.write_text(yaml.safe_dump({"costkit": section}))
    return path


def costkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costkit_litellm.cli", *args], capture_output=True, text=True, timeout=60
    )


def request(user: str, n: int) -> RequestContext:
    return RequestContext(
        call_id=f"{user}-{n}-{uuid.uuid4().hex}", model="m", user_id=user, params=SamplingParams(max_tokens=100)
    )


async def spend(kit: CostKit, user: str, times: int, cost: int = 200_000) -> None:
    for n in range(times):
        admission = await kit.admit(request(user, n), 100)
        await kit.record(
            Outcome(
                kind="success",
                context=admission.context,
                model="m",
                deployment_model=None,
                cost=Nano(cost),
                state=admission.state,
            )
        )


class TestBudgetsCli:
    async def test_show_set_reset_round_trip(self, config_path: Path) -> None:
        """Spend shows up in `budgets show`; `set` raises a user's cap on a running kit; `reset` clears the window."""
        config = load_config(config_path)
        kit = CostKit(config, price_source=Prices(), registry=CollectorRegistry())
        await spend(kit, "123", 5)
        with pytest.raises(RequestRejected):
            await kit.admit(request("123", 99), 100)

        shown = costkit("budgets", "show", "--config", str(config_path))
        assert shown.returncode == 0, shown.stderr
        row = next(line for line in shown.stdout.splitlines() if line.startswith("user-daily"))
        assert "123" in row and "$0.001" in row and row.rstrip().endswith("config")

        assert (
            costkit(
                "budgets", "set", "user-daily", "--value", "123", "--limit-usd", "0.002", "--config", str(config_path)
            ).returncode
            == 0
        )
        await spend(kit, "123", 1)  # the running kit sees the runtime cap (refresh 0 s)
        assert "runtime" in costkit("budgets", "show", "--config", str(config_path)).stdout

        reset = costkit("budgets", "reset", "user-daily", "--value", "123", "--config", str(config_path))
        assert reset.returncode == 0 and "reset 1 window" in reset.stdout
        admin = BudgetAdmin(config, kit.store)
        assert [r for r in await admin.show() if r.value == "123"] == []  # the window's state is gone
        await spend(kit, "123", 1)
        [row_after] = [r for r in await admin.show() if r.value == "123"]
        assert (row_after.committed, row_after.reserved, row_after.limit) == (200_000, 0, 2_000_000)
        await kit.close()

    async def test_unknown_budget_is_a_clear_error(self, config_path: Path) -> None:
        """Naming a budget the config does not have fails listing the known ones."""
        result = costkit("budgets", "set", "nope", "--limit-usd", "1", "--config", str(config_path))
        assert result.returncode == 1 and "no budget named 'nope'" in result.stderr and "user-daily" in result.stderr
        config = load_config(config_path)
        store = RedisStore(config.redis_url or "", prefix=config.key_prefix)
        await store.start()
        with pytest.raises(UnknownBudget):
            await BudgetAdmin(config, store).reset("nope")
        await store.close()

    def test_embedded_default_says_where_budgets_live(self, tmp_path: Path) -> None:
        """Without a redis_url the CLI explains that the budgets live inside the proxy process."""
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump({"costkit": {"budgets": [{"name": "b", "scope": "global", "limit_usd": 1}]}}))
        result = costkit("budgets", "show", "--config", str(path))
        assert result.returncode == 1 and "set costkit.redis_url" in result.stderr
