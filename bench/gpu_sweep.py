"""The GPU side of the benchmark: batch sizes 1-32 in FP16 on one CUDA device, in minutes.

Self-contained on purpose (torch, ultralytics and a weights file; nothing from this project), so
it can be copied to any GPU machine and run there:

    python bench/gpu_sweep.py /path/to/yolo26n.pt            # ~3 min on one H100
    python bench/gpu_sweep.py yolo26n.pt --seconds 3 --batches 1 8 32

For each batch size it measures
- `model`: the network alone on a ready FP16 batch already on the GPU (the device's ceiling),
- `predict`: Ultralytics `predict` on a list of decoded images (letterbox, upload, FP16 forward,
  postprocess, results: what a replica does per batch),
and prints images/s and per-batch latency. With $OUT set, the figures also go to
$OUT/gpu_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _timed(step, seconds: float, sync) -> list[float]:
    """Call `step` back to back for `seconds` (after 3 untimed calls); per-call seconds."""
    for _ in range(3):
        step()
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        started = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per cell")
    parser.add_argument("--device", default="cuda:0")
    args = parser.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    import ultralytics
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.data.augment import LetterBox

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this sweep is for a GPU machine")
    if not args.weights.is_file():
        raise SystemExit(f"weights not found: {args.weights}")
    device = torch.device(args.device)
    assets = Path(ultralytics.__file__).parent / "assets"
    images = [cv2.imread(str(assets / name)) for name in ("bus.jpg", "zidane.jpg")]
    # FP16 is `quantize=16` in recent Ultralytics, `half=True` before it.
    fp16 = {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}
    model = YOLO(str(args.weights))
    predict_kwargs = {"imgsz": args.imgsz, "device": args.device, "verbose": False, **fp16}
    model.predict(images[0], **predict_kwargs)  # builds the predictor on the GPU, in FP16
    network = model.predictor.model  # AutoBackend, already FP16 and fused
    letterbox = LetterBox((args.imgsz, args.imgsz), auto=False)
    # Whatever precision Ultralytics actually chose, so the figures say what ran.
    dtype = torch.float16 if getattr(network, "fp16", False) else torch.float32

    def sync() -> None:
        torch.cuda.synchronize(device)

    rows = []
    sweep_started = time.perf_counter()
    for batch in args.batches:
        sources = [images[i % len(images)] for i in range(batch)]
        tensor = torch.from_numpy(np.stack([letterbox(image=im)[..., ::-1] for im in sources]))
        tensor = tensor.permute(0, 3, 1, 2).contiguous().to(device).to(dtype).div_(255)

        def forward(x=tensor) -> None:
            with torch.inference_mode():
                network(x)

        def predict(sources=sources) -> None:
            model.predict(sources, **predict_kwargs)

        for mode, step in (("model", forward), ("predict", predict)):
            times = _timed(step, args.seconds, sync)
            row = {
                "mode": mode,
                "batch": batch,
                "images_per_s": batch * len(times) / sum(times),
                "batch_p50_ms": statistics.median(times) * 1000,
                "batch_p95_ms": _percentile(times, 95) * 1000,
                "calls": len(times),
            }
            rows.append(row)
            print(
                f"{mode:>8} batch {batch:>3}: {row['images_per_s']:8.1f} img/s  "
                f"p50 {row['batch_p50_ms']:7.2f} ms  p95 {row['batch_p95_ms']:7.2f} ms",
                flush=True,
            )
        torch.cuda.empty_cache()

    report = {
        "device": torch.cuda.get_device_name(device),
        "weights": str(args.weights),
        "imgsz": args.imgsz,
        "precision": str(dtype).removeprefix("torch."),
        "seconds_per_cell": args.seconds,
        "versions": {
            "torch": torch.__version__,
            "ultralytics": ultralytics.__version__,
            "python": platform.python_version(),
        },
        "rows": rows,
        "wall_s": round(time.perf_counter() - sweep_started, 1),
    }
    print()
    print(f"{report['device']}, {args.weights.name}, imgsz {args.imgsz}, {report['precision']}")
    print("| mode | batch | img/s | batch p50 ms | batch p95 ms |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['batch']} | {r['images_per_s']:.1f} | {r['batch_p50_ms']:.2f} "
            f"| {r['batch_p95_ms']:.2f} |"
        )
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu_sweep.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
