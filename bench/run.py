"""One command, one run: the raw model, a plain FastAPI server and our two routes, side by side.

    .venv/bin/python -m bench.run            # the full sweep (median of 3, ~12 min on 2 cores)
    .venv/bin/python -m bench.run --quick    # a smoke run (~3 min)

Measured, on the same images (bus.jpg, zidane.jpg, alternating) and model:
- `raw`: Ultralytics `predict(path)` in one process, one image after another (decode included);
  `raw-arrays` is the same on pre-decoded arrays (the model's work alone);
- `floor`: no serving at all: one process per core (--floor-procs), each loading the model as a
  one-CPU replica does (bench/floor.py: the default backend, one inference thread), decoding the
  JPEG's bytes with OpenCV and running `predict`, closed loop; images/s summed over processes;
- `plain`: bench/plain_server.py (FastAPI + uvicorn, one process) over HTTP;
- `shared`: POST /api/models/{model}/predict, and `dedicated`: POST /endpoints/{model}/predict,
  on a Ray cluster of our own (port block --port-base) running serve_config.yaml with the
  settings in bench/servers.py:BENCH_OVERRIDES.
HTTP targets are driven by closed-loop clients at each concurrency level. Raw/plain run first,
without Ray on the machine; then Ray starts and the routes are measured, so nothing measured
shares the CPU with another idle server (`--interleave`: everything up at once, targets
alternated per level, for a machine whose load drifts). Outputs: results.json, results.md,
results.png in --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench import large_photos, load, report
from bench.procmon import TreeMonitor
from bench.servers import (
    BENCH_OVERRIDES,
    FloorWorker,
    PlainServer,
    RawWorker,
    RayServe,
    machine_load,
    prepare_bench_process,
)
from bench.stats import (
    evaluate_targets,
    floor_ratios,
    median_of_runs,
    summarize_level,
    summarize_parallel,
)
from shared import cluster
from shared.assets import EXAMPLES, example_image
from shared.registry import PROJECT_ROOT, load_registry

HTTP_TARGETS = ("plain", "shared", "dedicated")
ALL_TARGETS = ("raw", "raw-arrays", "floor", *HTTP_TARGETS)
QUIET_LOADAVG = 0.5  # 1-minute load average below which the machine counts as quiet
PHASED = "phased (raw, floor, plain; then Ray)"
BOX_TOLERANCE_PX = 2.0  # OpenCV and Pillow decode JPEGs a little differently


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="1 run, short levels: a smoke test")
    parser.add_argument("--repeats", type=int, help="runs per level (median); default 3, quick 1")
    parser.add_argument("--duration", type=float, help="seconds measured per level (default 8)")
    parser.add_argument("--warmup", type=float, help="seconds per level before measuring")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--targets", nargs="+", choices=ALL_TARGETS, default=list(ALL_TARGETS))
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="all servers up together, targets alternated per level (for a machine under load)",
    )
    parser.add_argument("--model", default="yolo26n")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--port-base", type=int, default=21500, help="Ray ports base..base+5")
    parser.add_argument("--config", type=Path, default=PROJECT_ROOT / "serve_config.yaml")
    parser.add_argument("--plain-threads", type=int, help="torch threads in the plain server")
    parser.add_argument("--raw-threads", type=int, help="torch threads for raw (default: cores)")
    parser.add_argument(
        "--floor-procs",
        type=int,
        default=os.cpu_count() or 1,
        help="floor: model processes side by side, one inference thread each (default: cores)",
    )
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="an app arg for every Ray app, e.g. backend=torch or batching={max_batch_size: 1}",
    )
    parser.add_argument(
        "--dedicated-key",
        choices=("plain", "limited"),
        default="plain",
        help="the dedicated route's key: without a limit of its own (uncounted, the default), "
        "or the shared route's key with its own limit (a limiter call per request)",
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.duration = args.duration or (2.5 if args.quick else 8.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.5)
    args.app_args = {}
    for item in args.arg:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--arg {item!r}: expected KEY=VALUE")
        args.app_args[key] = yaml.safe_load(value)
    return args


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.spec = load_registry()[args.model]
        self.images = [example_image(name) for name in EXAMPLES]
        fields = {"conf": "0.25", "iou": "0.7", "imgsz": str(args.imgsz)}
        self.uploads = [load.Upload.build(p.name, p.read_bytes(), fields) for p in self.images]
        self.large: dict[str, Any] | None = None  # bench/large_photos.py, after the Ray levels
        self.runs: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.notes: dict[str, Any] = {}
        self.agreement: dict[str, str] = {}
        self.reference: list[dict[str, Any]] | None = None
        self.floor_detections: list[dict[str, Any]] | None = None
        self.served: dict[str, list[dict[str, Any]]] = {}  # each route's answers, per image
        self.ray_urls: dict[str, str] = {}
        self.ray_headers: dict[str, dict[str, str]] = {}  # per route
        self.me = psutil.Process()

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- measuring ------------------------------------------------------------------------
    def _record(
        self,
        target: str,
        concurrency: int,
        summary: dict,
        monitor: TreeMonitor,
        client_cpu_s: float,
    ) -> None:
        usage = monitor.stop()
        row = {**summary, **usage.as_dict(), "client_cpu_cores": client_cpu_s / usage.wall_s}
        self.runs[target][concurrency].append(row)
        self.log(
            f"{target:>10} c={concurrency:<3} {row['images_per_s']:6.2f} img/s  "
            f"p50 {row['p50_ms']:6.1f}  p99 {row['p99_ms']:7.1f} ms  "
            f"cpu {row['cpu_cores']:.2f}  rss {row['peak_rss_mb']:.0f} MB  err {row['errors']}"
        )

    def measure_raw(self, worker: RawWorker, source: str) -> None:
        target = "raw" if source == "files" else "raw-arrays"
        monitor = TreeMonitor(worker.pid)
        monitor.start()
        cpu = self._cpu()
        answer = worker.ask(
            cmd="run", source=source, duration_s=self.args.duration, warmup_s=self.args.warmup
        )
        summary = summarize_level(answer["latencies_s"], answer["wall_s"])
        self._record(target, 1, summary, monitor, self._cpu() - cpu)

    def measure_floor(self, floor: FloorWorker) -> None:
        monitor = TreeMonitor(floor.pid)
        monitor.start()
        cpu = self._cpu()
        answer = floor.ask(cmd="run", duration_s=self.args.duration, warmup_s=self.args.warmup)
        summary = summarize_parallel(answer["parts"])
        self._record("floor", len(answer["parts"]), summary, monitor, self._cpu() - cpu)

    def measure_http(
        self, target: str, pid: int, url: str, headers: dict[str, str], concurrency: int
    ) -> None:
        monitor = TreeMonitor(pid)
        monitor.start()
        cpu = self._cpu()
        result = asyncio.run(
            load.run_level(
                url, headers, self.uploads, concurrency, self.args.duration, self.args.warmup
            )
        )
        if result.first_error:
            self.notes[f"{target} c={concurrency} first error"] = result.first_error
        summary = summarize_level(result.latencies_s, result.wall_s, result.errors)
        self._record(target, concurrency, summary, monitor, self._cpu() - cpu)

    def _cpu(self) -> float:
        times = self.me.cpu_times()
        return times.user + times.system

    def check(self, target: str, url: str, headers: dict[str, str]) -> None:
        """Every server must find what the raw model finds, or its speed means nothing."""
        bodies = []
        for image, upload in zip(self.images, self.uploads, strict=True):
            status, body = asyncio.run(load.fetch_json(url, headers, upload))
            if status != 200:
                raise RuntimeError(f"{target}: HTTP {status} for {image.name}: {body}")
            bodies.append(body)
        self.served[target] = bodies
        self._agree(target, "raw", bodies, self.reference or [])

    def _agree(
        self, target: str, against: str, bodies: list[dict], expected: list[dict[str, Any]]
    ) -> None:
        problems = []
        for image, body, want in zip(self.images, bodies, expected, strict=False):
            problems += [f"{image.name}: {p}" for p in _compare(body, want)]
        name = target if against == "raw" else f"{against} vs {target}"
        self.agreement[name] = "; ".join(problems) or (
            f"same detections as {against} (classes; boxes within {BOX_TOLERANCE_PX} px)"
        )
        self.log(f"{name}: {self.agreement[name]}")

    def check_floor(self) -> None:
        """The floor's detections against raw's and against every served route's answers."""
        if self.floor_detections is None:
            return
        as_bodies = [_as_body(d) for d in self.floor_detections]
        self._agree("floor", "raw", as_bodies, self.reference or [])
        for target, bodies in self.served.items():
            if target != "plain":
                self._agree(target, "floor", bodies, self.floor_detections)

    # -- phases ---------------------------------------------------------------------------
    def run(self) -> None:
        """Phased (default): raw and plain, then Ray alone. Interleaved: all servers up at once,
        every target measured in each round, so drifting load hits them alike (the idle Ray
        cluster's CPU, reported in the notes, then counts against raw and plain)."""
        with contextlib.ExitStack() as stack:
            worker = RawWorker(self.spec.path, self.images, self.args.imgsz, self.args.raw_threads)
            stack.callback(worker.close)
            self.notes["raw torch threads"] = worker.info["threads"]
            self.reference = worker.ask(cmd="detections")["detections"]
            floor = None
            if "floor" in self.args.targets:
                floor = FloorWorker(
                    self.args.model,
                    self.images,
                    self.args.imgsz,
                    self.args.floor_procs,
                    self.args.app_args.get("backend"),
                )
                stack.callback(floor.close)
                self.notes["floor"] = (
                    f"{floor.info['procs']} processes, backend {floor.info['backend']}, "
                    f"{floor.info['threads']} inference thread each"
                )
                self.floor_detections = floor.ask(cmd="detections")["detections"]
            plain = None
            if "plain" in self.args.targets:
                plain = PlainServer(
                    self.spec.path, self.args.port_base + 6, self.args.plain_threads
                )
                stack.callback(plain.close)
                self.notes["plain torch threads"] = plain.info["torch_threads"]
                self.check("plain", f"{plain.base_url}/predict", {})
            ray = self._start_ray(stack) if self.args.interleave else None
            for repeat in range(self.args.repeats):
                self.log(f"run {repeat + 1}/{self.args.repeats}")
                self._round(worker, plain, ray, floor)
        if self.args.interleave:
            self.check_floor()
            return
        with contextlib.ExitStack() as stack:
            ray = self._start_ray(stack)
            for repeat in range(self.args.repeats) if ray else ():
                self.log(f"run {repeat + 1}/{self.args.repeats} on Ray Serve")
                self._round(None, None, ray)
            if ray and "dedicated" in self.args.targets:
                self.large = large_photos.measure(
                    self.ray_urls["dedicated"], self.ray_headers["dedicated"], self.args.imgsz
                )
                self.log(f"large photos: {self.large['target']['detail']}")
        self.check_floor()

    def _start_ray(self, stack: contextlib.ExitStack) -> RayServe | None:
        if not {"shared", "dedicated"} & set(self.args.targets):
            return None
        ports = cluster.ClusterPorts.block(self.args.port_base)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="yolo-bench-"))
        self.log(f"starting Ray on ports {ports.gcs}-{ports.gcs + 5}")
        ray = RayServe(ports, Path(tmp), self.args.config, self.args.app_args)
        stack.callback(ray.close)
        self.notes["ray start + deploy s"] = round(ray.startup_s, 1)
        endpoint_key = ray.key if self.args.dedicated_key == "limited" else ray.endpoint_key
        self.ray_headers = {
            "shared": {"Authorization": f"Bearer {ray.key}"},
            "dedicated": {"Authorization": f"Bearer {endpoint_key}"},
        }
        self.ray_urls = {
            "shared": f"{ray.base_url}/api/models/{self.args.model}/predict",
            "dedicated": f"{ray.base_url}/endpoints/{self.args.model}/predict",
        }
        for target in ("shared", "dedicated"):
            if target in self.args.targets:
                self.check(target, self.ray_urls[target], self.ray_headers[target])
        idle = TreeMonitor(ray.pid)
        idle.start()
        time.sleep(3)
        self.notes["ray idle CPU (cores)"] = round(idle.stop().cpu_cores, 3)
        return ray

    def _round(
        self,
        worker: RawWorker | None,
        plain: PlainServer | None,
        ray: RayServe | None,
        floor: FloorWorker | None = None,
    ) -> None:
        """One run of every level of every target that is up."""
        if worker:
            for source, target in (("files", "raw"), ("arrays", "raw-arrays")):
                if target in self.args.targets:
                    self.measure_raw(worker, source)
        if floor:
            self.measure_floor(floor)
        for c in self.args.levels:
            if plain:
                self.measure_http("plain", plain.pid, f"{plain.base_url}/predict", {}, c)
            for target in ("shared", "dedicated"):
                if ray and target in self.args.targets:
                    url, headers = self.ray_urls[target], self.ray_headers[target]
                    self.measure_http(target, ray.pid, url, headers, c)

    def report(self, started: float, load_before: dict[str, Any]) -> dict[str, Any]:
        median = {
            target: {c: median_of_runs(rows) for c, rows in sorted(levels.items())}
            for target, levels in self.runs.items()
        }
        targets = evaluate_targets(median)
        if self.large:
            targets.append(self.large["target"])
        if "raw-arrays" in median:
            targets += [
                {**row, "target": row["target"] + " (model alone)"}
                for row in evaluate_targets(median, raw="raw-arrays", plain="-")
            ]
        load_after = machine_load()
        self.notes["machine load before"] = load_before
        self.notes["machine load after"] = load_after
        # Ours are gone by now: any Ray worker left after the run belongs to someone else.
        quiet = (
            load_before["loadavg_1m"] < QUIET_LOADAVG
            and not load_before["ray_worker_processes"]
            and not load_after["ray_worker_processes"]
        )
        self.notes["total wall s"] = round(time.perf_counter() - started, 1)
        return {
            "title": f"{self.args.model} at imgsz {self.args.imgsz}: raw vs plain vs Ray Serve",
            "setup": {
                "command": "python -m bench.run " + " ".join(self.args.argv),
                "images": ", ".join(p.name for p in self.images) + " (alternating)",
                "levels": self.args.levels,
                "seconds per level": f"{self.args.duration} measured + {self.args.warmup} warm-up",
                "order": "interleaved" if self.args.interleave else PHASED,
                "bench config overrides": {**BENCH_OVERRIDES, "all apps": self.args.app_args},
                "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "versions": {
                    p: version(p) for p in ("ultralytics", "torch", "ray", "fastapi", "uvicorn")
                },
            },
            "repeats": self.args.repeats,
            "quiet": quiet,
            "median": median,
            "runs": self.runs,
            "targets": targets,
            "served/floor": floor_ratios(median),
            "notes": self.notes,
            "agreement": self.agreement,
            "large photos": self.large,
        }


