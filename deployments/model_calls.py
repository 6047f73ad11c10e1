"""Calling a model deployment through its handle, with Ray's failures mapped to API errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
from ray import exceptions as ray_exceptions
from ray.serve.exceptions import BackPressureError, RequestCancelledError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from shared.errors import ApiError
from shared.params import PredictParams
from shared.results import Prediction

logger = logging.getLogger("ray.serve")


async def predict(
    handle: DeploymentHandle,
    model_id: str,
    image: np.ndarray,
    params: PredictParams,
    timeout_s: float | None = None,
) -> Prediction:
    """The model's `Prediction`; a call still unanswered after `timeout_s` ends in a 504."""
    conf, iou, imgsz = params.model_args()
    with ray_errors(model_id, timeout_s):
        response = handle.options(multiplexed_model_id=model_id).predict.remote(
            model_id, image, conf, iou, imgsz
        )
        return await _within(response, timeout_s)


async def describe(
    handle: DeploymentHandle, model_id: str | None, timeout_s: float | None = None
) -> dict[str, Any]:
    """The model's task, class names and defaults (model_id None: a dedicated one's own)."""
    with ray_errors(model_id or "pinned", timeout_s):
        if model_id:
            handle = handle.options(multiplexed_model_id=model_id)
        return await _within(handle.describe.remote(model_id), timeout_s)


async def _result(response: DeploymentResponse) -> Any:
    return await response


class Unassigned(TimeoutError):
    """No replica took the call within the timeout (none running: all lost, or starting)."""


def _assigned(response: DeploymentResponse) -> bool:
    # Serve resolves this future once its router has picked a replica for the call (private,
    # hence the default: anything without it counts as assigned, the plain timeout's case).
    future = getattr(response, "_replica_result_future", None)
    return future is None or future.done()


async def _within(response: DeploymentResponse, timeout_s: float | None) -> Any:
    # A replica that never answers (wedged in native code, deadlocked) would otherwise hold the
    # request until the proxy's own timeout, which answers with a plain-text 408. On timeout the
    # awaiting task is cancelled, which withdraws the call from the replica without blocking
    # the event loop (DeploymentResponse.cancel() may block until assignment).
    if timeout_s is None:
        return await response
    call = asyncio.ensure_future(_result(response))
    try:
        done, _ = await asyncio.wait({call}, timeout=timeout_s)
    except asyncio.CancelledError:
        call.cancel()  # the request itself was cancelled (its client left)
        raise
    if done:
        return call.result()
    assigned = _assigned(response)  # before cancelling, which resolves the future
    call.cancel()
    with suppress(asyncio.CancelledError):
        await call
    raise TimeoutError() if assigned else Unassigned()


@contextmanager
def ray_errors(model_id: str, timeout_s: float | None = None) -> Iterator[None]:
    """Ray's failures as API errors: busy 503, unavailable 503 (no replica took the call in
    time, too), timeout 504."""
    try:
        yield
    except BackPressureError as exc:
        raise ApiError(
            503, "Model busy: too many queued requests, retry shortly", {"Retry-After": "1"}
        ) from exc
    except (
        ray_exceptions.ActorDiedError,
        ray_exceptions.ActorUnavailableError,
        ray_exceptions.RayActorError,
    ) as exc:
        logger.warning("model replica unavailable for %s: %s", model_id, type(exc).__name__)
        raise ApiError(
            503, "Model not ready: replica unavailable, retry shortly", {"Retry-After": "2"}
        ) from exc
    except Unassigned as exc:
        # Waiting for a replica is not the model being slow: its replicas are gone or
        # starting (a lost node, a scale-up from zero), and a retry later may find one.
        logger.warning("model %s: no replica took the call in %s s", model_id, timeout_s)
        raise ApiError(
            503, "Model not ready: no replica available, retry shortly", {"Retry-After": "5"}
        ) from exc
    except (TimeoutError, RequestCancelledError) as exc:
        logger.warning(
            "model %s call ended unanswered (%s, timeout %s s)",
            model_id,
            type(exc).__name__,
            timeout_s,
        )
        raise ApiError(504, "Model timed out: no answer in time, retry shortly") from exc
    except ray_exceptions.RayTaskError as exc:
        if isinstance(exc.cause, FileNotFoundError):
            logger.error("model %s has no weights: %s", model_id, exc.cause)
            raise ApiError(503, "Model not ready: weights unavailable") from exc
        raise
