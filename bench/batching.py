"""Is a stacked batch faster than one image at a time? In process, per image size.

    .venv/bin/python -m bench.batching [--model yolo26n] [--batch 4] [--repeats 5]

The model deployment's `stack_batches` default per device comes from this measurement: on the
CPU each image runs alone with its rectangular letterbox; on CUDA a batch runs as one tensor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from PIL import Image

from deployments.yolo import load_model, set_torch_threads
from shared.assets import example_image
from shared.registry import load_registry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="yolo26n")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    args = parser.parse_args()

    loaded = load_model(
        load_registry()[args.model], device=args.device, backend=args.backend, threads=args.threads
    )
    set_torch_threads(args.threads)
    images = [
        np.asarray(Image.open(example_image(n)).convert("RGB")) for n in ("bus.jpg", "zidane.jpg")
    ]
    batch = [images[i % 2] for i in range(args.batch)]  # two sizes, as traffic mixes them
    rows = []
    for imgsz in (320, 640, 1280):
        timings: dict[str, list[float]] = {"stacked": [], "one-by-one": []}
        loaded.run(batch, 0.25, 0.7, imgsz)  # warm this size for both paths
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            start = time.perf_counter()
            loaded.run(batch, 0.25, 0.7, imgsz)
            timings["stacked"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for image in batch:
                loaded.run([image], 0.25, 0.7, imgsz)
            timings["one-by-one"].append(time.perf_counter() - start)
        row = {"backend": args.backend, "imgsz": imgsz, "batch": args.batch}
        for mode, values in timings.items():
            row[f"{mode} ms/img"] = round(statistics.median(values) * 1000 / args.batch, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
