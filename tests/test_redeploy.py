"""Live changes to a running cluster: batching knobs, autoscaling, and a zero-downtime model swap.

These redeploy the session's cluster, so they run last (see `redeploys` in conftest.py) and each
one puts the config back as it found it.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml

from shared import cluster
from tests.processes import running_replicas
from tests.traffic import Traffic

pytestmark = pytest.mark.redeploys


def _deploy(server, config: dict, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cluster.deploy(path, server.ports)
    # `serve deploy` returns at once; give the controller a moment to take the new target.
    time.sleep(2)
    cluster.wait_running(server.ports, [a["name"] for a in config["applications"]])


def _app(config: dict, name: str) -> dict:
    return next(a for a in config["applications"] if a["name"] == name)


def test_batching_changes_live_without_restart(server, model_stats, tmp_path: Path) -> None:
    before = model_stats("yolo26n")
    config = copy.deepcopy(server.config)
    model = _app(config, "yolo26n")["deployments"][0]
    assert model["name"] == "Model"
    model["user_config"] = {"max_batch_size": 8, "batch_wait_timeout_s": 0.02}
    try:
        _deploy(server, config, tmp_path, "batching")
        deadline = time.monotonic() + 30
        while (after := model_stats("yolo26n"))["max_batch_size"] != 8:
            assert time.monotonic() < deadline, after
            time.sleep(0.5)
        assert after["batch_wait_timeout_s"] == pytest.approx(0.02)
        assert after["pid"] == before["pid"], "the replica restarted"
    finally:
        _deploy(server, server.config, tmp_path, "restore")


def test_endpoint_scales_out_under_load_and_back(server, tmp_path: Path, bus: Path) -> None:
    config = copy.deepcopy(server.config)
    demo = copy.deepcopy(_app(config, "yolo26n"))
    demo["name"] = "autoscale-demo"
    demo["route_prefix"] = "/endpoints/autoscale-demo"
    demo["args"]["name"] = "autoscale-demo"
    demo["args"]["autoscaling"] = "latency-first"
    # The preset with delays short enough for a test.
    demo["args"]["autoscaling_overrides"] = {
        "max_replicas": 2,
        "upscale_delay_s": 1,
        "downscale_delay_s": 4,
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2,
    }
    config["applications"].append(demo)
    try:
        _deploy(server, config, tmp_path, "autoscale")
        assert running_replicas(server.ports, "autoscale-demo", "Model") == 1
        with Traffic(server, "/endpoints/autoscale-demo/predict", bus.read_bytes(), 8) as load:
            deadline = time.monotonic() + 90
            while running_replicas(server.ports, "autoscale-demo", "Model") < 2:
                assert time.monotonic() < deadline, "never scaled out"
                time.sleep(0.5)
        assert load.outcomes and all(o.status == 200 for o in load.outcomes)
        deadline = time.monotonic() + 90
        while running_replicas(server.ports, "autoscale-demo", "Model") > 1:
            assert time.monotonic() < deadline, "never scaled back in"
            time.sleep(0.5)
    finally:
        _deploy(server, server.config, tmp_path, "restore")


def test_model_swap_loses_no_request(server, tmp_path: Path, bus: Path) -> None:
    config = copy.deepcopy(server.config)
    _app(config, "yolo26n")["args"]["model"] = "yolo11n"
    try:
        with Traffic(server, "/endpoints/yolo26n/predict", bus.read_bytes(), 2) as load:
            time.sleep(2)
            _deploy(server, config, tmp_path, "swap")
            deadline = time.monotonic() + 120
            while not load.outcomes or load.outcomes[-1].model != "yolo11n.pt":
                assert time.monotonic() < deadline, load.outcomes[-3:]
                time.sleep(0.5)
            time.sleep(2)
        failures = [o for o in load.outcomes if o.status != 200]
        assert not failures, failures[:5]
        models = [o.model for o in load.outcomes]
        assert models[0] == "yolo26n.pt" and models[-1] == "yolo11n.pt"
    finally:
        _deploy(server, server.config, tmp_path, "restore")
