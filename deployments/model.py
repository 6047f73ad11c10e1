"""The model deployment: weights loaded once per replica, requests batched with @serve.batch.

One class serves both shapes of the product:
- a dedicated endpoint pins one model (`model_id`), loaded and warmed up before the replica
  reports healthy;
- the shared pool multiplexes any registry model (`@serve.multiplexed`, least recently used
  evicted), preloading `preload` at start.
It never sees HTTP: it takes RGB arrays and returns `Prediction` dicts of numpy arrays.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from typing import Any

import numpy as np
from ray import serve

from deployments.yolo import LoadedModel, library_versions, load_model, set_torch_threads
from shared.registry import load_registry
from shared.results import Prediction

logger = logging.getLogger("ray.serve")

DEFAULT_BATCH = {"max_batch_size": 4, "batch_wait_timeout_s": 0.005}


def _device(num_gpus: float) -> str:
    if num_gpus > 0:
        import torch

        if torch.cuda.is_available():
            return "cuda:0"
    return "cpu"


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=16)
class ModelServer:
    async def __init__(
        self,
        *,
        registry: str | None = None,
        model_id: str | None = None,
        preload: list[str] | None = None,
        max_models_per_replica: int = 3,
        num_gpus: float = 0,
        torch_threads: int | None = None,
    ):
        self.registry = load_registry(registry)
        self.fixed_model_id = model_id
        self.device = _device(num_gpus)
        self.versions = library_versions()
        # Matched to the replica's CPU share (Ray sets OMP_NUM_THREADS from num_cpus).
        self.threads = torch_threads or max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.batch_sizes: dict[int, int] = defaultdict(int)

        async def load(model_id: str) -> LoadedModel:
            return await asyncio.to_thread(self._load, model_id)

        # Wrapped per instance so the per-replica model limit comes from the config.
        self._get_model = serve.multiplexed(
            max_num_models_per_replica=1 if model_id else max_models_per_replica
        )(load)
        self._pinned: LoadedModel | None = None
        if model_id:
            self._pinned = await asyncio.to_thread(self._load, model_id)
        # A replica is not ready until its models are loaded and warm.
        for extra in preload or []:
            if extra != model_id:
                await self._get_model(extra)

    def _load(self, model_id: str) -> LoadedModel:
        spec = self.registry[model_id]
        loaded = load_model(spec, device=self.device)
        set_torch_threads(self.threads)
        logger.info("loaded %s on %s in %.2fs", model_id, self.device, loaded.load_seconds)
        return loaded

    def reconfigure(self, config: dict[str, Any]) -> None:
        """user_config: batching knobs, changeable live with `serve deploy`."""
        merged = {**DEFAULT_BATCH, **(config or {})}
        self._batched.set_max_batch_size(int(merged["max_batch_size"]))
        self._batched.set_batch_wait_timeout_s(float(merged["batch_wait_timeout_s"]))
        self.stack_batches = bool(merged.get("stack_batches", self.device != "cpu"))

    async def model(self, model_id: str) -> LoadedModel:
        if self._pinned is not None and model_id == self.fixed_model_id:
            return self._pinned
        return await self._get_model(model_id)

    async def predict(
        self, model_id: str, image: np.ndarray, conf: float, iou: float, imgsz: int
    ) -> Prediction:
        return await self._batched((model_id, image, (conf, iou, imgsz)))

    async def describe(self, model_id: str) -> dict[str, Any]:
        loaded = await self.model(model_id)
        return {
            "model": loaded.spec.file,
            "task": loaded.spec.task,
            "names": loaded.names,
            "imgsz": loaded.default_imgsz,
            "device": loaded.device,
            "versions": self.versions,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "batch_sizes": dict(self.batch_sizes),
            "device": self.device,
            "threads": self.threads,
        }

    @serve.batch(
        max_batch_size=DEFAULT_BATCH["max_batch_size"],
        batch_wait_timeout_s=DEFAULT_BATCH["batch_wait_timeout_s"],
    )
    async def _batched(self, requests: list[tuple[str, np.ndarray, tuple]]) -> list[Prediction]:
        self.batch_sizes[len(requests)] += 1
        # Requests that share a model and its arguments run together; others run apart.
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (model_id, _, args) in enumerate(requests):
            groups[(model_id, args)].append(i)
        out: list[Prediction | None] = [None] * len(requests)
        for (model_id, (conf, iou, imgsz)), indices in groups.items():
            loaded = await self.model(model_id)
            images = [requests[i][1] for i in indices]
            predictions = await asyncio.to_thread(self._infer, loaded, images, conf, iou, imgsz)
            for i, prediction in zip(indices, predictions, strict=True):
                prediction["model"] = loaded.spec.file
                prediction["versions"] = self.versions
                out[i] = prediction
        return out  # type: ignore[return-value]

    def _infer(
        self, loaded: LoadedModel, images: list[np.ndarray], conf: float, iou: float, imgsz: int
    ) -> list[Prediction]:
        if self.stack_batches:
            return loaded.run(images, conf, iou, imgsz)
        # On CPU one image at a time with a rectangular letterbox beats a padded square batch.
        return [p for image in images for p in loaded.run([image], conf, iou, imgsz)]
