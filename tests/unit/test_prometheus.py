"""shared/prometheus.py: the config it writes, and a real Prometheus scraping a tiny exporter.

The binary must be there (`.ci/run` installs it; `fetch_binary` unpacks it otherwise): a
missing one fails these tests rather than skipping them.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from shared import prometheus


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_config_scrapes_ray_targets_at_the_interval():
    config = yaml.safe_load(prometheus.render_config(["127.0.0.1:8080"], 5))
    assert config["global"]["scrape_interval"] == "5s"
    assert config["global"]["scrape_timeout"] == "5s"  # never longer than the interval
    [job] = config["scrape_configs"]
    assert job["job_name"] == "ray"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]
    assert "file_sd_configs" not in job


def test_config_sub_second_interval():
    config = yaml.safe_load(prometheus.render_config(["127.0.0.1:1"], 0.5))
    assert config["global"]["scrape_interval"] == "500ms"


def test_config_adds_service_discovery_only_when_the_file_exists(tmp_path: Path):
    missing = tmp_path / "missing.json"
    job = yaml.safe_load(prometheus.render_config(["127.0.0.1:8080"], 5, missing))
    assert "file_sd_configs" not in job["scrape_configs"][0]

    discovery = tmp_path / "prom_metrics_service_discovery.json"
    discovery.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": ["10.0.0.2:8080"]}]))
    [job] = yaml.safe_load(prometheus.render_config([], 5, discovery))["scrape_configs"]
    assert job["job_name"] == "ray"
    assert job["file_sd_configs"][0]["files"] == [str(discovery)]
    assert "static_configs" not in job


def test_config_with_nothing_to_scrape_is_refused():
    with pytest.raises(ValueError):
        prometheus.render_config([], 5)


class _Exporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"# TYPE demo_total counter\ndemo_total 3\n"
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def _query(port: int, expr: str) -> list[dict]:
    address = f"{prometheus.url(port)}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(address, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success"
    return answer["data"]["result"]


def test_a_real_prometheus_scrapes_the_target(tmp_path: Path):
    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    target = f"127.0.0.1:{exporter.server_address[1]}"
    port = _free_port()
    process = prometheus.start(port, [target], tmp_path, scrape_interval_s=1)
    try:
        assert (tmp_path / "prometheus.yml").is_file()
        assert (tmp_path / "tsdb").is_dir()
        deadline = time.monotonic() + 20
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = _query(port, "demo_total")
            if result:
                break
            time.sleep(0.5)
        assert result, "Prometheus did not scrape demo_total within 20 s"
        [series] = result
        assert series["metric"]["job"] == "ray"
        assert series["metric"]["instance"] == target
        assert float(series["value"][1]) == 3
        # A second server on the same port is refused, not mistaken for ready.
        with pytest.raises(RuntimeError, match="in use"):
            prometheus.start(port, [target], tmp_path / "second")
    finally:
        prometheus.stop(process)
        exporter.shutdown()
        exporter.server_close()
    assert process.poll() is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{prometheus.url(port)}/-/ready", timeout=2)
