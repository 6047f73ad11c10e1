"""`yolo-endpoints serve`: everything `make serve` does after installing the project."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from shared import cluster, keys, prometheus, weights
from shared.assets import example_image
from shared.registry import PROJECT_ROOT, load_registry


def curl_example(base: str, key: str, model: str) -> str:
    image = example_image("bus.jpg")
    return (
        f'curl -X POST "{base}/api/models/{model}/predict" \\\n'
        f'  -H "Authorization: Bearer {key}" \\\n'
        f'  -F "file=@{image}" -F "conf=0.25" -F "iou=0.7" -F "imgsz=640"'
    )


def served_keys_file(config: dict) -> Path:
    """The key store the served config names (the shared app's), as the replicas resolve it."""
    for app in config["applications"]:
        if app.get("args", {}).get("keys_file"):
            path = Path(app["args"]["keys_file"])
            return path if path.is_absolute() else PROJECT_ROOT / path
    return PROJECT_ROOT / ".keys" / "keys.json"


def print_prometheus_and_key(
    prom: subprocess.Popen | None,
    ports: cluster.ClusterPorts,
    new_key: str | None,
    keys_path: Path,
) -> None:
    """The last lines of the "is up" banner: Prometheus when it runs, a key made just now."""
    if prom is not None:
        print(f"  Prometheus            {prometheus.url(ports.prometheus)}")
    if new_key:
        print(f"\nCreated the first API key (shown once, stored hashed in {keys_path}):")
        print(f"  {new_key}")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def start_prometheus(
    ports: cluster.ClusterPorts, node_metrics_ports: list[int] | None = None
) -> subprocess.Popen | None:
    """Prometheus beside the head, scraping its metrics export (and each other node's, by
    port); without it (no binary, port taken) serving goes on, and only the deployments API's
    metrics answer 503."""
    try:
        binary = prometheus.find_binary()
        if binary is None:
            print(f"Prometheus is not installed: unpacking Debian's into {prometheus.TOOLS_DIR}")
            binary = prometheus.fetch_binary()
        return prometheus.start(
            ports.prometheus,
            [f"127.0.0.1:{port}" for port in [ports.metrics, *(node_metrics_ports or [])]],
            PROJECT_ROOT / ".state" / "prometheus",
            binary=binary,
        )
    except RuntimeError as error:
        print(f"warning: serving without Prometheus: {error}", flush=True)
        return None


def serve(config_path: Path, num_cpus: int) -> int:
    # `kill`, `docker stop` and systemd send SIGTERM: shut down as Ctrl-C does, head included.
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    weights.fetch(load_registry().values())
    config = yaml.safe_load(config_path.read_text())
    keys_path = served_keys_file(config)
    new_key = None
    if not keys.read_store(keys_path):
        new_key = keys.create_key(keys_path, "default")
    http = config.get("http_options", {})
    ports = cluster.ClusterPorts(http=int(http.get("port", 8000)))
    base = f"http://{http.get('host', '127.0.0.1')}:{ports.http}"
    apps = [a["name"] for a in config["applications"]]

    # A head owned by this process: stopping it touches no other Ray cluster on the machine.
    try:
        head = cluster.start_owned_head(ports, num_cpus=num_cpus)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        prom = start_prometheus(ports)
    except BaseException:
        cluster.stop_owned_head(head)
        raise
    runner = subprocess.Popen(
        [str(cluster.BIN / "serve"), "run", str(config_path), "--address", ports.address],
        env=cluster.ray_env(),
        # Started from a background job, this process inherits SIGINT ignored; `serve run`
        # must still stop on the SIGINT sent to it below.
        preexec_fn=_default_sigint,
    )
    try:
        cluster.wait_running(ports, apps)
        print("\nYOLO Endpoints is up:")
        print(f"  Predict page          {base}/")
        for app in config["applications"]:
            if app["route_prefix"] != "/":
                print(f"  endpoint {app['name']:<12} {base}{app['route_prefix']}/")
        print(f"  Deployments API       {base}/api/deployments/<owner>  (docs/deployments.md)")
        print(f"  Ray metrics           http://127.0.0.1:{ports.metrics}/metrics")
        print_prometheus_and_key(prom, ports, new_key, keys_path)
        shown = new_key or "$YOLO_API_KEY"
        print("\nTry it:\n" + curl_example(base, shown, "yolo26n") + "\n", flush=True)
        return runner.wait()
    except KeyboardInterrupt:
        runner.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            runner.wait(timeout=30)  # past that, terminated below
        return 0
    finally:
        if runner.poll() is None:
            runner.terminate()
        if prom is not None:
            prometheus.stop(prom)
        cluster.stop_owned_head(head)
