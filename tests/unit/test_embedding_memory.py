"""The Universal Memory policy (pure) and the manager that applies it, with fake models."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_modeldeploy.engines.embedding_server.memory import (
    LOADING,
    OFFLOADED,
    ON_DEVICE,
    ON_DISK,
    MemoryManager,
    ModelMemoryState,
    choose_victims,
)

MB = 1 << 20


def st(
    name: str, state: str = ON_DEVICE, size: int = 100 * MB, used: float = 0.0, busy: int = 0, kept: int = 0
):
    return ModelMemoryState(name, state, size, used, busy, kept)


def test_no_budget_never_evicts() -> None:
    models = [st("a"), st("b", ON_DISK)]
    assert choose_victims("b", models, None) == []


def test_fits_without_eviction() -> None:
    models = [st("a"), st("b", ON_DISK)]
    assert choose_victims("b", models, 250 * MB) == []


def test_evicts_least_recently_used_first() -> None:
    models = [st("a", used=5.0), st("b", used=1.0), st("c", used=3.0), st("d", ON_DISK)]
    assert choose_victims("d", models, 300 * MB) == ["b"]
    assert choose_victims("d", models, 200 * MB) == ["b", "c"]


def test_busy_models_are_never_victims() -> None:
    models = [st("a", used=1.0, busy=2), st("b", used=9.0), st("c", ON_DISK)]
    assert choose_victims("c", models, 200 * MB) == ["b"]


def test_none_when_only_busy_models_could_make_room() -> None:
    models = [st("a", busy=1), st("b", OFFLOADED)]
    assert choose_victims("b", models, 150 * MB) is None


def test_offloaded_and_on_disk_models_are_not_charged() -> None:
    models = [st("a", OFFLOADED), st("b", ON_DISK), st("c", OFFLOADED)]
    assert choose_victims("c", models, 100 * MB) == []


def test_kept_bytes_stay_charged_after_offload() -> None:
    # a leaves 30 MB of small tensors on the device when offloaded: c (100 MB) then needs 130 MB.
    models = [st("a", OFFLOADED, kept=30 * MB), st("c", OFFLOADED)]
    assert choose_victims("c", models, 120 * MB) is None
    models = [st("a", used=1.0, kept=30 * MB), st("c", OFFLOADED)]
    assert choose_victims("c", models, 130 * MB) == ["a"]
    assert choose_victims("c", models, 129 * MB) is None


def test_model_larger_than_budget_gets_the_device_alone() -> None:
    models = [
        st("a", size=10 * MB, used=2.0),
        st("b", size=10 * MB, used=1.0),
        st("big", ON_DISK, size=500 * MB),
    ]
    assert choose_victims("big", models, 100 * MB) == ["b", "a"]
    models = [st("a", size=10 * MB, busy=1), st("big", ON_DISK, size=500 * MB)]
    assert choose_victims("big", models, 100 * MB) is None


def test_loading_model_is_charged_and_not_a_victim() -> None:
    models = [st("a", LOADING), st("b", ON_DISK)]
    assert choose_victims("b", models, 150 * MB) is None


def test_ties_break_by_name() -> None:
    models = [st("b", used=1.0), st("a", used=1.0), st("c", ON_DISK)]
    assert choose_victims("c", models, 200 * MB) == ["a"]


def test_unknown_model_is_an_error() -> None:
    with pytest.raises(KeyError):
        choose_victims("nope", [st("a")], 100)


class FakeModel:
    """A model handle that records what the manager asked of it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: list[str] = []

    def load(self) -> int:
        self.calls.append("load")
        return self.size

    def to_device(self) -> None:
        self.calls.append("to_device")

    def offload(self) -> int:
        self.calls.append("offload")
        return 0

    def unload(self) -> None:
        self.calls.append("unload")


class Clock:
    """A clock that ticks one second per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.parametrize(
    ("mode", "evicted_state", "evict_call"),
    [("cpu_offload", OFFLOADED, "offload"), ("disk_swap", ON_DISK, "unload")],
)
async def test_manager_swaps_the_idle_model(mode: str, evicted_state: str, evict_call: str) -> None:
    manager = MemoryManager(150, mode, clock=Clock())  # type: ignore[arg-type]
    a, b = FakeModel(100), FakeModel(100)
    manager.add("a", a)
    manager.add("b", b)
    await manager.ensure_on_device("a")
    await manager.ensure_on_device("b")
    assert manager.state("a").state == evicted_state
    assert manager.state("b").state == ON_DEVICE
    assert manager.used_bytes() == 100
    await manager.ensure_on_device("a")
    assert manager.state("b").state == evicted_state
    assert a.calls == ["load", "to_device", evict_call] + (["load"] if mode == "disk_swap" else []) + [
        "to_device"
    ]
    stats = manager.stats("a")
    assert (
        stats["swap_count"] == 1
        and stats["evictions"] == 1
        and stats["loads"] == (2 if mode == "disk_swap" else 1)
    )
    assert manager.stats("b")["swap_count"] == 0
    manager.close()


async def test_manager_waits_for_a_busy_model() -> None:
    manager = MemoryManager(150, "disk_swap", clock=Clock())
    manager.add("a", FakeModel(100))
    manager.add("b", FakeModel(100))
    await manager.ensure_on_device("a")
    manager.request_started("a")
    waiter = asyncio.create_task(manager.ensure_on_device("b"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    assert manager.state("a").state == ON_DEVICE
    manager.request_finished("a")
    await asyncio.wait_for(waiter, 5)
    assert manager.state("a").state == ON_DISK
    assert manager.state("b").state == ON_DEVICE
    manager.close()


async def test_failed_load_restores_the_state() -> None:
    class Broken(FakeModel):
        """A model whose files cannot be read."""

        def load(self) -> int:
            raise OSError("disk gone")

    manager = MemoryManager(None, "disk_swap")
    manager.add("a", Broken(1))
    with pytest.raises(OSError):
        await manager.ensure_on_device("a")
    assert manager.state("a").state == ON_DISK
    manager.close()
