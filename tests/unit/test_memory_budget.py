"""The decode memory budget (shared/memory_budget.py): bounded, first come first served, 503s."""

from __future__ import annotations

import asyncio

import pytest

from shared.errors import ApiError
from shared.memory_budget import MemoryBudget


def test_concurrent_holders_never_exceed_the_budget() -> None:
    budget = MemoryBudget(100, wait_s=5)
    peak = 0

    async def decode(nbytes: int) -> None:
        nonlocal peak
        async with budget.reserve(nbytes):
            peak = max(peak, budget.reserved)
            await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(*(decode(n) for n in [40, 40, 40, 30, 70, 10] * 5))

    asyncio.run(main())
    assert 0 < peak <= 100
    assert budget.reserved == 0 and not budget._waiters


def test_a_share_not_given_in_time_is_a_503_with_retry_after() -> None:
    budget = MemoryBudget(100, wait_s=0.05)

    async def main() -> ApiError:
        async with budget.reserve(80):
            with pytest.raises(ApiError) as refused:
                async with budget.reserve(30):
                    pass
        return refused.value

    error = asyncio.run(main())
    assert error.status == 503 and error.headers["Retry-After"] == "1"
    assert budget.reserved == 0 and not budget._waiters


def test_waiters_are_served_in_arrival_order() -> None:
    budget = MemoryBudget(100, wait_s=5)
    order: list[str] = []

    async def take(name: str, nbytes: int, hold_s: float) -> None:
        async with budget.reserve(nbytes):
            order.append(name)
            await asyncio.sleep(hold_s)

    async def main() -> None:
        first = asyncio.create_task(take("first", 60, 0.05))
        await asyncio.sleep(0)
        big = asyncio.create_task(take("big", 90, 0))
        await asyncio.sleep(0)
        small = asyncio.create_task(take("small", 10, 0))  # would fit now, but waits its turn
        await asyncio.gather(first, big, small)

    asyncio.run(main())
    assert order == ["first", "big", "small"]


def test_a_file_larger_than_the_budget_runs_alone() -> None:
    budget = MemoryBudget(100, wait_s=1)

    async def main() -> None:
        async with budget.reserve(10_000):
            assert budget.reserved == 100

    asyncio.run(main())
    assert budget.reserved == 0


def test_a_cancelled_waiter_gives_nothing_away() -> None:
    budget = MemoryBudget(100, wait_s=5)

    async def main() -> None:
        async with budget.reserve(100):
            waiter = asyncio.create_task(budget.reserve(50).__aenter__())
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert budget.reserved == 0 and not budget._waiters

    asyncio.run(main())
