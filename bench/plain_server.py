"""The baseline users would write: one FastAPI/uvicorn process calling Ultralytics `predict`.

Written the way the FastAPI and Ultralytics docs lead you to: the model loaded once at import,
an `async def` route that reads the upload, decodes it with OpenCV and calls `model.predict`
inline. (A plain `def` route would run in FastAPI's thread pool, where concurrent `predict` calls
on one model share its predictor: Ultralytics serialises them with a lock at best.) Torch keeps
the thread count Ultralytics gives it unless `--torch-threads` says otherwise, and the response
carries the same spec fields as ours, so both do the same work per request.

    python -m bench.plain_server --weights .weights/yolo26n.pt --port 8100
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Annotated, Any

import cv2
import numpy as np
import uvicorn
from fastapi import FastAPI, File, Form, HTTPException, UploadFile

# Ultralytics is told to stay off the network before it is imported.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

from ultralytics import YOLO


def create_app(weights: str, torch_threads: int | None = None) -> FastAPI:
    model = YOLO(weights)
    model.predict(np.zeros((640, 640, 3), np.uint8), verbose=False)  # warm up
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    app = FastAPI()

    @app.get("/info")
    async def info() -> dict[str, Any]:
        import torch

        return {"torch_threads": torch.get_num_threads(), "pid": os.getpid()}

    @app.post("/predict")
    async def predict(
        file: Annotated[UploadFile, File()],
        conf: Annotated[float, Form()] = 0.25,
        iou: Annotated[float, Form()] = 0.7,
        imgsz: Annotated[int, Form()] = 640,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        data = await file.read()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise HTTPException(400, "Invalid image")
        result = model.predict(image, conf=conf, iou=iou, imgsz=imgsz, verbose=False)[0]
        boxes = result.boxes
        detections = [
            {
                "class": int(c),
                "name": result.names[int(c)],
                "confidence": round(float(p), 5),
                "box": dict(
                    zip(("x1", "y1", "x2", "y2"), (round(v, 5) for v in xyxy), strict=True)
                ),
            }
            for c, p, xyxy in zip(
                boxes.cls.tolist(), boxes.conf.tolist(), boxes.xyxy.tolist(), strict=True
            )
        ]
        height, width = image.shape[:2]
        return {
            "images": [
                {
                    "results": detections,
                    "shape": [height, width],
                    "speed": result.speed,
                }
            ],
            "metadata": {"functionTimeCall": round(time.perf_counter() - started, 4)},
        }

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--torch-threads", type=int, default=None)
    args = parser.parse_args(argv)
    app = create_app(args.weights, args.torch_threads)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
