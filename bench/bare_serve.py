"""What Ray Serve's path costs by itself: the project's data path with nothing to do in it.

    .venv/bin/python -m bench.bare_serve            # own Ray cluster on --port-base

An owned head started as for the service (shared/cluster.py: the edge guard in the HTTP proxy,
Serve's fast-path settings, the proxy's health checks), and one application shaped like a
dedicated endpoint: an ingress deployment (Starlette, as ours; it reads the multipart upload as
the real one does) and sends a 640x480x3 uint8 array, what bus.jpg becomes after the letterbox, to
two replicas of a model deployment behind `@serve.batch`, which answer at once. No decode, no
model, no JSON beyond a few bytes. The upload is bus.jpg.

What that measures is the least CPU and latency any request can cost on this path: the bound
of [6/7]'s point 2 (served >= 0.90 x the floor) leaves (1/0.9 - 1) x the floor's CPU per image
for all of it, and its c=1 bound leaves 8 ms. Prints and writes bench/results/bare_serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ray import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench import load
from bench.procmon import TreeMonitor
from bench.rejections import busiest, cpu_by_process
from bench.servers import machine_load, prepare_bench_process
from bench.stats import summarize_level
from shared import cluster
from shared.assets import example_image
from shared.registry import PROJECT_ROOT

LETTERBOXED = (480, 640, 3)  # bus.jpg (1080x810) letterboxed to imgsz 640, as the model gets it


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, num_replicas=2, max_ongoing_requests=16)
class BareModel:
    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0)
    async def predict(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        return [
            {"shape": list(image.shape), "boxes": np.zeros((6, 4), np.float32)} for image in images
        ]


class BareIngressApp:
    """As deployments/ingress.py builds its app: Starlette routes on this replica's instance."""

    def __init__(self, model: Any):
        self.model = model

    def __serve_build_asgi_app__(self) -> Starlette:
        return Starlette(routes=[Route("/predict", self.predict, methods=["POST"])])

    async def predict(self, request: Request) -> JSONResponse:
        form = await request.form()
        upload = form["file"]
        data = await upload.read()  # type: ignore[union-attr]
        image = np.full(LETTERBOXED, len(data) % 251, np.uint8)  # stands in for the decode
        prediction = await self.model.predict.remote(image)
        return JSONResponse({"images": [{"shape": prediction["shape"], "n": 6}]})


BareIngress = serve.deployment(
    name="BareIngress", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64
)(serve.ingress()(BareIngressApp))
app = BareIngress.bind(BareModel.bind())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bare_serve", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured each")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--port-base", type=int, default=21600, help="own cluster: Ray ports")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the cluster (repeatable), to measure a setting",
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    return parser.parse_args(argv)


def serve_config(ports: cluster.ClusterPorts) -> dict[str, Any]:
    project = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    return {
        "proxy_location": project["proxy_location"],
        "http_options": {**project["http_options"], "port": ports.http},
        "applications": [
            {
                "name": "bare",
                "route_prefix": "/endpoints/bare",
                "import_path": "bench.bare_serve:app",
                "runtime_env": project["applications"][0]["runtime_env"],
            }
        ],
    }


def measure(url: str, pid: int, levels: list[int], duration_s: float, warmup_s: float) -> list:
    upload = load.Upload.build("bus.jpg", example_image("bus.jpg").read_bytes(), {"imgsz": "640"})
    rows = []
    for concurrency in levels:
        monitor = TreeMonitor(pid)
        monitor.start()
        snapshot = (time.perf_counter(), cpu_by_process(pid))
        cpu = time.process_time()
        result = asyncio.run(load.run_level(url, {}, [upload], concurrency, duration_s, warmup_s))
        client_cpu = (time.process_time() - cpu) / (duration_s + warmup_s)
        usage = monitor.stop()
        row: dict[str, Any] = {"concurrency": concurrency}
        row.update(summarize_level(result.latencies_s, result.wall_s, result.errors))
        row["statuses"] = dict(result.statuses)
        row["server_cpu_cores"] = usage.cpu_cores
        row["client_cpu_cores"] = client_cpu
        rate = row["images_per_s"]
        row["server_cpu_ms_per_request"] = usage.cpu_cores / rate * 1000 if rate else None
        by_process = busiest(
            snapshot[1], cpu_by_process(pid), time.perf_counter() - snapshot[0], top=12
        )
        row["cpu_ms_per_request_by_process"] = {
            name: round(cores / rate * 1000, 2) if rate else None
            for name, cores in by_process.items()
        }
        rows.append(row)
        print(
            f"c={concurrency}: {rate:.1f} req/s, p50 {row['p50_ms']:.1f} ms, "
            f"p99 {row['p99_ms']:.1f} ms, server {usage.cpu_cores:.2f} cores = "
            f"{row['server_cpu_ms_per_request'] or 0:.1f} ms CPU per request, client "
            f"{client_cpu:.2f} cores, {dict(result.statuses)}",
            flush=True,
        )
        print(f"  ms of CPU per request: {row['cpu_ms_per_request_by_process']}", flush=True)
    return rows


def idle_cores(pid: int, seconds: float) -> float:
    monitor = TreeMonitor(pid)
    monitor.start()
    time.sleep(seconds)
    return monitor.stop().cpu_cores


def main(argv: list[str] | None = None) -> int:
    prepare_bench_process()
    args = parse_args(argv)
    ports = cluster.ClusterPorts.block(args.port_base)
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench.bare_serve", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine load before": machine_load(),
    }
    with tempfile.TemporaryDirectory(prefix="yolo-bare-") as tmp:
        config = Path(tmp) / "bare.yaml"
        config.write_text(yaml.safe_dump(serve_config(ports), sort_keys=False))
        print(f"starting Ray on ports {args.port_base}-{args.port_base + 6}", flush=True)
        extra_env = dict(item.split("=", 1) for item in args.env)
        report["env"] = extra_env
        head = cluster.start_owned_head(ports, extra_env=extra_env)
        try:
            cluster.deploy(config, ports)
            cluster.wait_running(ports, ["bare"])
            time.sleep(5)  # let the fresh cluster's start-up work settle
            report["idle_cores"] = idle_cores(head.pid, 15)
            print(f"idle: {report['idle_cores']:.3f} cores", flush=True)
            url = f"http://127.0.0.1:{ports.http}/endpoints/bare/predict"
            report["levels"] = measure(url, head.pid, args.levels, args.duration, args.warmup)
        finally:
            cluster.stop_owned_head(head)
    report["machine load after"] = machine_load()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bare_serve.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