def _compare(body: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    got = body["images"][0]["results"]
    if len(got) != len(expected["classes"]):
        return [f"{len(got)} detections, raw has {len(expected['classes'])}"]
    problems = []
    for i, (item, cls, xyxy) in enumerate(
        zip(got, expected["classes"], expected["boxes"], strict=True)
    ):
        box = [item["box"][k] for k in ("x1", "y1", "x2", "y2")]
        if item["class"] != cls or max(abs(a - b) for a, b in zip(box, xyxy, strict=True)) > (
            BOX_TOLERANCE_PX
        ):
            problems.append(f"detection {i} differs: {item['class']} {box} vs {cls} {xyxy}")
    return problems


def _as_body(detections: dict[str, Any]) -> dict[str, Any]:
    """raw-style detections in the served answer's shape, so `_compare` can take either."""
    keys = ("x1", "y1", "x2", "y2")
    return {
        "images": [
            {
                "results": [
                    {"class": cls, "box": dict(zip(keys, box, strict=True))}
                    for cls, box in zip(detections["classes"], detections["boxes"], strict=True)
                ]
            }
        ]
    }


def main(argv: list[str] | None = None) -> int:
    prepare_bench_process()
    args = parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    bench = Bench(args)
    started = time.perf_counter()
    load_before = machine_load()
    bench.log(f"machine before: {load_before}")
    if load_before["loadavg_1m"] >= QUIET_LOADAVG or load_before["ray_worker_processes"]:
        bench.log("warning: the machine is busy; figures will be noisy")
    bench.run()
    result = bench.report(started, load_before)
    paths = report.write_all(result, args.out)
    print(report.markdown(result))
    bench.log("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
