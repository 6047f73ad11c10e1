"""PyTorch, ONNX Runtime and OpenVINO on this CPU, through the replica's code (deployments/yolo.py).

    .venv/bin/python -m bench.backends                      # yolo26n, timing and detections
    .venv/bin/python -m bench.backends --models yolo26n yolo26n-seg yolo11n-pose --rounds 6
    .venv/bin/python -m bench.backends --backends torch onnx openvino --threads 1

Each model is loaded once per backend exactly as a replica loads it (`load_model`, ONNX and
OpenVINO exported once and cached beside the weights), then `LoadedModel.run` is timed on bus.jpg
and zidane.jpg in alternating rounds (A B C C B A ...), so drift in machine load hits all alike.
Per image: wall time and Ultralytics' own preprocess/inference/postprocess split. Detections must
agree with torch's within tolerance (same classes, boxes within 1 px, confidences within 0.01)
for a faster backend to be worth anything. Writes bench/results/backends.json.
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
SPEED_KEYS = ("preprocess", "inference", "postprocess")
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
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["torch", "onnx"],
        choices=["torch", "onnx", "openvino"],
        help="the first is the reference for detections and the speed-up figures",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--spin",
        action="store_true",
        help="also time ONNX Runtime with busy-waiting threads (its own default)",
    )
    parser.add_argument(
        "--openvino-bf16",
        action="store_true",
        help="also time OpenVINO at BF16 precision (Ultralytics' own default on AMX CPUs)",
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    from deployments import onnx_backend, openvino_backend
    from deployments.yolo import load_model, set_torch_threads

    registry = load_registry()
    images = [np.asarray(Image.open(example_image(n)).convert("RGB")) for n in EXAMPLES]
    report: dict[str, Any] = {"threads": args.threads, "backends": args.backends, "models": {}}
    reference = args.backends[0]
    for model_id in args.models:
        spec = registry[model_id]
        load_s: dict[str, float] = {}
        loaded = {}
        for b in args.backends:
            started = time.perf_counter()
            loaded[b] = load_model(spec, backend=b, threads=args.threads)
            load_s[b] = round(time.perf_counter() - started, 2)  # first run: export included
        if args.spin and "onnx" in loaded:
            loaded["onnx-spin"] = load_model(spec, backend="onnx")
            onnx_backend.limit_threads(
                loaded["onnx-spin"].model, onnx_backend.cached_export(spec), args.threads, spin=True
            )
        if args.openvino_bf16:
            loaded["openvino-bf16"] = load_model(spec, backend="openvino", threads=args.threads)
            openvino_backend.limit_threads(
                loaded["openvino-bf16"].model,
                openvino_backend.cached_export(spec),
                args.threads,
                precision="bf16",
            )
        variants = list(loaded)
        set_torch_threads(args.threads)
        size = spec.imgsz or 640
        agreement: dict[str, dict[str, str]] = {}
        for name, image in zip(EXAMPLES, images, strict=True):
            ref = loaded[reference].run([image], 0.25, 0.7, size)[0]
            for v in variants[1:]:
                other = loaded[v].run([image], 0.25, 0.7, size)[0]
                agreement.setdefault(v, {})[name] = _agree(ref, other) or "same within tolerance"
        rounds: dict[str, list[float]] = {v: [] for v in variants}
        # Per image (keyed by image name): wall and Ultralytics' speed split, every timed call.
        per_image: dict[str, dict[str, dict[str, list[float]]]] = {
            v: {n: {k: [] for k in ("wall", *SPEED_KEYS)} for n in EXAMPLES} for v in variants
        }
        for r in range(args.rounds):
            for backend in variants if r % 2 == 0 else variants[::-1]:
                times = []
                for i in range(args.per_round):
                    t = time.perf_counter()
                    pred = loaded[backend].run([images[i % len(images)]], 0.25, 0.7, size)[0]
                    times.append(time.perf_counter() - t)
                    sample = per_image[backend][EXAMPLES[i % len(images)]]
                    sample["wall"].append(times[-1] * 1000)
                    for k in SPEED_KEYS:
                        sample[k].append(pred["speed"][k])
                rounds[backend].append(statistics.median(times) * 1000)
        median_ms = {v: statistics.median(rounds[v]) for v in variants}
        ref_ms = median_ms[reference]
        result: dict[str, Any] = {
            f"{v}_ms": ms for v, ms in median_ms.items() if v in args.backends
        }
        for v in variants[1:]:
            key = v.replace("-", "_")
            result[f"{key}_faster_by"] = 1 - median_ms[v] / ref_ms
            paired = [a - b for a, b in zip(rounds[reference], rounds[v], strict=True)]
            result[f"{key}_paired_median_saving_ms"] = statistics.median(paired)
        if "onnx" in median_ms and "openvino" in median_ms:
            result["openvino_faster_than_onnx_by"] = 1 - median_ms["openvino"] / median_ms["onnx"]
            paired = [a - b for a, b in zip(rounds["onnx"], rounds["openvino"], strict=True)]
            result["openvino_vs_onnx_paired_median_saving_ms"] = statistics.median(paired)
        result.update(
            rounds_ms=rounds,
            median_ms=median_ms,
            per_image_median_ms={
                v: {
                    n: {k: round(statistics.median(xs), 2) for k, xs in ks.items()}
                    for n, ks in imgs.items()
                }
                for v, imgs in per_image.items()
            },
            agreement=agreement,
            load_s=load_s,
        )
        if "openvino" in loaded:
            result["openvino_settings"] = openvino_backend.compiled_settings(
                loaded["openvino"].model
            )
        report["models"][model_id] = result
        print(
            f"{model_id}: "
            + ", ".join(f"{v} {ms:.1f} ms" for v, ms in median_ms.items())
            + " per image; "
            + ", ".join(
                f"{v} {100 * result[v.replace('-', '_') + '_faster_by']:+.0f}% vs {reference}"
                for v in variants[1:]
            )
            + (
                f"; openvino {100 * result['openvino_faster_than_onnx_by']:+.0f}% vs onnx"
                if "openvino_faster_than_onnx_by" in result
                else ""
            )
            + f"; detections vs {reference}: {agreement}; load s {load_s}",
            flush=True,
        )
        for v, imgs in result["per_image_median_ms"].items():
            for n, ks in imgs.items():
                print(
                    f"  {model_id} {v:14s} {n:11s} "
                    + " ".join(f"{k} {x:.1f}" for k, x in ks.items())
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backends.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
