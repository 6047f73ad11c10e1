"""The Prometheus server beside the local Ray cluster, for `make serve` and the test session.

It scrapes Ray's metrics export (every replica's metrics leave through its node's port) and is
what the deployments API reads its metrics from (`SharedArgs.prometheus_url`). The binary is
Debian's `prometheus` package: installed (`apt-get install prometheus`, as `.ci/run` does), or
unpacked without root into `.tools/prometheus/` by `fetch_binary`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from shared.registry import PROJECT_ROOT

SYSTEM_BINARY = Path("/usr/bin/prometheus")
TOOLS_DIR = PROJECT_ROOT / ".tools" / "prometheus"
UNPACKED_BINARY = TOOLS_DIR / "usr" / "bin" / "prometheus"
# Ray 2.60 writes its service discovery file (every alive node's metrics export, plus the
# dashboard's and the autoscaler's) into the session directory, and points this legacy path at
# the newest session's copy by a symlink: on a machine running several clusters it names
# whichever started last, and it names the head by its node IP, not 127.0.0.1.
RAY_SERVICE_DISCOVERY_FILE = Path("/tmp/ray/prom_metrics_service_discovery.json")
LOCAL_SCRAPE_INTERVAL_S = 5.0
DEFAULT_RETENTION = "7d"


def find_binary() -> Path | None:
    """The installed Prometheus (`/usr/bin/prometheus` or on PATH), else the project's copy."""
    if SYSTEM_BINARY.is_file() and os.access(SYSTEM_BINARY, os.X_OK):
        return SYSTEM_BINARY
    on_path = shutil.which("prometheus")
    if on_path:
        return Path(on_path)
    if UNPACKED_BINARY.is_file() and os.access(UNPACKED_BINARY, os.X_OK):
        return UNPACKED_BINARY
    return None


def fetch_binary() -> Path:
    """Debian's package unpacked into `.tools/prometheus/` (no root: `apt-get download` and
    `dpkg-deb -x`), for machines where it is not installed. Returns the binary's path."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"Prometheus is not installed and `{tool}` is missing to fetch it: install "
                "Prometheus (Debian/Ubuntu: `apt-get install prometheus`) or put it on PATH"
            )
    with tempfile.TemporaryDirectory(prefix="prometheus-deb-") as tmp:
        download = subprocess.run(
            ["apt-get", "download", "prometheus"],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        debs = sorted(Path(tmp).glob("prometheus_*.deb"))
        if download.returncode != 0 or not debs:
            raise RuntimeError(
                "Prometheus is not installed and `apt-get download prometheus` failed "
                f"(run `apt-get update` first, or `apt-get install prometheus`): "
                f"{download.stderr.strip() or download.stdout.strip()}"
            )
        TOOLS_DIR.mkdir(parents=True, exist_ok=True)
        unpack = subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(TOOLS_DIR)], capture_output=True, text=True
        )
        if unpack.returncode != 0 or not UNPACKED_BINARY.is_file():
            raise RuntimeError(
                f"unpacking {debs[0].name} into {TOOLS_DIR} failed: {unpack.stderr.strip()}"
            )
    return UNPACKED_BINARY


def ensure_binary() -> Path:
    """The binary, fetched first where it is not installed; RuntimeError if neither works."""
    return find_binary() or fetch_binary()


def _duration(seconds: float) -> str:
    """Prometheus' duration syntax (whole units only: `5s`, `500ms`)."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"a scrape interval must be positive, not {seconds}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def render_config(
    targets: list[str],
    scrape_interval_s: float = LOCAL_SCRAPE_INTERVAL_S,
    discovery_file: Path | None = None,
) -> str:
    """A prometheus.yml with one job, `ray`: the static `targets` (`host:port` of Ray's metrics
    export, e.g. `127.0.0.1:8080`) and, where `discovery_file` is given and exists, every node
    Ray's service discovery file lists (multi-node clusters; `RAY_SERVICE_DISCOVERY_FILE`).

    The two overlap: the discovery file names the head by its node IP, so a head given as
    `127.0.0.1:<port>` in `targets` as well would be scraped twice and counted twice by every
    `sum`. A multi-node setup passes its discovery file and no static head target.
    """
    interval = _duration(scrape_interval_s)
    job: dict = {"job_name": "ray"}
    if targets:
        job["static_configs"] = [{"targets": list(targets)}]
    if discovery_file is not None and Path(discovery_file).exists():
        job["file_sd_configs"] = [{"files": [str(discovery_file)], "refresh_interval": interval}]
    if len(job) == 1:
        raise ValueError("nothing to scrape: no targets and no service discovery file")
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [job],
    }
    return yaml.safe_dump(config, sort_keys=False)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As Go's listener does: connections lingering in TIME_WAIT do not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"{url(port)}/-/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False  # not listening yet, or 503 while the TSDB opens


def start(
    port: int,
    targets: list[str],
    data_dir: Path,
    *,
    scrape_interval_s: float = LOCAL_SCRAPE_INTERVAL_S,
    retention: str = DEFAULT_RETENTION,
    discovery_file: Path | None = None,
    binary: Path | None = None,
    timeout_s: float = 60,
) -> subprocess.Popen:
    """Prometheus on 127.0.0.1:`port`, its config, TSDB and log under `data_dir`, running once
    `GET /-/ready` answers 200. In its own process group, like the owned Ray head, so that
    `stop` ends it and nothing else (and a Ctrl-C to the terminal reaches it only through us)."""
    binary = binary or ensure_binary()
    # Whatever else answers on the port would pass the readiness check below in its place.
    if not _port_free(port):
        raise RuntimeError(f"port {port} is in use: is another Prometheus running there?")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    config_file = data_dir / "prometheus.yml"
    config_file.write_text(render_config(targets, scrape_interval_s, discovery_file))
    log = (data_dir / "prometheus.log").open("ab")
    try:
        process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={data_dir / 'tsdb'}",
                f"--storage.tsdb.retention.time={retention}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own descriptor
    deadline = time.monotonic() + timeout_s
    while not _ready(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)  # never leave a half-started server holding the port
            raise RuntimeError(
                f"Prometheus on port {port} did not become ready within {timeout_s:.0f} s "
                f"(exit code {process.returncode}); its log: {data_dir / 'prometheus.log'}"
            )
        time.sleep(0.25)
    return process


def stop(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM to its process group, SIGKILL if it has not exited within `timeout_s`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        process.wait(timeout=10)
