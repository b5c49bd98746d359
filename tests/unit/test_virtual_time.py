"""The virtual-time loop: timers fire in order at their virtual instant, nothing sleeps."""

from __future__ import annotations

import asyncio

import pytest

from tesla_smart_charger.simulator import virtual_time


def test_a_day_of_sleeps_passes_on_the_virtual_clock() -> None:
    async def main() -> tuple[float, list[tuple[float, str]]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[float, str]] = []

        async def after(delay: float, name: str) -> None:
            await asyncio.sleep(delay)
            seen.append((loop.time(), name))

        await asyncio.gather(after(86_400.0, "day"), after(0.5, "half"), after(60.0, "minute"))
        return loop.time(), seen

    now, seen = virtual_time.run(main())
    assert now == 86_400.0
    assert seen == [(0.5, "half"), (60.0, "minute"), (86_400.0, "day")]


def test_timeouts_and_waits_use_the_virtual_clock() -> None:
    async def main() -> tuple[float, float, bool]:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(20.0):
                await asyncio.Event().wait()
        timed_out_at = loop.time()
        waiter = asyncio.ensure_future(asyncio.Event().wait())
        done, _ = await asyncio.wait({waiter}, timeout=5.0)
        waiter.cancel()
        return timed_out_at, loop.time(), bool(done)

    timed_out_at, now, done = virtual_time.run(main(), start=100.0)
    assert timed_out_at == 120.0
    assert now == 125.0
    assert not done


def test_a_deadlock_raises_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.Event().wait()  # nothing will ever set it, and no timer is armed

    # A short grace: the rule is the same, the test need not wait the default 5 real seconds.
    with pytest.raises(virtual_time.Idle, match="no timer is armed"):
        virtual_time.run(main(), idle_grace=0.05)


def test_the_clock_only_moves_forward() -> None:
    loop = virtual_time.VirtualTimeLoop()
    try:
        with pytest.raises(ValueError, match="only moves forward"):
            loop.advance(-1.0)
    finally:
        loop.close()


def test_a_thread_can_still_wake_an_idle_loop() -> None:
    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, lambda: 42)
        return answer, loop.time()

    assert virtual_time.run(main()) == (42, 0.0)  # work in threads takes no virtual time
