"""A bounded soak: N minutes at saturation against a running server, then a verdict.

    .venv/bin/python -m bench.soak --url http://127.0.0.1:8000 \\
        --path /endpoints/yolo26n/predict --gcs-port 6380 --minutes 10 --concurrency 8
    # the key: --key-file FILE (first line) or $YOLO_API_KEY; it is never printed

Closed-loop clients (more than the replicas serve at once, so a queue always waits) send
`--image` for `--minutes`. The first `--warmup-s` are not judged: allocator pools, caches and
the autoscaler settle there, so the RSS "at start" is taken after them. It reports:
- every unexpected answer: anything but a 200 (keep `--concurrency` within the app's
  `max_queued_requests`, where back-pressure 503s would be expected), or no answer at all;
- the RSS of every Serve process of the cluster whose GCS listens on `--gcs-port` (Ray worker
  processes titled `ray::ServeReplica:*`, `ray::ProxyActor`, `ray::ServeController*`), at start
  and end, and any that died or appeared meanwhile;
and exits 1 when there was an unexpected answer, a Serve process died, or one grew by more than
`--max-growth` (10 %). The JSON report goes to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import psutil

from bench.load import Upload

SERVE_TITLES = ("ray::ServeReplica:", "ray::ProxyActor", "ray::ServeController")
MB = 1024 * 1024


# -- the cluster's processes ------------------------------------------------------------------
def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def session_dir(gcs_port: int) -> Path:
    """The session directory of the Ray cluster whose GCS listens on `gcs_port`."""
    flag = f"--gcs_server_port={gcs_port}"
    for process in psutil.process_iter():
        args = _cmdline(process)
        if flag in args:
            for arg in args:
                if arg.startswith("--session-dir="):
                    return Path(arg.split("=", 1)[1])
    raise LookupError(f"no Ray GCS listening on port {gcs_port}")


def raylet(gcs_port: int) -> psutil.Process:
    """The cluster's raylet on this machine: every worker process is its child."""
    socket = f"{session_dir(gcs_port)}/sockets/raylet"
    for process in psutil.process_iter():
        if f"--raylet_socket_name={socket}" in _cmdline(process):
            return process
    raise LookupError(f"no raylet for the cluster on port {gcs_port}")


def serve_processes(root: psutil.Process) -> dict[int, tuple[str, int]]:
    """pid -> (process title, RSS bytes) of the Serve processes under the raylet."""
    found: dict[int, tuple[str, int]] = {}
    for process in root.children(recursive=True):
        title = " ".join(_cmdline(process)[:1])
        if not title.startswith(SERVE_TITLES):
            continue
        try:
            found[process.pid] = (title, process.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


# -- the verdict ------------------------------------------------------------------------------
@dataclass
class ProcessRss:
    pid: int
    title: str
    start_mb: float
    end_mb: float | None  # None: the process is gone

    @property
    def growth(self) -> float | None:
        return None if self.end_mb is None else (self.end_mb - self.start_mb) / self.start_mb


def compare(
    start: dict[int, tuple[str, int]], end: dict[int, tuple[str, int]]
) -> tuple[list[ProcessRss], list[tuple[int, str]]]:
    """Per-process RSS at start and end, and the processes that only exist at the end."""
    rows = [
        ProcessRss(pid, title, rss / MB, end[pid][1] / MB if pid in end else None)
        for pid, (title, rss) in sorted(start.items(), key=lambda kv: kv[1][0])
    ]
    new = [(pid, title) for pid, (title, _) in end.items() if pid not in start]
    return rows, new


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)  # "200", "503", "ClientOSError", ...
    latencies_s: list[float] = field(default_factory=list)
    first_unexpected: list[str] = field(default_factory=list)

    def record(self, outcome: str, elapsed_s: float, detail: str = "") -> None:
        self.statuses[outcome] += 1
        if outcome == "200":
            self.latencies_s.append(elapsed_s)
        elif len(self.first_unexpected) < 5:
            self.first_unexpected.append(f"{outcome}: {detail[:300]}")

    @property
    def unexpected(self) -> int:
        return sum(n for outcome, n in self.statuses.items() if outcome != "200")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def verdict(tally: Tally, rows: list[ProcessRss], max_growth: float) -> tuple[bool, list[str]]:
    reasons = []
    if tally.unexpected:
        reasons.append(f"{tally.unexpected} unexpected answer(s): {dict(tally.statuses)}")
    for row in rows:
        if row.end_mb is None:
            reasons.append(f"{row.title} (pid {row.pid}) died")
        elif row.growth is not None and row.growth > max_growth:
            reasons.append(f"{row.title} (pid {row.pid}) grew {row.growth:.1%}")
    return not reasons, reasons


# -- the load ---------------------------------------------------------------------------------
async def _client(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    upload: Upload,
    deadline: float,
    tally: Tally | None,
) -> None:
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            async with session.post(
                url, data=upload.body, headers={**headers, "Content-Type": upload.content_type}
            ) as response:
                body = await response.read()
                outcome, detail = str(response.status), body.decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome, detail = type(exc).__name__, str(exc)
        if tally is not None:
            tally.record(outcome, time.monotonic() - started, detail)


async def _drive(
    url: str, headers: dict[str, str], upload: Upload, concurrency: int, seconds: float, tally
) -> None:
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            *(_client(session, url, headers, upload, deadline, tally) for _ in range(concurrency))
        )


