"""bench/pack_profile.py's reading of py-spy's raw output: what it counts as the pack's, as idle, as LiteLLM's."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

RAW = "\n".join(
    [
        # 30 samples in the pack's pre-call hook, under LiteLLM's
        "run (uvicorn/main.py:1);pre_call_hook (litellm/proxy/utils.py:10);"
        "CostKitCallback.admit (costkit_litellm/litellm_adapter/callback.py:200);encode (tiktoken/core.py:3) 30",
        # 10 more on another line of the same function: one function, lines dropped
        "run (uvicorn/main.py:1);pre_call_hook (litellm/proxy/utils.py:10);"
        "CostKitCallback.admit (costkit_litellm/litellm_adapter/callback.py:215) 10",
        # 60 samples of LiteLLM's own work
        "run (uvicorn/main.py:1);completion (litellm/main.py:5) 60",
        # an idle thread-pool worker: dropped
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81) 500",
        "not a sample line",
    ]
)


@pytest.fixture(scope="module")
def pack_profile() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        import pack_profile

        yield pack_profile
    finally:
        sys.path.remove(str(BENCH))


def test_samples_split_into_the_pack_and_the_rest_without_idle_threads(pack_profile: ModuleType) -> None:
    """Idle workers are dropped; samples with a pack frame count as the pack's, by the hook that entered it."""
    profile = pack_profile.read_raw(RAW, requests=10, ms_per_sample=10.0)
    assert profile.busy == 100
    assert profile.pack == 40
    assert profile.per_request(profile.pack) == pytest.approx(40.0)
    (entry, count), *_ = profile.pack_entries.most_common()
    assert count == 40 and "CostKitCallback.admit" in entry and "pre_call_hook" in entry
    assert profile.pack_inclusive["encode (tiktoken/core.py)"] == 30
    assert profile.pack_inclusive["CostKitCallback.admit (costkit_litellm/litellm_adapter/callback.py)"] == 40
    # outside the pack only the samples without a pack frame count, so LiteLLM's hook is not charged for the pack
    assert profile.inclusive["completion (litellm/main.py)"] == 60
    assert profile.inclusive["pre_call_hook (litellm/proxy/utils.py)"] == 0


def test_the_report_compares_litellm_outside_the_pack_per_request(pack_profile: ModuleType) -> None:
    """The report's last table gives vanilla's and the pack's time per request outside the pack, and the difference."""
    vanilla = pack_profile.read_raw(
        "run (uvicorn/main.py:1);completion (litellm/main.py:5) 50\nrun (uvicorn/main.py:1) 50", 10, 10.0
    )
    pack = pack_profile.read_raw(RAW, requests=10, ms_per_sample=10.0)
    text = pack_profile.report(vanilla, pack, top=5)
    assert "| full pack | 10 | 100.00 | 40.00 |" in text
    assert "| all of it | 100.000 | 60.000 | -40.000 |" in text
    assert "| `completion (litellm/main.py)` | 50.000 | 60.000 | +10.000 |" in text
