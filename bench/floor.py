"""The floor: what the machine does with no serving at all, one model process per core.

Runs as a child of the benchmark (so its CPU and memory are measured like a server's) and
starts `--procs` worker processes of its own (default: one per core). Each worker loads the
model exactly as a one-CPU model replica does (`deployments.yolo.load_model` with the app's
default backend, ONNX Runtime on CPU, exported once and cached, one inference thread; then
`set_torch_threads(1)`, as `ModelServer._load` does), and runs closed loop: decode the JPEG's
bytes with OpenCV (`cv2.imdecode`, what Ultralytics' `imread` does with a file's bytes), then
Ultralytics `predict` on the BGR array, bus.jpg and zidane.jpg alternating.

Commands on stdin, one JSON object per line, each answered with one JSON line (marked like
bench/raw.py's, since Ultralytics logs to stdout too):

- `{"cmd": "run", "duration_s": 8, "warmup_s": 1}`: every worker warms up until a common start
  time, then measures `duration_s`; the answer has each worker's latencies and wall time;
- `{"cmd": "detections"}`: each image's detections from one worker, to check against;
- `{"cmd": "quit"}`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.raw import MARK

START_SLACK_S = 0.2  # between sending "run" and the common start: every worker has it by then


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolo26n")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--backend", help="torch or onnx (default: the apps' default backend)")
    args = parser.parse_args(argv)
    if args.backend is None:
        from deployments.config import CommonArgs

        args.backend = CommonArgs.model_fields["backend"].default

    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    workers = []
    for index in range(max(1, args.procs)):
        mine, theirs = context.Pipe()
        process = context.Process(
            target=_worker,
            args=(theirs, index, args.model, args.images, args.imgsz, args.backend),
            daemon=True,
        )
        process.start()
        pipes.append(mine)
        workers.append(process)
    ready = [pipe.recv() for pipe in pipes]
    _answer({"ready": True, "procs": len(pipes), **ready[0]})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "quit":
                break
            if command["cmd"] == "detections":
                pipes[0].send(command)
                _answer(pipes[0].recv())
                continue
            start_at = time.time() + START_SLACK_S + float(command.get("warmup_s", 0))
            for pipe in pipes:
                pipe.send({**command, "start_at": start_at})
            _answer({"parts": [pipe.recv() for pipe in pipes]})
    finally:
        for pipe in pipes:
            pipe.send({"cmd": "quit"})
        for process in workers:
            process.join(timeout=10)
    return 0


def _worker(
    conn: Connection, index: int, model_id: str, images: list[str], imgsz: int, backend: str
) -> None:
    # A one-CPU Ray worker runs with OMP_NUM_THREADS=1; so does this one.
    os.environ["OMP_NUM_THREADS"] = "1"
    import cv2
    import numpy as np
    import torch

    from deployments.yolo import load_model, set_torch_threads, to_prediction
    from shared.registry import load_registry

    spec = load_registry()[model_id]
    loaded = load_model(spec, backend=backend, threads=1)
    set_torch_threads(1)
    files = [Path(p).read_bytes() for p in images]
    kwargs = {"conf": 0.25, "iou": 0.7, "imgsz": imgsz, "verbose": False}
    kwargs.update(loaded.predict_kwargs)

    def infer(data: bytes) -> Any:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        with torch.inference_mode():
            return loaded.model.predict(bgr, **kwargs)[0]

    conn.send({"backend": loaded.backend, "threads": 1, "torch_threads": torch.get_num_threads()})
    while True:
        command = conn.recv()
        if command["cmd"] == "quit":
            return
        if command["cmd"] == "detections":
            out = []
            for data in files:
                prediction = to_prediction(infer(data), spec.task, loaded.names)
                out.append(
                    {
                        "classes": [int(c) for c in prediction["classes"].tolist()],
                        "confidence": prediction["confidence"].tolist(),
                        "boxes": prediction["boxes"].tolist(),
                    }
                )
            conn.send({"detections": out})
            continue
        start_at = float(command["start_at"])
        i = index  # workers start on different images, like the HTTP clients' offsets
        while time.time() < start_at:
            infer(files[i % len(files)])
            i += 1
        latencies: list[float] = []
        started = time.perf_counter()
        deadline = started + float(command["duration_s"])
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            infer(files[i % len(files)])
            latencies.append(time.perf_counter() - t)
            i += 1
        conn.send({"latencies_s": latencies, "wall_s": time.perf_counter() - started})


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(MARK + json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
