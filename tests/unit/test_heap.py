"""performance.gc_freeze_after_s: the process's heap leaves the collector once, when asked, and only then."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from costkit_litellm import CostKit, heap
from costkit_litellm.config import parse_config
from costkit_litellm.errors import ConfigError


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Whatever a test freezes goes back to the collector afterwards (the rest of the session needs it)."""
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The module's once-per-process flag reset, and freezes recorded instead of done."""
    done: list[float] = []
    monkeypatch.setattr(heap, "_scheduled", False)
    monkeypatch.setattr(heap, "freeze_now", lambda: done.append(asyncio.get_running_loop().time()) or 0)
    return done


def test_a_freeze_moves_every_live_object_out_of_the_collected_generations(unfrozen: None) -> None:
    """After freeze_now the objects alive then are in no generation a collection walks; newer ones still are."""
    kept = [{"a": [i]} for i in range(10)]
    before = len(gc.get_objects(generation=2))
    frozen = heap.freeze_now()
    assert frozen > 0 and gc.get_freeze_count() > 0  # frozen objects may still be freed by their refcount
    assert len(gc.get_objects(generation=2)) < before // 100
    walked = {id(o) for o in gc.get_objects()}
    assert not any(id(k) in walked for k in kept)
    newer = {"b": [1]}
    assert id(newer) in {id(o) for o in gc.get_objects()}


async def test_it_is_scheduled_once_per_process_after_the_delay(fresh_process: list[float]) -> None:
    """The first call schedules one freeze after_s later on the running loop; later calls schedule none."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert heap.schedule_freeze(0.2) is True
    assert heap.schedule_freeze(0.0) is False
    await asyncio.sleep(0.05)
    assert fresh_process == []
    await asyncio.sleep(0.4)
    assert len(fresh_process) == 1 and fresh_process[0] - start >= 0.2


async def test_unset_never_freezes(fresh_process: list[float]) -> None:
    """Without the setting nothing is scheduled, and a kit that starts freezes nothing."""
    assert heap.schedule_freeze(None) is False
    kit = CostKit(parse_config({}))
    await kit.start()
    await asyncio.sleep(0.05)
    await kit.close()
    assert fresh_process == [] and heap._scheduled is False


async def test_a_kit_with_the_setting_schedules_the_freeze_when_it_starts(fresh_process: list[float]) -> None:
    """gc_freeze_after_s: 0 freezes once, right after the kit starts (the proxy's loop runs it)."""
    kit = CostKit(parse_config({"performance": {"gc_freeze_after_s": 0}}))
    await kit.start()
    await asyncio.sleep(0.05)
    await kit.close()
    assert len(fresh_process) == 1


@pytest.mark.parametrize("value", [-1, "soon", 100_000])
def test_a_bad_delay_fails_at_start_up_naming_the_key(value: object) -> None:
    """A negative, non-numeric or day-plus delay is a config error naming costkit.performance.gc_freeze_after_s."""
    with pytest.raises(ConfigError, match=r"costkit\.performance\.gc_freeze_after_s"):
        parse_config({"performance": {"gc_freeze_after_s": value}})
