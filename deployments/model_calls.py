"""Calling a model deployment through its handle, with Ray's failures mapped to API errors."""

from __future__ import annotations

import logging

import numpy as np
from ray import exceptions as ray_exceptions
from ray.serve.exceptions import BackPressureError, RequestCancelledError
from ray.serve.handle import DeploymentHandle

from shared.errors import ApiError
from shared.params import PredictParams
from shared.results import Prediction

logger = logging.getLogger("ray.serve")


async def predict(
    handle: DeploymentHandle, model_id: str, image: np.ndarray, params: PredictParams
) -> Prediction:
    conf, iou, imgsz = params.model_args()
    try:
        return await handle.options(multiplexed_model_id=model_id).predict.remote(
            model_id, image, conf, iou, imgsz
        )
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
    except (TimeoutError, RequestCancelledError) as exc:
        raise ApiError(504, "Model timed out") from exc
    except ray_exceptions.RayTaskError as exc:
        if isinstance(exc.cause, FileNotFoundError):
            logger.error("model %s has no weights: %s", model_id, exc.cause)
            raise ApiError(503, "Model not ready: weights unavailable") from exc
        raise
