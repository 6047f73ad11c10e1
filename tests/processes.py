"""The test cluster's processes: which pids are its Serve actors, how much memory they hold, and
how many replicas of a deployment are running."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

from shared import cluster


def actor_pids(server, class_name: str | None = None) -> dict[int, str]:
    """pid -> actor class of every live actor of this cluster (from Ray's state API)."""
    url = f"{server.ports.dashboard_url}/api/v0/actors?limit=10000"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.load(response)
    actors = body["data"]["result"]["result"]
    return {
        int(a["pid"]): a["class_name"]
        for a in actors
        if a.get("state") == "ALIVE"
        and a.get("pid")
        and (class_name is None or a["class_name"] == class_name)
    }


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the summed RSS of some processes every `every_s` until stopped: the peak and
    the baseline taken at start show how much a burst of requests made them grow."""

    def __init__(self, pids: list[int], every_s: float = 0.05):
        self.pids, self.every_s = pids, every_s
        self.baseline = self._total()
        self.peak = self.baseline
        self.peak_by_pid = {pid: rss_bytes(pid) for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = {pid: rss_bytes(pid) for pid in self.pids}
            self.peak = max(self.peak, sum(sizes.values()))
            for pid, size in sizes.items():
                self.peak_by_pid[pid] = max(self.peak_by_pid[pid], size)
            time.sleep(self.every_s)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def running_replicas(ports: cluster.ClusterPorts, app: str, deployment: str) -> int:
    """How many replicas of `app`'s `deployment` are RUNNING (0 while unknown)."""
    info = cluster.serve_applications(ports).get(app, {}).get("deployments", {}).get(deployment, {})
    return sum(1 for r in info.get("replicas", []) if r.get("state") == "RUNNING")
