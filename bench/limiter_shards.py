"""Admissions per second with the rate limiter sharded over 1, 2 and 4 replicas.

    .venv/bin/python -m bench.limiter_shards                      # 1, 2, 4 shards, 3 runs each
    .venv/bin/python -m bench.limiter_shards --shards 1 8 --callers 4

An own Ray cluster (ports from `--port-base`) runs the real Limiter deployments
(deployments/limiter.py) and `--callers` caller replicas. Each caller reaches the shards the way
an ingress replica's gate does (`LimiterShards.for_key`, then `acquire`), with `--in-flight`
calls outstanding and 4096 keys taken in turn, each with a limit no run reaches. Every answer is
an admission. Only the HTTP in front is left out, so this is the limiter's own ceiling, not the
service's. Reported: admissions per second (median of `--repeats` runs of `--duration` s) and
the CPU of the shard processes. Writes bench/results/limiter_shards.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import psutil

from bench.servers import machine_load, prepare_bench_process
from shared import cluster
from shared.registry import PROJECT_ROOT

KEYS = [f"{n:016x}" for n in range(0, 4096 * 7919, 7919)]
NEVER_REACHED = 10**9


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--callers", type=int, default=2, help="caller replicas (processes)")
    parser.add_argument("--in-flight", type=int, default=64, help="calls outstanding per caller")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--port-base", type=int, default=21700)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    return parser.parse_args(argv)


def build_app(shards: int, callers: int):
    from ray import serve

    from deployments.limiter import Limiter, LimiterShards, shard_name
    from shared.ratelimit import RateLimit

    @serve.deployment(
        num_replicas=callers, max_ongoing_requests=1, ray_actor_options={"num_cpus": 0}
    )
    class Caller:
        def __init__(self, handles):
            self.shards = LimiterShards(handles)

        async def run(self, seconds: float, in_flight: int) -> int:
            done = 0
            deadline = time.monotonic() + seconds

            async def loop(offset: int) -> None:
                nonlocal done
                n = offset
                while time.monotonic() < deadline:
                    key = KEYS[n % len(KEYS)]
                    shard = await self.shards.for_key(key)
                    decision = await shard.acquire.remote(key, NEVER_REACHED)
                    assert decision.allowed
                    done += 1
                    n += in_flight

            await asyncio.gather(*(loop(i) for i in range(in_flight)))
            return done

        async def ready(self) -> bool:
            return True

    limit = RateLimit(NEVER_REACHED, 60)
    handles = [Limiter.options(name=shard_name(i)).bind(limit, shards) for i in range(shards)]
    return Caller.bind(handles)


def shard_pids(ports: cluster.ClusterPorts) -> list[int]:
    app = cluster.serve_applications(ports).get("limiters", {})
    return [
        replica["pid"]
        for name, deployment in app.get("deployments", {}).items()
        if name.startswith("Limiter")
        for replica in deployment.get("replicas", [])
    ]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(args: argparse.Namespace, ports: cluster.ClusterPorts, shards: int) -> dict:
    from ray import serve

    handle = serve.run(build_app(shards, args.callers), name="limiters", route_prefix=None)
    for _ in range(args.callers * 4):
        handle.ready.remote().result()
    handle.run.remote(1.0, args.in_flight).result()  # warm-up: every router set up
    pids = shard_pids(ports)
    rates, cores = [], []
    for _ in range(args.repeats):
        cpu_before, started = cpu_seconds(pids), time.monotonic()
        calls = [handle.run.remote(args.duration, args.in_flight) for _ in range(args.callers)]
        admitted = sum(call.result() for call in calls)
        elapsed = time.monotonic() - started
        rates.append(admitted / elapsed)
        cores.append((cpu_seconds(pids) - cpu_before) / elapsed)
    serve.delete("limiters")
    return {
        "shards": shards,
        "admissions_per_s": statistics.median(rates),
        "runs": rates,
        "shard_cpu_cores": statistics.median(cores),
    }


def markdown(report: dict) -> str:
    lines = [
        "| shards | admissions/s (median) | runs | shard processes' CPU (cores) |",
        "|---:|---:|---|---:|",
    ]
    for row in report["results"]:
        runs = ", ".join(f"{r:.0f}" for r in row["runs"])
        lines.append(
            f"| {row['shards']} | {row['admissions_per_s']:.0f} | {runs} "
            f"| {row['shard_cpu_cores']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_bench_process()
    import ray

    ports = cluster.ClusterPorts.block(args.port_base)
    report = {"machine": machine_load(), "args": {k: str(v) for k, v in vars(args).items()}}
    head = cluster.start_owned_head(ports, num_cpus=os.cpu_count() or 2)
    try:
        ray.init(address=ports.address, logging_level="ERROR", log_to_driver=False)
        from ray import serve

        serve.start(http_options={"host": "127.0.0.1", "port": ports.http})
        report["results"] = [measure(args, ports, shards) for shards in args.shards]
        ray.shutdown()
    finally:
        cluster.stop_owned_head(head)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "limiter_shards.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
