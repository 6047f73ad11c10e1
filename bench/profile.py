"""Where a request's time goes in our stack: py-spy on the proxy, ingress and model replica while
the load generator runs.

    .venv/bin/python -m bench.profile                          # dedicated, c=1 and c=8, 10 s
    .venv/bin/python -m bench.profile --target shared --concurrency 8 --arg backend=torch

For each process it prints the CPU it used (cores), the busiest leaf functions, and the share of
samples inside the steps of the request path (decode, multipart parsing, the network, pre- and
post-processing...). py-spy samples without pausing the processes (--nonblocking), at 100 Hz.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import psutil
import yaml

from bench import load
from bench.server_timing import parse_server_timing
from bench.servers import RayServe
from shared import cluster
from shared.assets import EXAMPLES, example_image
from shared.registry import PROJECT_ROOT

# Function names whose inclusive share is reported: the steps of the request path.
STEPS = {
    "ProxyActor": ["proxy_request", "send_request_to_replica", "receive_asgi_messages"],
    "Ingress": [
        "read_upload",
        "decode_image",
        "parse_params",
        "predict",
        "shape_results",
        "shape_response",
        "render",
    ],
    "Model": [
        "_batched",
        "_infer",
        "run",
        "cvtColor",
        "preprocess",
        "pre_transform",
        "inference",
        "postprocess",
        "to_prediction",
        "setup_source",
    ],
}


def summarize(raw: Path, steps: list[str], top: int = 12) -> dict:
    """Collapsed stacks ("f1;f2;...;fn count" per line) -> sample counts by leaf and by step."""
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaves[frames[-1]] += count
        # Frames read "Class.method (package/file.py)": a step matches the method's own name.
        names = {frame.split(" (")[0].strip().rpartition(".")[2] for frame in frames}
        for step in steps:
            if step in names:
                inclusive[step] += count
    return {
        "samples": total,
        "top_leaves": [(leaf, n / total) for leaf, n in leaves.most_common(top)] if total else [],
        "steps": {s: inclusive[s] / total for s in steps} if total else {},
    }


def _pids(head_pid: int, app: str, model_deployment: str) -> dict[str, int]:
    """The proxy's, the app's ingress' and its model replica's process IDs."""
    titles = {
        "ProxyActor": "ProxyActor",
        "Ingress": f"ServeReplica:{app}:Ingress",
        "Model": f"ServeReplica:{app}:{model_deployment}",
    }
    found: dict[str, int] = {}
    for process in psutil.Process(head_pid).children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        for role, marker in titles.items():
            if marker in title:
                found[role] = process.pid
    return found


async def breakdown(
    url: str, headers: dict[str, str], uploads: list[load.Upload], n: int = 40
) -> dict[str, list[float]]:
    """One request at a time: the client's latency split by the ingress' `Server-Timing`.

    The ingress times its phases (upload read, decode, the model call, the JSON answer) and the
    model's own work (Ultralytics' preprocess + inference + postprocess, `speed`); the client's
    latency beyond the ingress' total is the HTTP proxy and the hop to the ingress.
    """
    parts: dict[str, list[float]] = collections.defaultdict(list)
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            started = time.perf_counter()
            status, response_headers, body = await load.fetch(
                url, headers, uploads[i % len(uploads)], session
            )
            _split(parts, (time.perf_counter() - started) * 1000, status, response_headers, body)
    return parts


def _split(
    parts: dict[str, list[float]],
    total: float,
    status: int,
    headers: dict[str, str],
    body: dict,
) -> None:
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body}")
    timing = parse_server_timing(headers.get("Server-Timing", ""))
    speed = body["images"][0]["speed"]
    parts["client total"].append(total)
    parts["proxy and HTTP (client total - ingress total)"].append(total - timing["total"])
    parts["ingress: upload read and parameters"].append(timing["upload"])
    parts["ingress: decode"].append(timing["decode"])
    parts["model call outside the replica (handle, router, array transfer)"].append(
        timing["model"] - timing["replica"]
    )
    parts["model replica: batch queue"].append(timing["queue"])
    parts["model replica: beyond queue and model (threads, batching, BGR)"].append(
        timing["replica"] - timing["queue"] - timing["inference"]
    )
    for key, value in speed.items():
        parts[f"model {key}"].append(value)
    parts["ingress: results and JSON"].append(timing["respond"])


def print_breakdown(parts: dict[str, list[float]]) -> None:
    print("\n== one request at a time: median ms")
    for name, values in parts.items():
        print(f"   {statistics.median(values):7.1f}  {name}")


def _load_in_background(
    url: str, headers: dict[str, str], uploads: list[load.Upload], concurrency: int, seconds: float
) -> tuple[threading.Thread, list[load.LevelResult]]:
    result: list[load.LevelResult] = []

    def drive() -> None:
        result.append(asyncio.run(load.run_level(url, headers, uploads, concurrency, seconds, 1)))

    thread = threading.Thread(target=drive)
    thread.start()
    return thread, result


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("dedicated", "shared"), default="dedicated")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--model", default="yolo26n")
    parser.add_argument("--port-base", type=int, default=21500)
    parser.add_argument("--arg", action="append", default=[], metavar="KEY=YAML")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    # `kill` should still stop the Ray cluster this started.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    app_args = {}
    for item in args.arg:
        key, _, value = item.partition("=")
        app_args[key] = yaml.safe_load(value)

    fields = {"conf": "0.25", "iou": "0.7", "imgsz": "640"}
    uploads = [load.Upload.build(n, example_image(n).read_bytes(), fields) for n in EXAMPLES]
    ports = cluster.ClusterPorts.block(args.port_base)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yolo-profile-") as tmp:
        ray = RayServe(ports, Path(tmp), PROJECT_ROOT / "serve_config.yaml", app_args)
        try:
            path = (
                f"/endpoints/{args.model}/predict"
                if args.target == "dedicated"
                else f"/api/models/{args.model}/predict"
            )
            url = ray.base_url + path
            key = ray.endpoint_key if args.target == "dedicated" else ray.key
            headers = {"Authorization": f"Bearer {key}"}
            if args.target == "dedicated":
                pids = _pids(ray.pid, args.model, "Model")
            else:
                pids = _pids(ray.pid, "shared", "ModelPool")
            asyncio.run(load.run_level(url, headers, uploads, 2, 3, 1))  # warm every path
            print_breakdown(asyncio.run(breakdown(url, headers, uploads)))
            for concurrency in args.concurrency:
                loader, result = _load_in_background(
                    url, headers, uploads, concurrency, args.seconds + 2
                )
                time.sleep(1.5)
                spies, cpu_before = {}, {}
                for role, pid in pids.items():
                    raw = args.out / f"profile-{args.target}-c{concurrency}-{role}.txt"
                    spies[role] = (
                        subprocess.Popen(
                            [
                                str(cluster.BIN / "py-spy"),
                                "record",
                                "--pid",
                                str(pid),
                                "--duration",
                                str(int(args.seconds)),
                                "--format",
                                "raw",
                                "--nolineno",
                                "--nonblocking",
                                "--output",
                                str(raw),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        ),
                        raw,
                    )
                    times = psutil.Process(pid).cpu_times()
                    cpu_before[role] = (times.user + times.system, time.perf_counter())
                for spy, _ in spies.values():
                    spy.wait()
                cpu = {}
                for role, pid in pids.items():
                    times = psutil.Process(pid).cpu_times()
                    used, started = cpu_before[role]
                    cpu[role] = (times.user + times.system - used) / (time.perf_counter() - started)
                loader.join()
                level = result[0]
                rate = len(level.latencies_s) / level.wall_s
                print(f"\n== {args.target} c={concurrency}: {rate:.2f} img/s", flush=True)
                for role, (_, raw) in spies.items():
                    if not raw.exists():
                        print(f"-- {role}: no profile")
                        continue
                    summary = summarize(raw, STEPS[role])
                    print(
                        f"-- {role} (pid {pids[role]}): {cpu[role]:.2f} cores, "
                        f"{summary['samples']} samples"
                    )
                    steps = ", ".join(f"{k} {100 * v:.0f}%" for k, v in summary["steps"].items())
                    print(f"   steps (inclusive): {steps}")
                    for leaf, share in summary["top_leaves"]:
                        print(f"   {100 * share:5.1f}%  {leaf}")
        finally:
            ray.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
