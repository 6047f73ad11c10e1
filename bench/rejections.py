"""What refusing costs: 401s and 429s answered per second, and what a flood of them takes from a
dedicated endpoint's throughput.

    .venv/bin/python -m bench.rejections            # own Ray cluster (bench/servers.py:RayServe)
    .venv/bin/python -m bench.rejections --url http://127.0.0.1:8000 --keys-file .keys/keys.json

Measured with closed-loop clients, `--concurrency` of them (32) per flood (bench/flood.py's
prepared requests on keep-alive sockets; `--flood-client aiohttp` for bench/load.py's):
- 401: a random, well-formed but unknown `ul_` key on POST /api/models/{model}/predict, a tiny
  PNG attached;
- 429: a key of its own created with `rate_limit=1` (one request per window), spent with one
  request, then hammered the same way (a fresh key per measurement, well inside the window);
- the dedicated endpoint POST /endpoints/{model}/predict at `--load-concurrency` (4), bus.jpg and
  zidane.jpg alternating: alone, during the 401 flood, during the 429 flood, and alone again.
  Each flood runs in a process of its own, so the measuring client's event loop is not the
  flood's; both share the machine's cores with the server, as a real flood on one host would.

Against a running server (`--url`), the keys are created in its `--keys-file` (which the
ingress re-reads when it changes) under names starting `bench-rejections-`, and revoked at the
end. Prints a table and writes bench/results/rejections.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

from bench import flood, load
from bench.procmon import TreeMonitor
from bench.servers import RayServe, machine_load, prepare_bench_process
from bench.stats import summarize_level
from shared import cluster, keys
from shared.assets import EXAMPLES, example_image
from shared.registry import PROJECT_ROOT

SPEND_TIMEOUT_S = 15.0  # a new key must be admitted once within this (the ring re-reads files)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rejections", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--url",
        help="a running server, e.g. http://127.0.0.1:8000 as `make serve` gives "
        "(default: start an own Ray cluster on --port-base, as bench.run does)",
    )
    parser.add_argument(
        "--keys-file",
        type=Path,
        default=PROJECT_ROOT / ".keys" / "keys.json",
        help="with --url: the server's key store, where the test keys are created",
    )
    parser.add_argument("--model", default="yolo26n")
    parser.add_argument("--concurrency", type=int, default=32, help="clients per flood")
    parser.add_argument("--load-concurrency", type=int, default=4, help="dedicated endpoint")
    parser.add_argument(
        "--flood-client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="raw: prepared requests on keep-alive sockets (bench/flood.py), so the flood's "
        "own CPU takes little from the server; aiohttp: bench/load.py's clients, as before",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured each")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=6.0,
        help="seconds of unmeasured load on the endpoint first (a fresh cluster runs slow)",
    )
    parser.add_argument("--port-base", type=int, default=21500, help="own cluster: Ray ports")
    parser.add_argument("--config", type=Path, default=PROJECT_ROOT / "serve_config.yaml")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    return parser.parse_args(argv)


def tiny_png() -> bytes:
    ok, data = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
    assert ok
    return data.tobytes()


def rate_row(result: load.LevelResult, cpu_cores: float | None = None) -> dict[str, Any]:
    """One measurement: the expected answers per second and their latencies, all statuses."""
    row: dict[str, Any] = dict(summarize_level(result.latencies_s, result.wall_s, result.errors))
    row["statuses"] = dict(result.statuses)
    if cpu_cores is not None:
        row["server_cpu_cores"] = cpu_cores
    return row


def cpu_by_process(root_pid: int) -> dict[int, tuple[str, float]]:
    """pid -> (name, CPU seconds so far) for every process in the tree under `root_pid`."""
    out: dict[int, tuple[str, float]] = {}
    try:
        processes = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                name = " ".join(process.cmdline()[:1]) or process.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out[process.pid] = (_short(name), times.user + times.system)
    return out


def busiest(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    wall_s: float,
    top: int = 6,
) -> dict[str, float]:
    """The processes that used the most CPU between two snapshots, as cores (same names summed)."""
    cores: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        used = cpu - before.get(pid, (name, 0.0))[1]
        cores[name] = cores.get(name, 0.0) + used / wall_s
    ranked = sorted(cores.items(), key=lambda item: -item[1])[:top]
    return {name: round(value, 3) for name, value in ranked}


def _short(name: str) -> str:
    name = name.removeprefix("ray::")
    if "/" in name:
        name = name.rsplit("/", 1)[-1]
    return name[:60]


def flood_ratio(alone: list[float], during: float) -> float:
    """The endpoint's rate under a flood over its mean rate alone (measured before and after)."""
    base = statistics.fmean(alone)
    return during / base if base > 0 else float("nan")