async def soak(args: argparse.Namespace, key: str) -> dict:
    root = raylet(args.gcs_port)
    url = args.url.rstrip("/") + args.path
    headers = {"Authorization": f"Bearer {key}"}
    fields = {"imgsz": str(args.imgsz)} if args.imgsz else {}
    upload = Upload.build(args.image.name, args.image.read_bytes(), fields)

    print(f"warm-up {args.warmup_s:g} s at concurrency {args.concurrency} ...", flush=True)
    await _drive(url, headers, upload, args.concurrency, args.warmup_s, None)
    start = serve_processes(root)
    tally = Tally()
    # Every `--sample-s`: minutes in, and each Serve process's RSS (MB), so that a reader can tell
    # a high-water mark reached early from growth that goes on.
    samples: list[dict] = []
    began = time.monotonic()
    duration_s = args.minutes * 60

    async def sample() -> None:
        while (elapsed := time.monotonic() - began) < duration_s:
            now = serve_processes(root)
            total = sum(rss for _, rss in now.values()) / MB
            samples.append(
                {
                    "minute": round(elapsed / 60, 2),
                    "rss_mb": {pid: round(rss / MB, 1) for pid, (_, rss) in now.items()},
                }
            )
            print(
                f"  {elapsed / 60:5.1f} min  Serve RSS {total:8.1f} MB  "
                f"answers {sum(tally.statuses.values())}  unexpected {tally.unexpected}",
                flush=True,
            )
            await asyncio.sleep(args.sample_s)

    print(f"soak {args.minutes:g} min ...", flush=True)
    await asyncio.gather(
        _drive(url, headers, upload, args.concurrency, duration_s, tally), sample()
    )
    wall_s = time.monotonic() - began
    end = serve_processes(root)
    rows, new = compare(start, end)
    ok, reasons = verdict(tally, rows, args.max_growth)
    lat = tally.latencies_s
    return {
        "ok": ok,
        "reasons": reasons,
        "url": url,
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "answers": sum(tally.statuses.values()),
        "statuses": dict(tally.statuses),
        "unexpected": tally.unexpected,
        "first_unexpected": tally.first_unexpected,
        "requests_per_s": round(sum(tally.statuses.values()) / wall_s, 2),
        "latency_ms": {
            "p50": round(statistics.median(lat) * 1000, 1) if lat else None,
            "p95": round(_percentile(lat, 0.95) * 1000, 1),
            "p99": round(_percentile(lat, 0.99) * 1000, 1),
            "max": round(max(lat, default=0) * 1000, 1),
        },
        "processes": [
            {
                **asdict(r),
                "growth_pct": None if r.growth is None else round(r.growth * 100, 2),
                "mid_mb": _midway(samples, r.pid),
            }
            for r in rows
        ],
        "appeared": [{"pid": pid, "title": title} for pid, title in new],
        "serve_rss_mb": {
            "start": round(sum(r.start_mb for r in rows), 1),
            "end": round(sum(rss for _, rss in end.values()) / MB, 1),
        },
        "samples": samples,
    }


def _midway(samples: list[dict], pid: int) -> float | None:
    """The process's RSS at the sample half-way through the soak."""
    if not samples:
        return None
    return samples[len(samples) // 2]["rss_mb"].get(pid)


def _print(report: dict) -> None:
    print(
        f"\n{report['answers']} answers in {report['minutes']:g} min "
        f"({report['requests_per_s']} req/s), statuses {report['statuses']}, "
        f"latency {report['latency_ms']}"
    )
    print(f"{'process':<44} {'pid':>7} {'start MB':>9} {'midway':>9} {'end MB':>9} {'growth':>8}")
    for p in report["processes"]:
        end = "gone" if p["end_mb"] is None else f"{p['end_mb']:.1f}"
        mid = "" if p["mid_mb"] is None else f"{p['mid_mb']:.1f}"
        growth = "" if p["growth_pct"] is None else f"{p['growth_pct']:+.2f}%"
        print(
            f"{p['title'][:44]:<44} {p['pid']:>7} {p['start_mb']:>9.1f} {mid:>9} {end:>9} "
            f"{growth:>8}"
        )
    for p in report["appeared"]:
        print(f"{p['title'][:44]:<44} {p['pid']:>7} {'(new)':>9}")
    print("PASS" if report["ok"] else "FAIL: " + "; ".join(report["reasons"]))


def _key(args: argparse.Namespace) -> str:
    if args.key_file:
        return args.key_file.read_text().splitlines()[0].strip()
    key = os.environ.get("YOLO_API_KEY", "")
    if not key:
        sys.exit("give the API key with --key-file FILE or $YOLO_API_KEY")
    return key


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from shared.assets import example_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--path", default="/endpoints/yolo26n/predict")
    parser.add_argument("--gcs-port", type=int, default=6380, help="the cluster's GCS port")
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    # Two minutes: after a shorter warm-up, RSS still includes allocator pools and buffers
    # filling up (after 60 s the ingress and proxy then grew 13-18 %; after 120 s the ingress
    # stayed within 1 %), which is not what the soak looks for.
    parser.add_argument("--warmup-s", type=float, default=120)
    parser.add_argument("--sample-s", type=float, default=30)
    parser.add_argument("--image", type=Path, default=example_image("bus.jpg"))
    parser.add_argument("--imgsz", type=int, default=None)
    parser.add_argument("--max-growth", type=float, default=0.10, help="per process, 0.10: 10 %%")
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(soak(args, _key(args)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    _print(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
