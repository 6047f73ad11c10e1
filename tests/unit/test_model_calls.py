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


class _Waiting:
    """A DeploymentResponse still waiting for Serve's router to pick a replica."""

    def __init__(self) -> None:
        self._replica_result_future = asyncio.get_running_loop().create_future()

    def __await__(self):
        return self._replica_result_future.__await__()


def test_a_call_no_replica_took_in_time_is_a_503_with_retry_after() -> None:
    async def scenario() -> None:
        await _call(_Waiting(), 0.05)

    with pytest.raises(ApiError) as caught:
        asyncio.run(scenario())
    assert caught.value.status == 503 and "no replica" in caught.value.message
    assert caught.value.headers["Retry-After"] == "5"


class _Assigned(_Waiting):
    """A DeploymentResponse a replica took, and never answers."""

    def __init__(self) -> None:
        super().__init__()
        self._replica_result_future.set_result(None)

    def __await__(self):
        return asyncio.Event().wait().__await__()


def test_a_call_a_replica_took_but_never_answered_is_a_504() -> None:
    async def scenario() -> None:
        await _call(_Assigned(), 0.05)

    with pytest.raises(ApiError) as caught:
        asyncio.run(scenario())
    assert caught.value.status == 504


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
