"""A 12-megapixel JPEG against a 1-megapixel one, end to end at c=1 through the dedicated route.

Both are bus.jpg resized (Lanczos) and saved at JPEG quality 90, so only the pixel count
differs. The ingress decodes the large one at reduced size (libjpeg's 1/4 scale: 1000 px on the
long side for imgsz 640), so it should cost little more than the small one: upload and the
reduced decode are the difference. Requests alternate between the two sizes so drifting load
hits both alike.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import time
from typing import Any

import aiohttp
from PIL import Image

from bench import load
from shared.assets import example_image

SIZES = {"1 MP": (866, 1155), "12 MP": (3000, 4000)}  # width x height, bus.jpg's 3:4
BOUND = 1.2


def photos() -> dict[str, bytes]:
    with Image.open(example_image("bus.jpg")) as source:
        rgb = source.convert("RGB")
        out = {}
        for name, size in SIZES.items():
            buffer = io.BytesIO()
            rgb.resize(size, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=90)
            out[name] = buffer.getvalue()
    return out


async def _measure(
    url: str, headers: dict[str, str], uploads: dict[str, load.Upload], rounds: int
) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {name: [] for name in uploads}
    async with aiohttp.ClientSession() as session:
        for i in range(rounds + 2):
            for name, upload in uploads.items():
                started = time.perf_counter()
                status, body = await load.fetch_json(url, headers, upload, session)
                if status != 200:
                    raise RuntimeError(f"{name}: HTTP {status}: {body}")
                if i >= 2:  # two warm-up rounds
                    latencies[name].append((time.perf_counter() - started) * 1000)
    return latencies


def measure(url: str, headers: dict[str, str], imgsz: int, rounds: int = 20) -> dict[str, Any]:
    """Median latency per size and their ratio, with the target row for the report."""
    fields = {"conf": "0.25", "iou": "0.7", "imgsz": str(imgsz)}
    data = photos()
    uploads = {name: load.Upload.build(f"{name}.jpg", blob, fields) for name, blob in data.items()}
    latencies = asyncio.run(_measure(url, headers, uploads, rounds))
    medians = {name: statistics.median(values) for name, values in latencies.items()}
    ratio = medians["12 MP"] / medians["1 MP"]
    return {
        "files": {n: f"{w}x{h}, {len(data[n]) / 1e6:.2f} MB" for n, (w, h) in SIZES.items()},
        "p50_ms": medians,
        "rounds": rounds,
        "target": {
            "target": "12 MP / 1 MP JPEG p50 at c=1 (dedicated, imgsz 640)",
            "value": ratio,
            "bound": f"<= {BOUND}",
            "met": ratio <= BOUND,
            "detail": f"{medians['12 MP']:.1f} ms vs {medians['1 MP']:.1f} ms",
        },
    }
