"""PyTorch vs ONNX Runtime on this CPU, through the replica's own code (deployments/yolo.py).

    .venv/bin/python -m bench.backends                      # yolo26n, timing and detections
    .venv/bin/python -m bench.backends --models yolo26n yolo26n-seg yolo11n-pose --rounds 6

Each model is loaded once per backend exactly as a replica loads it (`load_model`, ONNX exported
once and cached beside the weights), then `LoadedModel.run` is timed on bus.jpg and zidane.jpg in
alternating rounds (A B B A ...), so drift in machine load hits both alike. Detections must agree
within tolerance (same classes, boxes within 1 px, confidences within 0.01) for the faster
backend to be worth anything. Writes bench/results/backends.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shared.assets import EXAMPLES, example_image
from shared.registry import PROJECT_ROOT, load_registry

BOX_TOL_PX = 1.0
CONF_TOL = 0.01


def _agree(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """None when two Predictions match within tolerance, else what differs."""
    if "top5" in a:
        ca = [c for c, _ in a["top5"]]
        cb = [c for c, _ in b["top5"]]
        diff = max(abs(p - q) for (_, p), (_, q) in zip(a["top5"], b["top5"], strict=True))
        return None if ca == cb and diff <= CONF_TOL else f"top5 {ca} vs {cb} (conf diff {diff})"
    if len(a["classes"]) != len(b["classes"]):
        return f"{len(a['classes'])} vs {len(b['classes'])} detections"
    if not np.array_equal(a["classes"], b["classes"]):
        return "classes differ"
    box = float(np.abs(a["boxes"] - b["boxes"]).max(initial=0))
    conf = float(np.abs(a["confidence"] - b["confidence"]).max(initial=0))
    if box > BOX_TOL_PX or conf > CONF_TOL:
        return f"max box diff {box:.2f} px, max conf diff {conf:.4f}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["yolo26n"])
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds per backend")
    parser.add_argument("--per-round", type=int, default=10, help="images per round")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--spin",
        action="store_true",
        help="also time ONNX Runtime with busy-waiting threads (its own default)",
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    from deployments.onnx_backend import cached_export, limit_threads
    from deployments.yolo import load_model, set_torch_threads

    registry = load_registry()
    images = [np.asarray(Image.open(example_image(n)).convert("RGB")) for n in EXAMPLES]
    report: dict[str, Any] = {"threads": args.threads, "models": {}}
    for model_id in args.models:
        spec = registry[model_id]
        started = time.perf_counter()
        loaded = {b: load_model(spec, backend=b, threads=args.threads) for b in ("torch", "onnx")}
        if args.spin:
            loaded["onnx-spin"] = load_model(spec, backend="onnx")
            limit_threads(loaded["onnx-spin"].model, cached_export(spec), args.threads, spin=True)
        variants = list(loaded)
        set_torch_threads(args.threads)
        load_s = time.perf_counter() - started
        size = spec.imgsz or 640
        agreement = {}
        for name, image in zip(EXAMPLES, images, strict=True):
            a, b = (loaded[k].run([image], 0.25, 0.7, size)[0] for k in ("torch", "onnx"))
            agreement[name] = _agree(a, b) or "same within tolerance"
        rounds: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.rounds):
            for backend in variants if r % 2 == 0 else variants[::-1]:
                times = []
                for i in range(args.per_round):
                    t = time.perf_counter()
                    loaded[backend].run([images[i % len(images)]], 0.25, 0.7, size)
                    times.append(time.perf_counter() - t)
                rounds[backend].append(statistics.median(times) * 1000)
        torch_ms = statistics.median(rounds["torch"])
        onnx_ms = statistics.median(rounds["onnx"])
        paired = [t - o for t, o in zip(rounds["torch"], rounds["onnx"], strict=True)]
        result = {
            "torch_ms": torch_ms,
            "onnx_ms": onnx_ms,
            "onnx_faster_by": 1 - onnx_ms / torch_ms,
            "paired_median_saving_ms": statistics.median(paired),
            "rounds_ms": rounds,
            "median_ms": {v: statistics.median(rounds[v]) for v in variants},
            "agreement": agreement,
            "first_load_and_export_s": round(load_s, 1),
        }
        report["models"][model_id] = result
        print(
            f"{model_id}: torch {torch_ms:.1f} ms, onnx {onnx_ms:.1f} ms per image "
            f"(onnx {100 * result['onnx_faster_by']:+.0f}% faster; paired saving "
            f"{result['paired_median_saving_ms']:.1f} ms); detections: {agreement}; "
            + ", ".join(f"{v} {ms:.1f} ms" for v, ms in result["median_ms"].items()),
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backends.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
