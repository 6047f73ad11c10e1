"""How a model call's failures become API errors (no Ray cluster: plain awaitables stand in for
DeploymentResponses)."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from deployments.model_calls import _within, ray_errors
from shared.errors import ApiError


async def _never() -> None:
    await asyncio.Event().wait()


async def _call(awaitable, timeout_s: float | None) -> object:
    with ray_errors("m", timeout_s):
        return await _within(awaitable, timeout_s)


def test_an_unanswered_call_is_a_504_after_the_timeout() -> None:
    with pytest.raises(ApiError) as caught:
        asyncio.run(_call(_never(), 0.05))
    assert caught.value.status == 504 and "timed out" in caught.value.message


def test_the_awaited_call_is_cancelled_on_timeout() -> None:
    async def scenario() -> bool:
        task = asyncio.ensure_future(_never())
        with pytest.raises(ApiError):
            await _call(task, 0.05)
        await asyncio.sleep(0)
        return task.cancelled()

    assert asyncio.run(scenario())


def test_an_answer_in_time_passes_through() -> None:
    async def answer() -> str:
        return "ok"

    assert asyncio.run(_call(answer(), 5)) == "ok"
    assert asyncio.run(_call(answer(), None)) == "ok"


def test_back_pressure_is_a_503_with_retry_after() -> None:
    async def busy() -> None:
        raise BackPressureError(num_queued_requests=3, max_queued_requests=2)

    with pytest.raises(ApiError) as caught:
        asyncio.run(_call(busy(), 5))
    assert caught.value.status == 503 and caught.value.headers["Retry-After"] == "1"


def test_a_dead_replica_is_a_503() -> None:
    async def died() -> None:
        raise ActorDiedError()

    with pytest.raises(ApiError) as caught:
        asyncio.run(_call(died(), 5))
    assert caught.value.status == 503 and "Retry-After" in caught.value.headers
