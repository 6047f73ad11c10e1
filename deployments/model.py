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
import math
import os
import time
from collections import defaultdict
from typing import Any

import numpy as np
import ray
from ray import serve

from deployments.config import (
    DEFAULT_BATCH,
    HEALTH_CHECK_PERIOD_S,
    AppArgs,
    EndpointArgs,
    SharedArgs,
)
from deployments.metrics import ModelMetrics
from deployments.yolo import LoadedModel, library_versions, load_model, set_torch_threads
from shared.registry import load_registry
from shared.results import Prediction

logger = logging.getLogger("ray.serve")


def _replica_resources() -> tuple[str, int]:
    """(device, torch threads) from what Ray assigned this replica."""
    context = ray.get_runtime_context()
    cpus = context.get_assigned_resources().get("CPU", 1)
    device = "cpu"
    if context.get_accelerator_ids().get("GPU"):
        import torch

        # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU, which torch sees as device 0.
        if torch.cuda.is_available():
            device = "cuda:0"
    return device, max(1, math.ceil(cpus))


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=16,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
class ModelServer:
    async def __init__(self, args: AppArgs):
        self.registry = load_registry(args.registry)
        model_id = args.model if isinstance(args, EndpointArgs) else None
        self.fixed_model_id = model_id
        # Inference threads match the replica's CPU share.
        self.device, self.threads = _replica_resources()
        self.versions = library_versions()
        self.backend = args.backend  # what runs the network on CPU (deployments/yolo.py)
        self.batch_sizes: dict[int, int] = defaultdict(int)
        self.loads: list[str] = []  # every model load, in order (evictions show as reloads)
        self.metrics = ModelMetrics()
        # Inference calls running now (start times): the health check fails while one has run
        # past `stuck_after_s` (the app's model timeout), so Serve replaces a wedged replica.
        self.stuck_after_s = args.model_timeout_s
        self._running: dict[int, float] = {}
        self._calls = 0

        async def load(model_id: str) -> LoadedModel:
            return await asyncio.to_thread(self._load, model_id)

        # Wrapped per instance so the per-replica model limit comes from the config.
        pool_size = args.max_models_per_replica if isinstance(args, SharedArgs) else 1
        self._get_model = serve.multiplexed(max_num_models_per_replica=pool_size)(load)
        self._pinned: LoadedModel | None = None
        if model_id:
            self._pinned = await asyncio.to_thread(self._load, model_id)
        # A replica is not ready until its models are loaded and warm.
        for extra in args.preload if isinstance(args, SharedArgs) else ():
            if extra != model_id:
                await self._get_model(extra)

    def _load(self, model_id: str) -> LoadedModel:
        spec = self.registry[model_id]
        loaded = load_model(spec, device=self.device, backend=self.backend, threads=self.threads)
        set_torch_threads(self.threads)
        self.metrics.model_loaded(model_id, loaded.load_seconds)
        self.loads.append(model_id)
        logger.info("loaded %s on %s in %.2fs", model_id, self.device, loaded.load_seconds)
        return loaded

    def reconfigure(self, config: dict[str, Any]) -> None:
        """user_config: batching knobs, changeable live with `serve deploy`."""
        merged = {**DEFAULT_BATCH, **(config or {})}
        self._batched.set_max_batch_size(int(merged["max_batch_size"]))
        self._batched.set_batch_wait_timeout_s(float(merged["batch_wait_timeout_s"]))
        self.stack_batches = bool(merged.get("stack_batches", self.device != "cpu"))

    async def model(self, model_id: str | None) -> LoadedModel:
        """The pinned model for a dedicated endpoint (None or its ID), else from the pool."""
        if self._pinned is not None and model_id in (None, self.fixed_model_id):
            return self._pinned
        if model_id is None:
            raise ValueError("this replica serves a pool: name the model")
        if model_id not in self.registry:
            raise KeyError(model_id)
        return await self._get_model(model_id)

    async def predict(
        self, model_id: str, image: np.ndarray, conf: float, iou: float, imgsz: int
    ) -> Prediction:
        # The arrival time makes the batch's queue wait measurable.
        return await self._batched((model_id, image, (conf, iou, imgsz), time.perf_counter()))

    async def describe(self, model_id: str | None) -> dict[str, Any]:
        loaded = await self.model(model_id)
        return {
            "model_id": loaded.spec.id,
            "model": loaded.spec.file,
            "task": loaded.spec.task,
            "names": loaded.names,
            "imgsz": loaded.default_imgsz,
            "device": loaded.device,
            "versions": self.versions,
        }

    def stats(self) -> dict[str, Any]:
        """What this replica has done and how it is set, for tests and operators."""
        return {
            "batch_sizes": dict(self.batch_sizes),
            "loads": list(self.loads),
            "max_batch_size": self._batched._get_max_batch_size(),
            "batch_wait_timeout_s": self._batched._get_batch_wait_timeout_s(),
            "stack_batches": self.stack_batches,
            "device": self.device,
            "threads": self.threads,
            "backend": self.backend,
            "pid": os.getpid(),
        }

    @serve.batch(
        max_batch_size=DEFAULT_BATCH["max_batch_size"],
        batch_wait_timeout_s=DEFAULT_BATCH["batch_wait_timeout_s"],
    )
    async def _batched(
        self, requests: list[tuple[str, np.ndarray, tuple, float]]
    ) -> list[Prediction]:
        self.batch_sizes[len(requests)] += 1
        batch_started = time.perf_counter()
        self.metrics.batch_started(
            (str(model_id or self.fixed_model_id), arrived) for model_id, _, _, arrived in requests
        )
        # Requests that share a model and its arguments run together; others run apart.
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (model_id, _, args, _) in enumerate(requests):
            groups[(model_id, args)].append(i)
        out: list[Prediction | None] = [None] * len(requests)
        for (model_id, (conf, iou, imgsz)), indices in groups.items():
            loaded = await self.model(model_id)
            images = [requests[i][1] for i in indices]
            predictions = await self._timed_infer(loaded, images, conf, iou, imgsz)
            for i, prediction in zip(indices, predictions, strict=True):
                prediction["model"] = loaded.spec.file
                prediction["versions"] = self.versions
                self.metrics.image_timed(loaded.spec.id, prediction["speed"])
                out[i] = prediction
        # Time in this replica, for the ingress' Server-Timing: waiting for the batch to start,
        # and arrival to the whole batch done (one-by-one batches finish together).
        done = time.perf_counter()
        for prediction, (_, _, _, arrived) in zip(out, requests, strict=True):
            assert prediction is not None
            prediction["timing"] = {
                "queue": (batch_started - arrived) * 1000,
                "replica": (done - arrived) * 1000,
            }
        return out  # type: ignore[return-value]

    async def _timed_infer(
        self, loaded: LoadedModel, images: list[np.ndarray], conf: float, iou: float, imgsz: int
    ) -> list[Prediction]:
        self._calls += 1
        call = self._calls
        self._running[call] = time.monotonic()

        def run() -> list[Prediction]:
            # Cleared by the thread itself: a cancelled await leaves a wedged thread running,
            # and that one must keep failing the health check.
            try:
                return self._infer(loaded, images, conf, iou, imgsz)
            finally:
                del self._running[call]

        return await asyncio.to_thread(run)

    def check_health(self) -> None:
        """Serve's periodic check: fail while an inference has been stuck past the timeout."""
        if self.stuck_after_s is None or not self._running:
            return
        stuck_s = time.monotonic() - min(self._running.values())
        if stuck_s > self.stuck_after_s:
            raise RuntimeError(f"an inference call has been running for {stuck_s:.0f} s")

    def _infer(
        self, loaded: LoadedModel, images: list[np.ndarray], conf: float, iou: float, imgsz: int
    ) -> list[Prediction]:
        if self.stack_batches:
            return loaded.run(images, conf, iou, imgsz)
        # On CPU one image at a time with a rectangular letterbox beats a padded square batch.
        return [p for image in images for p in loaded.run([image], conf, iou, imgsz)]