def _flood(
    url: str,
    headers: dict[str, str],
    upload: load.Upload,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    ok_status: int,
    client: str,
    measuring: Any,
    out: Any,
) -> None:
    """A flood in a process of its own: warm up, say so, measure, send back the result."""

    async def with_aiohttp() -> load.LevelResult:
        await load.run_level(url, headers, [upload], concurrency, warmup_s, 0, ok_status)
        measuring.set()
        return await load.run_level(url, headers, [upload], concurrency, duration_s, 0, ok_status)

    cpu = time.process_time()
    if client == "raw":
        args = (url, headers, upload, concurrency, duration_s, warmup_s, ok_status)
        result = flood.run_flood(*args, on_measuring=measuring.set)
    else:
        result = asyncio.run(with_aiohttp())
    out.put((result, (time.process_time() - cpu) / result.wall_s))


class Rejections:
    def __init__(self, args: argparse.Namespace, base_url: str, keys_file: Path, pid: int | None):
        self.args = args
        self.keys_file = keys_file
        self.pid = pid  # the server's process tree, when it is ours to measure
        self.shared_url = f"{base_url}/api/models/{args.model}/predict"
        self.dedicated_url = f"{base_url}/endpoints/{args.model}/predict"
        self.png = load.Upload.build("tiny.png", tiny_png(), {})
        fields = {"conf": "0.25", "iou": "0.7", "imgsz": "640"}
        self.images = [
            load.Upload.build(n, example_image(n).read_bytes(), fields) for n in EXAMPLES
        ]
        self.created: list[str] = []
        self.context = multiprocessing.get_context("spawn")

    def log(self, message: str) -> None:
        print(f"[rejections {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def new_key(self, rate_limit: int | None) -> str:
        name = f"bench-rejections-{secrets.token_hex(4)}"
        key = keys.create_key(self.keys_file, name, rate_limit=rate_limit)
        self.created.append(name)
        return key

    def revoke_all(self) -> None:
        for name in self.created:
            keys.revoke_key(self.keys_file, name)

    def spent_key(self) -> dict[str, str]:
        """Headers with a fresh rate_limit=1 key whose one request has been made."""
        headers = {"Authorization": f"Bearer {self.new_key(rate_limit=1)}"}
        deadline = time.monotonic() + SPEND_TIMEOUT_S
        while True:
            status, body = asyncio.run(load.fetch_json(self.shared_url, headers, self.png))
            if status == 200:
                break
            if status != 401 or time.monotonic() > deadline:
                raise RuntimeError(f"spending the 429 key: HTTP {status}: {body}")
            time.sleep(0.5)  # the ingress has not re-read the key store yet
        status, body = asyncio.run(load.fetch_json(self.shared_url, headers, self.png))
        if status != 429:
            raise RuntimeError(f"a spent rate_limit=1 key got HTTP {status}: {body}")
        return headers

    def _monitor(self) -> TreeMonitor | None:
        if self.pid is None:
            return None
        monitor = TreeMonitor(self.pid)
        monitor.start()
        self._snapshot = (time.perf_counter(), cpu_by_process(self.pid))
        return monitor

    def _busiest(self, row: dict[str, Any]) -> None:
        if self.pid is None:
            return
        started, before = self._snapshot
        row["server_cpu_by_process"] = busiest(
            before, cpu_by_process(self.pid), time.perf_counter() - started
        )

    def measure(self, headers: dict[str, str], ok_status: int) -> dict[str, Any]:
        """A flood alone, in its own process like the floods under load."""
        finish = self._start_flood(headers, ok_status, self.args.duration)
        monitor = self._monitor()  # from when the flood's warm-up is over
        row = finish()
        if monitor:
            row["server_cpu_cores"] = monitor.stop().cpu_cores
        self._busiest(row)
        return row

    def dedicated(self, headers: dict[str, str]) -> dict[str, Any]:
        monitor = self._monitor()
        result = asyncio.run(
            load.run_level(
                self.dedicated_url,
                headers,
                self.images,
                self.args.load_concurrency,
                self.args.duration,
                self.args.warmup,
            )
        )
        row = rate_row(result, monitor.stop().cpu_cores if monitor else None)
        self._busiest(row)
        return row

    def dedicated_under_flood(
        self, load_headers: dict[str, str], flood_headers: dict[str, str], ok_status: int
    ) -> dict[str, Any]:
        # The flood outlasts the endpoint's warm-up and measured window.
        finish = self._start_flood(
            flood_headers, ok_status, self.args.warmup + self.args.duration + 1.0
        )
        row = self.dedicated(load_headers)
        row["flood"] = finish()
        return row

    def _start_flood(self, headers: dict[str, str], ok_status: int, duration_s: float):
        measuring = self.context.Event()
        out = self.context.Queue()
        process = self.context.Process(
            target=_flood,
            args=(
                self.shared_url,
                headers,
                self.png,
                self.args.concurrency,
                duration_s,
                self.args.warmup,
                ok_status,
                self.args.flood_client,
                measuring,
                out,
            ),
        )
        process.start()
        if not measuring.wait(timeout=60):
            process.kill()
            raise RuntimeError("the flood did not start")

        def finish() -> dict[str, Any]:
            result, client_cpu = out.get(timeout=duration_s + 60)
            process.join(timeout=10)
            row = rate_row(result)
            row["client_cpu_cores"] = client_cpu
            return row

        return finish

    def run(self, load_key: str) -> dict[str, Any]:
        good = {"Authorization": f"Bearer {load_key}"}
        status, body = asyncio.run(load.fetch_json(self.dedicated_url, good, self.images[0]))
        if status != 200:
            raise RuntimeError(f"dedicated endpoint: HTTP {status}: {body}")
        unknown = {"Authorization": f"Bearer {keys.generate_key()}"}  # never stored
        if self.args.settle > 0:
            self.log(f"settling: {self.args.settle:.0f} s of unmeasured load")
            asyncio.run(
                load.run_level(
                    self.dedicated_url,
                    good,
                    self.images,
                    self.args.load_concurrency,
                    0.1,
                    self.args.settle,
                )
            )
        rows: dict[str, Any] = {}
        steps = (
            ("401 alone", lambda: self.measure(unknown, 401)),
            ("429 alone", lambda: self.measure(self.spent_key(), 429)),
            ("dedicated alone (before)", lambda: self.dedicated(good)),
            ("dedicated during 401 flood", lambda: self.dedicated_under_flood(good, unknown, 401)),
            (
                "dedicated during 429 flood",
                lambda: self.dedicated_under_flood(good, self.spent_key(), 429),
            ),
            ("dedicated alone (after)", lambda: self.dedicated(good)),
        )
        for name, step in steps:
            rows[name] = step()
            self.log(f"{name}: {_line(rows[name])}")
        alone = [rows[k]["images_per_s"] for k in rows if k.startswith("dedicated alone")]
        ratios = {
            code: flood_ratio(alone, rows[f"dedicated during {code} flood"]["images_per_s"])
            for code in ("401", "429")
        }
        return {"rows": rows, "dedicated under flood / alone": ratios}


def _line(row: dict[str, Any]) -> str:
    text = f"{row['images_per_s']:.1f}/s p50 {row['p50_ms']:.1f} ms {row['statuses']}"
    if "server_cpu_cores" in row:
        text += f" server cpu {row['server_cpu_cores']:.2f}"
    if "flood" in row:
        text += f"; flood {row['flood']['images_per_s']:.0f}/s {row['flood']['statuses']}"
    if "server_cpu_by_process" in row:
        text += f"; busiest {row['server_cpu_by_process']}"
    return text


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| measurement | answers/s | p50 ms | p99 ms | server CPU (cores) | flood client CPU | "
        "flood answers/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["rows"].items():
        flood = row.get("flood", row if "alone" in name and "dedicated" not in name else None)
        server = row.get("server_cpu_cores")
        cells = [
            f"{row['images_per_s']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{server:.2f}" if server is not None else "-",
            f"{flood['client_cpu_cores']:.2f}" if flood else "-",
            f"{flood['images_per_s']:.0f}" if flood else "-",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for code, ratio in report["dedicated under flood / alone"].items():
        lines.append(f"- dedicated img/s during the {code} flood / alone: {ratio:.2f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    prepare_bench_process()
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = machine_load()
    with contextlib.ExitStack() as stack:
        if args.url:
            base_url, keys_file, pid = args.url.rstrip("/"), args.keys_file, None
            bench = Rejections(args, base_url, keys_file, pid)
            stack.callback(bench.revoke_all)
            load_key = bench.new_key(rate_limit=None)  # dedicated: counts nothing
            time.sleep(1.5)  # let the ingress re-read its key store
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="yolo-rej-")))
            print(f"starting Ray on ports {args.port_base}-{args.port_base + 5}", flush=True)
            ray = RayServe(cluster.ClusterPorts.block(args.port_base), tmp, args.config)
            stack.callback(ray.close)
            bench = Rejections(args, ray.base_url, tmp / "keys.json", ray.pid)
            load_key = ray.endpoint_key
        report = bench.run(load_key)
    report = {
        "command": " ".join(["python -m bench.rejections", *(argv or sys.argv[1:])]),
        "started": started,
        "server": args.url or "own Ray cluster: serve_config.yaml + bench/servers.py overrides",
        "concurrency": args.concurrency,
        "flood client": args.flood_client,
        "load concurrency": args.load_concurrency,
        "seconds": f"{args.duration} measured + {args.warmup} warm-up (after {args.settle} s)",
        "machine load before": load_before,
        "machine load after": machine_load(),
        **report,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rejections.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
