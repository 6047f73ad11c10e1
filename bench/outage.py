"""What killing one Serve process costs: seconds of failed or refused requests, per process.

    .venv/bin/python -m bench.outage                                  # serve_config.yaml as is
    .venv/bin/python -m bench.outage --ingress-replicas 2 \\
        --env RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S=1                 # a lever, same machine

An own Ray cluster (bench/servers.py:RayServe, the bench's two fixed one-CPU `yolo26n` model
replicas) takes `--concurrency` closed-loop clients on POST /endpoints/yolo26n/predict (bus.jpg,
imgsz 320, a 10 s timeout each). Then, one after another, each victim's process is sent SIGKILL:
the HTTP proxy, one ingress replica and one model replica of the endpoint, the rate limiter
(which the bench's key, having a limit of its own, is counted by), and the Serve controller.
After each kill the clients go on until the victim is replaced and 10 s have passed without a
failure. Reported per victim: the outage (the last failed or refused request's end minus the
kill, 0 when none failed), failures, successes meanwhile, and seconds until the first success
sent after the kill. Writes bench/results/outage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.servers import RayServe, machine_load, prepare_bench_process
from shared import cluster
from shared.assets import example_image
from shared.registry import PROJECT_ROOT

APP = "yolo26n"
QUIET_S = 10.0  # failure-free seconds after a replacement before the next kill
REPLACE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Outcome:
    sent: float
    done: float
    ok: bool
    detail: str


@dataclass(frozen=True)
class KillResult:
    victim: str
    pid: int
    outage_s: float  # last failure's end - kill; 0: none failed
    failures: int
    successes: int  # between the kill and the end of the quiet period
    first_success_s: float | None  # from the kill to the first success sent after it
    replaced_s: float | None  # from the kill until a new process stood in for it
    failure_kinds: dict[str, int]


class Clients:
    """Closed-loop clients, each its own thread and HTTP session, recording every outcome."""

    def __init__(self, url: str, key: str, concurrency: int):
        self.url, self.key = url, key
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.data = example_image("bus.jpg").read_bytes()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def _run(self) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {self.key}"}
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                r = session.post(
                    self.url,
                    headers=headers,
                    files={"file": ("bus.jpg", self.data)},
                    data={"imgsz": "320"},
                    timeout=10,
                )
                ok, detail = r.status_code == 200, str(r.status_code)
            except requests.RequestException as exc:
                ok, detail = False, type(exc).__name__
                session = requests.Session()
                time.sleep(0.05)  # a refused connection answers at once: do not spin
            with self.lock:
                self.outcomes.append(Outcome(sent, time.monotonic(), ok, detail))

    def since(self, moment: float) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if o.done >= moment]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _actors(dashboard: str, class_name: str) -> set[int]:
    body = _get(f"{dashboard}/api/v0/actors?limit=10000")
    return {
        int(a["pid"])
        for a in body["data"]["result"]["result"]
        if a.get("state") == "ALIVE" and a.get("pid") and a["class_name"] == class_name
    }


def _replicas(dashboard: str, app: str, deployment: str) -> set[int]:
    apps = _get(f"{dashboard}/api/serve/applications/")["applications"]
    info = apps.get(app, {}).get("deployments", {}).get(deployment, {})
    return {int(r["pid"]) for r in info.get("replicas", []) if r["state"] == "RUNNING"}


def victims(dashboard: str) -> dict[str, Any]:
    """Victim name -> a function listing the pids of its kind of process."""
    return {
        "http proxy": lambda: _actors(dashboard, "ProxyActor"),
        "ingress replica": lambda: _replicas(dashboard, APP, "Ingress"),
        "model replica": lambda: _replicas(dashboard, APP, "Model"),
        "rate limiter": lambda: _replicas(dashboard, "shared", "Limiter"),
        "serve controller": lambda: _actors(dashboard, "ServeController"),
    }


def kill_one(clients: Clients, name: str, pids_of: Any) -> KillResult:
    before = pids_of()
    if not before:
        raise RuntimeError(f"no {name} process found")
    victim = min(before)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    replaced_s = None
    deadline = killed_at + REPLACE_TIMEOUT_S
    while time.monotonic() < deadline:
        now = pids_of() if replaced_s is None else set()
        if replaced_s is None and victim not in now and len(now) >= len(before):
            replaced_s = time.monotonic() - killed_at
        failures = [o for o in clients.since(killed_at) if not o.ok]
        last_failure = max((o.done for o in failures), default=killed_at)
        if replaced_s is not None and time.monotonic() - last_failure >= QUIET_S:
            break
        time.sleep(0.5)
    after = clients.since(killed_at)
    failures = [o for o in after if not o.ok]
    kinds: dict[str, int] = {}
    for o in failures:
        kinds[o.detail] = kinds.get(o.detail, 0) + 1
    first = min((o.done for o in after if o.ok and o.sent >= killed_at), default=None)
    return KillResult(
        victim=name,
        pid=victim,
        outage_s=round(max((o.done for o in failures), default=killed_at) - killed_at, 2),
        failures=len(failures),
        successes=sum(o.ok for o in after),
        first_success_s=None if first is None else round(first - killed_at, 2),
        replaced_s=None if replaced_s is None else round(replaced_s, 2),
        failure_kinds=kinds,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.outage", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--ingress-replicas", type=int, help="the endpoint's Ingress replicas")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the cluster's environment"
    )
    parser.add_argument("--only", nargs="*", help="victims to kill (default: all, in order)")
    parser.add_argument("--port-base", type=int, default=21500)
    parser.add_argument("--config", type=Path, default=PROJECT_ROOT / "serve_config.yaml")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    return parser.parse_args(argv)


def _config_file(args: argparse.Namespace, workdir: Path) -> Path:
    if args.ingress_replicas is None:
        return args.config
    config = yaml.safe_load(args.config.read_text())
    for app in config["applications"]:
        if app["name"] == APP:
            deployments = [d for d in app.get("deployments", []) if d["name"] != "Ingress"]
            app["deployments"] = [
                {"name": "Ingress", "num_replicas": args.ingress_replicas},
                *deployments,
            ]
    path = workdir / "serve_config.outage.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prepare_bench_process()
    for item in args.env:
        name, _, value = item.partition("=")
        os.environ[name] = value
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "yolo-endpoints-bench-outage"
    workdir.mkdir(parents=True, exist_ok=True)
    ports = cluster.ClusterPorts.block(args.port_base)
    server = RayServe(ports, workdir, _config_file(args, workdir))
    results: list[KillResult] = []
    try:
        url = f"{server.base_url}/endpoints/{APP}/predict"
        with Clients(url, server.endpoint_key, args.concurrency) as clients:
            time.sleep(5)  # warm
            for name, pids_of in victims(ports.dashboard_url).items():
                if args.only and name not in args.only:
                    continue
                result = kill_one(clients, name, pids_of)
                results.append(result)
                print(json.dumps(asdict(result)), flush=True)
    finally:
        server.close()
    report = {
        "argv": argv,
        "env": args.env,
        "ingress_replicas": args.ingress_replicas,
        "machine": machine_load(),
        "results": [asdict(r) for r in results],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "outage.json").write_text(json.dumps(report, indent=2))
    print(f"{'victim':18s} {'outage s':>9s} {'failed':>7s} {'served':>7s} {'replaced s':>11s}")
    for r in results:
        print(
            f"{r.victim:18s} {r.outage_s:9.2f} {r.failures:7d} {r.successes:7d} "
            f"{r.replaced_s if r.replaced_s is not None else '-':>11}"
        )


if __name__ == "__main__":
    main()
