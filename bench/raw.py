"""One stream: Ultralytics `predict` in one process, no server, one image after another.

Runs as a child of the benchmark (so its CPU and memory are measured like a server's) and
takes commands on stdin, one JSON object per line, answering each with one JSON line:

- `{"cmd": "run", "source": "files" | "arrays", "duration_s": 8, "warmup_s": 1}`:
  predict back to back for `duration_s`; "files" passes the image path (Ultralytics decodes it,
  which every server must do too), "arrays" passes pre-decoded BGR arrays (model work alone).
- `{"cmd": "detections"}`: each image's detections, to check the servers against.
- `{"cmd": "quit"}`.

Torch uses every core (Ultralytics would otherwise pin it to one thread via OMP_NUM_THREADS),
so this is the fastest a single stream of `predict` calls goes on this machine (bench/floor.py
is the machine's floor: one one-thread process per core, as the replicas run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

MARK = "BENCH "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--task", default="detect")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    import cv2
    import torch
    from ultralytics import YOLO

    model = YOLO(args.weights, task=args.task)
    arrays = [cv2.imread(path) for path in args.images]
    kwargs = {"conf": 0.25, "iou": 0.7, "imgsz": args.imgsz, "verbose": False}
    model.predict(arrays[0], **kwargs)  # builds the predictor, fuses layers
    torch.set_num_threads(args.threads)
    _answer({"ready": True, "threads": torch.get_num_threads()})

    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        if command["cmd"] == "detections":
            out = []
            for path in args.images:
                boxes = model.predict(path, **kwargs)[0].boxes
                out.append(
                    {
                        "classes": [int(c) for c in boxes.cls.tolist()],
                        "confidence": boxes.conf.tolist(),
                        "boxes": boxes.xyxy.tolist(),
                    }
                )
            _answer({"detections": out})
            continue
        sources = args.images if command["source"] == "files" else arrays
        _loop(model, sources, kwargs, float(command.get("warmup_s", 0)))
        latencies, wall = _loop(model, sources, kwargs, float(command["duration_s"]))
        _answer({"latencies_s": latencies, "wall_s": wall})
    return 0


def _loop(model, sources: list, kwargs: dict, duration_s: float) -> tuple[list[float], float]:
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + duration_s
    i = 0
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        model.predict(sources[i % len(sources)], **kwargs)
        latencies.append(time.perf_counter() - t)
        i += 1
    return latencies, time.perf_counter() - started


def _answer(message: dict) -> None:
    # Marked, because Ultralytics logs to stdout too.
    sys.stdout.write(MARK + json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
