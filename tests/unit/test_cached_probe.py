"""CachedProbe (shared/cached_probe.py): one check per interval, one in flight, shared answers."""

from __future__ import annotations

import asyncio
import time

from shared.cached_probe import CachedProbe


def test_a_flood_of_callers_shares_one_check_per_interval() -> None:
    async def check() -> float:
        await asyncio.sleep(0.02)
        return time.monotonic()

    probe = CachedProbe(check, ttl_s=0.2)

    async def main() -> list[float]:
        return await asyncio.gather(*(probe.get() for _ in range(500)))

    answers = asyncio.run(main())
    assert probe.checks == 1 and len(set(answers)) == 1


def test_the_answer_expires_after_its_ttl() -> None:
    calls = 0

    async def check() -> int:
        nonlocal calls
        calls += 1
        return calls

    probe = CachedProbe(check, ttl_s=0.05)

    async def main() -> list[int]:
        first, again = await probe.get(), await probe.get()
        await asyncio.sleep(0.08)
        return [first, again, await probe.get()]

    assert asyncio.run(main()) == [1, 1, 2]


def test_a_caller_that_gives_up_does_not_cancel_the_others_check() -> None:
    async def check() -> str:
        await asyncio.sleep(0.05)
        return "ok"

    probe = CachedProbe(check, ttl_s=1)

    async def main() -> str:
        impatient = asyncio.create_task(probe.get())
        patient = asyncio.create_task(probe.get())
        await asyncio.sleep(0.01)
        impatient.cancel()
        return await patient

    assert asyncio.run(main()) == "ok"
