"""Starting and stopping what the benchmark measures: the raw worker, the plain server, Ray Serve.

Each runs in its own process tree, so `TreeMonitor` can charge it exactly what it uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml

from bench.raw import MARK
from shared import cluster, keys
from shared.registry import PROJECT_ROOT
from shared.settings import apply_ultralytics_env

# What the bench changes in serve_config.yaml, all of it settings a user would choose on a
# 2-core machine: one model replica per app (latency-first autoscaling would start up to four
# 2-CPU replicas that only time-share the same two cores), and no segmentation endpoint (not
# measured, and an idle replica still costs memory). The shared rate limit stays the real one:
# the bench key carries its own high per-key limit instead (`keys.create_key(rate_limit=...)`).
# A key's own limit counts on every route, dedicated endpoints included, so the dedicated route
# is driven with a second key that has none: the endpoint then counts nothing, as for any key
# without a limit of its own, and no request makes a limiter round trip.
BENCH_OVERRIDES: dict[str, dict[str, Any]] = {
    "yolo26n": {"autoscaling": None, "num_replicas": 2},
}
BENCH_APPS = ("shared", "yolo26n")
BENCH_KEY_LIMIT = 1_000_000_000


def prepare_bench_process() -> None:
    """What every bench entry point sets first: no telemetry, Ultralytics offline, and
    `kill` (or a session's end) still stopping the servers and the Ray cluster it started."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    apply_ultralytics_env()
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class RawWorker:
    """`bench.raw` in a child process, driven over its stdin/stdout."""

    def __init__(self, weights: Path, images: list[Path], imgsz: int, threads: int | None):
        command = [
            sys.executable,
            "-m",
            "bench.raw",
            "--weights",
            str(weights),
            "--imgsz",
            str(imgsz),
            "--images",
            *map(str, images),
        ]
        if threads:
            command += ["--threads", str(threads)]
        self._start(command)

    def _start(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=cluster.ray_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._read()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        raise RuntimeError(f"raw worker exited with {self.process.wait()}")

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, RuntimeError):
                self.ask(cmd="quit")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class FloorWorker(RawWorker):
    """`bench.floor`: one model process per core, no server, driven like the raw worker."""

    def __init__(
        self,
        model_id: str,
        images: list[Path],
        imgsz: int,
        procs: int,
        backend: str | None = None,
    ):
        command = [
            sys.executable,
            "-m",
            "bench.floor",
            "--model",
            model_id,
            "--imgsz",
            str(imgsz),
            "--procs",
            str(procs),
            "--images",
            *map(str, images),
        ]
        if backend:
            command += ["--backend", backend]
        self._start(command)


class PlainServer:
    """`bench.plain_server` under uvicorn, one process."""

    def __init__(self, weights: Path, port: int, torch_threads: int | None = None):
        command = [
            sys.executable,
            "-m",
            "bench.plain_server",
            "--weights",
            str(weights),
            "--port",
            str(port),
        ]
        if torch_threads:
            command += ["--torch-threads", str(torch_threads)]
        self.base_url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=cluster.ray_env())
        self.info = _wait_json(f"{self.base_url}/info", self.process, timeout_s=120)

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def bench_serve_config(
    base: dict[str, Any],
    ports: cluster.ClusterPorts,
    keys_file: Path,
    app_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """serve_config.yaml with the bench's ports, key store, BENCH_OVERRIDES and `app_args`
    (`--arg` on the command line: the same args for every app, e.g. backend or batching)."""
    config = deepcopy(base)
    config["http_options"]["port"] = ports.http
    config["applications"] = [a for a in config["applications"] if a["name"] in BENCH_APPS]
    for app in config["applications"]:
        app.setdefault("args", {})["keys_file"] = str(keys_file)
        app["args"].update(BENCH_OVERRIDES.get(app["name"], {}))
        app["args"].update(app_args or {})
        if "batching" in (app_args or {}):
            # A deployment's user_config in the file wins over the one the builder derives from
            # `batching`, so the override goes there too.
            for deployment in app.get("deployments", []):
                if "user_config" in deployment:
                    deployment["user_config"] = dict(app_args["batching"])
    return config


class RayServe:
    """An owned Ray head on the bench's port block, with the bench config deployed."""

    def __init__(
        self,
        ports: cluster.ClusterPorts,
        workdir: Path,
        config_file: Path,
        app_args: dict[str, Any] | None = None,
    ):
        self.ports = ports
        keys_file = workdir / "keys.json"
        keys_file.unlink(missing_ok=True)
        self.key = keys.create_key(keys_file, "bench", rate_limit=BENCH_KEY_LIMIT)
        self.endpoint_key = keys.create_key(keys_file, "bench-endpoint")  # dedicated: uncounted
        self.config = bench_serve_config(
            yaml.safe_load(config_file.read_text()), ports, keys_file, app_args
        )
        config_path = workdir / "serve_config.bench.yaml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.base_url = f"http://127.0.0.1:{ports.http}"
        started = time.perf_counter()
        self.head = cluster.start_owned_head(ports)
        try:
            cluster.deploy(config_path, ports)
            cluster.wait_running(ports, [a["name"] for a in self.config["applications"]])
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - started

    @property
    def pid(self) -> int:
        return self.head.pid

    def close(self) -> None:
        cluster.stop_owned_head(self.head)


def _wait_json(url: str, process: subprocess.Popen, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout_s}s")


def machine_load() -> dict[str, Any]:
    """Load averages and other Ray workers on the machine: is this a quiet moment to measure?"""
    one, five, _ = os.getloadavg()
    ray_workers = 0
    try:
        out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
        ray_workers = sum(1 for line in out.stdout.splitlines() if line.startswith("ray::"))
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"loadavg_1m": one, "loadavg_5m": five, "ray_worker_processes": ray_workers}
