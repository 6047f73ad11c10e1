"""CPU and memory of a server's whole process tree while a level runs (psutil, sampled).

A Ray cluster is many processes (GCS, raylet, dashboard, the Serve controller, proxy and replica
workers); a plain server is one. Both are measured the same way: every process under the root
that started them, so the figures compare what each costs the machine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class TreeUsage:
    cpu_s: float = 0.0  # user + system CPU seconds spent by the tree during the window
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0  # the largest sum of RSS over the tree in any sample
    peak_pss_mb: float = 0.0  # the same with shared pages split between sharers
    peak_workers_rss_mb: float = 0.0  # Ray's `ray::` worker processes only (0 for other servers)
    processes: int = 0

    @property
    def cpu_cores(self) -> float:
        """Average cores busy: 2.0 is this whole 2-core machine."""
        return self.cpu_s / self.wall_s if self.wall_s else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "cpu_cores": self.cpu_cores,
            "peak_rss_mb": self.peak_rss_mb,
            "peak_pss_mb": self.peak_pss_mb,
            "peak_workers_rss_mb": self.peak_workers_rss_mb,
            "processes": self.processes,
        }


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class TreeMonitor:
    """Samples the tree under `root_pid` every `interval_s` between start() and stop()."""

    root_pid: int
    interval_s: float = 0.25
    _usage: TreeUsage = field(default_factory=TreeUsage)
    _cpu: dict[int, float] = field(default_factory=dict)
    _start_cpu: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def start(self) -> None:
        self._usage = TreeUsage()
        self._cpu, self._start_cpu = {}, {}
        self._stop.clear()
        self._started = time.perf_counter()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> TreeUsage:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()
        usage = self._usage
        usage.wall_s = time.perf_counter() - self._started
        # Processes that appeared mid-window started from zero CPU time.
        usage.cpu_s = sum(cpu - self._start_cpu.get(pid, 0.0) for pid, cpu in self._cpu.items())
        return usage

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        root = _process(self.root_pid)
        if root is None:
            return
        rss = pss = workers = 0
        processes = _tree(root)
        for process in processes:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    memory = process.memory_full_info()
                    name = process.name()
                    cmdline = " ".join(process.cmdline()[:1])
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            cpu = times.user + times.system
            self._cpu[process.pid] = cpu
            if first:
                self._start_cpu[process.pid] = cpu
            rss += memory.rss
            pss += getattr(memory, "pss", memory.rss)
            if name.startswith("ray::") or cmdline.startswith("ray::"):
                workers += memory.rss
        mb = 1024 * 1024
        self._usage.peak_rss_mb = max(self._usage.peak_rss_mb, rss / mb)
        self._usage.peak_pss_mb = max(self._usage.peak_pss_mb, pss / mb)
        self._usage.peak_workers_rss_mb = max(self._usage.peak_workers_rss_mb, workers / mb)
        self._usage.processes = max(self._usage.processes, len(processes))


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
