"""The Kubernetes manifests, checked offline.

- The RayService against KubeRay's CRD schema (a copy in tests/data/k8s, origin noted there),
  made strict the way `kubectl apply --validate=strict` is: an unknown field is an error.
- Core kinds (Secret, Ingress, the state PersistentVolumeClaim, and the Service and pod
  templates inside the RayService) with kubernetes-validate's bundled Kubernetes schemas, strict.
- PodMonitors (a prometheus-operator CRD that no package here ships) against a schema of the
  fields we use, and against the pods they must select.
- serveConfigV2 against serve_config.yaml (the generator's drift check) and Ray Serve's schema.
- The Grafana dashboard against the metrics we export.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from functools import cache
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deployments.config import SharedArgs
from deployments.metrics import (
    BATCH_SIZE,
    DECODE_SECONDS,
    HELD_ANSWERS,
    INFERENCE_SECONDS,
    POSTPROCESS_SECONDS,
    PREPROCESS_SECONDS,
    QUEUE_WAIT_SECONDS,
    RATE_LIMITED,
    REQUEST_SECONDS,
)
from shared.cluster import CONTROLLER_ENV
from shared.registry import PROJECT_ROOT
from tests.promql import dashboard_exprs, exported_names, metric_names

K8S = PROJECT_ROOT / "k8s"
CRD = Path(__file__).resolve().parent.parent / "data" / "k8s" / "ray.io_rayservices.yaml"
# The oldest Kubernetes we claim to run on, and the newest the validator knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def documents() -> tuple[dict, ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return tuple(docs)


def one(kind: str) -> dict:
    found = [d for d in documents() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return copy.deepcopy(found[0])


def all_of(kind: str) -> list[dict]:
    return [copy.deepcopy(d) for d in documents() if d["kind"] == kind]


def serve_config_v2() -> dict:
    return yaml.safe_load(one("RayService")["spec"]["serveConfigV2"])


def pod_templates(rayservice: dict) -> dict[str, dict]:
    """ "head" and each worker group's name -> its pod template."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster["workerGroupSpecs"]:
        templates[group["groupName"]] = group["template"]
    return templates


# -- the RayService against KubeRay's CRD ----------------------------------------------------
def strict(schema: Any) -> Any:
    """An OpenAPI schema where objects with declared properties reject undeclared ones."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def rayservice_validator() -> jsonschema.Draft202012Validator:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["names"]["kind"] == "RayService"
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft202012Validator(strict(v1["schema"]["openAPIV3Schema"]))


def crd_errors(document: dict) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in rayservice_validator().iter_errors(document)
    ]


def test_the_rayservice_is_valid_against_kuberays_crd() -> None:
    rayservice = one("RayService")
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert crd_errors(rayservice) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda r: r["spec"]["rayClusterConfig"].update(workerGroupSpec=[]),  # a typo'd field
        lambda r: r["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(minReplicas="3"),
        lambda r: r["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName"),
        lambda r: r["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][
            0
        ].update(imagePullPolicy=7),
    ],
)
def test_the_crd_check_rejects_broken_rayservices(breakage) -> None:
    rayservice = one("RayService")
    breakage(rayservice)
    assert crd_errors(rayservice)


# -- core kinds with kubernetes-validate -----------------------------------------------------
def core_objects() -> list[dict]:
    rayservice = one("RayService")
    serve_service = {"apiVersion": "v1", "kind": "Service", **rayservice["spec"]["serveService"]}
    templates = [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": t}
        for name, t in pod_templates(rayservice).items()
    ]
    return [one("Secret"), one("Ingress"), one("PersistentVolumeClaim"), serve_service, *templates]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_kinds_are_valid_kubernetes(version: str) -> None:
    for document in core_objects():
        kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_validate_rejects_a_broken_ingress() -> None:
    ingress = one("Ingress")
    ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ingress, K8S_VERSIONS[-1], strict=True)


# -- PodMonitors: the fields we use, and the pods they select --------------------------------
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]},
        "sourceLabels": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[a-zA-Z_]\w*$"},
        },
        "targetLabel": {"type": "string", "pattern": r"^[a-zA-Z_]\w*$"},
    },
}
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "labels": _LABELS},
        },
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS},
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string"},
                            "relabelings": {"type": "array", "items": _RELABEL},
                        },
                    },
                },
            },
        },
    },
}


def test_podmonitors_follow_kuberays_conventions_and_select_our_pods() -> None:
    monitors = all_of("PodMonitor")
    assert {m["spec"]["selector"]["matchLabels"]["ray.io/node-type"] for m in monitors} == {
        "head",
        "worker",
    }
    templates = pod_templates(one("RayService"))
    for monitor in monitors:
        jsonschema.validate(monitor, PODMONITOR_SCHEMA)
        assert monitor["metadata"]["labels"].get("release"), "Prometheus selects on `release`"
        wanted = dict(monitor["spec"]["selector"]["matchLabels"])
        node_type = wanted.pop("ray.io/node-type")  # KubeRay sets it on every Ray pod
        groups = ["head"] if node_type == "head" else [g for g in templates if g != "head"]
        for group in groups:
            labels = templates[group]["metadata"]["labels"]
            assert wanted.items() <= labels.items(), f"{monitor['metadata']['name']} misses {group}"
            ports = {p["name"] for c in templates[group]["spec"]["containers"] for p in c["ports"]}
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in ports, f"{group} has no port {endpoint['port']!r}"
                relabel = endpoint["relabelings"][0]
                assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_ray_io_cluster"]
                assert relabel["targetLabel"] == "ray_io_cluster"


def test_metrics_ports_match_the_ray_start_params() -> None:
    cluster = one("RayService")["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        port = int(group["rayStartParams"]["metrics-export-port"])
        container = group["template"]["spec"]["containers"][0]
        assert {"name": "metrics", "containerPort": port} in container["ports"]


# -- the cluster's shape ---------------------------------------------------------------------
def test_head_does_no_model_work_and_gpu_workers_autoscale() -> None:
    cluster = one("RayService")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = cluster["workerGroupSpecs"]
    assert 1 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    spec = gpu["template"]["spec"]
    limits = spec["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    # Every model application's replica takes a whole GPU: the floor must fit them all.
    model_apps = [
        a
        for a in serve_config_v2()["applications"]
        if a["import_path"] in generator().MODEL_BUILDERS
    ]
    assert gpu["minReplicas"] >= len(model_apps)


def test_the_key_secret_is_mounted_where_the_serve_config_reads_it() -> None:
    secret = one("Secret")
    assert json.loads(secret["stringData"]["keys.json"]) == {"keys": []}
    for name, template in pod_templates(one("RayService")).items():
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (mount,) = [
            m
            for m in template["spec"]["containers"][0]["volumeMounts"]
            if volumes[m["name"]].get("secret", {}).get("secretName") == secret["metadata"]["name"]
        ]
        assert mount["readOnly"] is True, name
        assert mount["mountPath"] == generator().KEYS_DIR, name
    for app in serve_config_v2()["applications"]:
        assert app["args"]["keys_file"] == f"{generator().KEYS_DIR}/keys.json"


def shared_app() -> dict:
    (app,) = [
        a
        for a in serve_config_v2()["applications"]
        if a["import_path"] == generator().SHARED_BUILDER
    ]
    return app


def test_the_control_planes_database_is_on_the_state_volume_of_the_head_only() -> None:
    claim = one("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # Read the way the shared app will read it, so a renamed key fails here too.
    database = PurePosixPath(SharedArgs.model_validate(shared_app()["args"]).control_plane.database)
    assert database.is_absolute()
    assert database.parent == PurePosixPath(generator().STATE_DIR)
    for name, template in pod_templates(one("RayService")).items():
        spec = template["spec"]
        claimed = {
            v["name"]
            for v in spec["volumes"]
            if v.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]
        }
        mounts = [
            m for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] in claimed
        ]
        if name != "head":  # the ControlPlane replica is pinned to the head node
            assert not claimed, name
            continue
        (mount,) = mounts
        assert mount["mountPath"] == str(database.parent)
        assert not mount.get("readOnly")
        assert spec["securityContext"]["fsGroup"] in (100, 1000)  # the image's user ray


def test_the_cluster_override_keeps_the_other_control_plane_args() -> None:
    config = {
        "applications": [
            {
                "import_path": generator().SHARED_BUILDER,
                "args": {"control_plane": {"database": "x.sqlite", "reconcile_s": 5}},
            }
        ]
    }
    (app,) = generator().kubernetes_config(config)["applications"]
    assert app["args"]["control_plane"] == {"database": generator().DATABASE, "reconcile_s": 5}
    assert config["applications"][0]["args"]["control_plane"]["database"] == "x.sqlite"


def test_every_ray_container_gets_the_controllers_env() -> None:
    for name, template in pod_templates(one("RayService")).items():
        for container in template["spec"]["containers"]:
            env = {e["name"]: e["value"] for e in container["env"]}
            assert CONTROLLER_ENV.items() <= env.items(), f"{name}/{container['name']}"


def test_the_ingress_reaches_serve_on_port_8000() -> None:
    rayservice = one("RayService")
    service = rayservice["spec"]["serveService"]
    (port,) = service["spec"]["ports"]
    assert port["name"] == "serve"  # the port KubeRay looks for
    assert port["port"] == serve_config_v2()["http_options"]["port"] == 8000
    backend = one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"number": 8000}}


# -- serveConfigV2 ---------------------------------------------------------------------------
def test_serve_config_v2_is_what_the_generator_writes() -> None:
    committed = (K8S / "rayservice.yaml").read_text()
    assert committed == generator().generated_manifest(), (
        "k8s/rayservice.yaml drifted from serve_config.yaml: run `python k8s/generate.py`"
    )
    assert generator().main(["--check"]) == 0


def test_the_drift_check_fails_when_serve_config_changes(tmp_path: Path) -> None:
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    config["applications"][-1]["route_prefix"] += "-v2"
    changed = tmp_path / "serve_config.yaml"
    changed.write_text(yaml.safe_dump(config))
    regenerated = generator().generated_manifest(changed)
    assert regenerated != (K8S / "rayservice.yaml").read_text()
    assert config["applications"][-1]["route_prefix"] in regenerated


def test_splice_replaces_only_the_block() -> None:
    manifest = "a: 1\nspec:\n  serveConfigV2: |\n    old: 1\n\n    older: 2\n\n  other: 3\n"
    spliced = generator().splice(manifest, "new: 1\nnested:\n  x: 2\n")
    assert (
        spliced
        == "a: 1\nspec:\n  serveConfigV2: |\n    new: 1\n    nested:\n      x: 2\n\n  other: 3\n"
    )


def test_serve_config_v2_is_serve_config_with_the_cluster_overrides() -> None:
    from ray.serve.schema import ServeDeploySchema

    local = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    cluster = serve_config_v2()
    ServeDeploySchema.model_validate(cluster)  # what KubeRay will hand to Serve
    assert cluster["http_options"]["host"] == "0.0.0.0"
    assert cluster["proxy_location"] == "EveryNode"
    routes = {a["name"]: a["route_prefix"] for a in cluster["applications"]}
    assert routes == {a["name"]: a["route_prefix"] for a in local["applications"]}
    model_apps = [
        a for a in cluster["applications"] if a["import_path"] in generator().MODEL_BUILDERS
    ]
    assert model_apps
    for app in model_apps:
        assert app["args"]["num_gpus"] == 1
    for app in cluster["applications"]:
        registry = app["args"].get("registry")
        assert registry is None or registry.startswith(generator().APP_DIR + "/")


def test_app_args_other_than_the_overrides_are_unchanged() -> None:
    overridden = {"keys_file", "num_gpus", "registry", "control_plane", "rate_limit"}
    local = {
        a["name"]: a
        for a in yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())["applications"]
    }
    for app in serve_config_v2()["applications"]:
        mine = {k: v for k, v in app["args"].items() if k not in overridden}
        theirs = {k: v for k, v in local[app["name"]]["args"].items() if k not in overridden}
        assert mine == theirs
        local_limit = local[app["name"]]["args"].get("rate_limit")
        if local_limit is not None:  # the same limit; only its shards are sized for the cluster
            assert {**app["args"]["rate_limit"], "shards": None} == {**local_limit, "shards": None}
        # Deployments are the same but for GPU batching, where a model's user_config is set,
        # and the Ingress's replicas (test_the_manifest_is_sized_as_capacity_plans).
        gpu_batching = generator().GPU_BATCHING
        expected = [
            {**d, "user_config": gpu_batching} if "user_config" in d else d
            for d in local[app["name"]].get("deployments", [])
            if d["name"] != "Ingress"
        ]
        assert [d for d in app.get("deployments", []) if d["name"] != "Ingress"] == expected


def test_the_manifest_is_sized_as_capacity_plans() -> None:
    """docs/scaling.md's model (shared/capacity.py) for KUBERAY_LOAD is what the manifest sets:
    each app's Ingress replicas, the limiter's shards, and CPUs enough for all of it."""
    from shared.capacity import BUSY, KUBERAY_LOAD, plan

    shared_builder = generator().SHARED_BUILDER
    planned_cores = 0.0
    for app in serve_config_v2()["applications"]:
        shared = app["import_path"] == shared_builder
        sized = plan(KUBERAY_LOAD["shared" if shared else "endpoint"])
        (ingress,) = [d for d in app["deployments"] if d["name"] == "Ingress"]
        assert ingress["num_replicas"] == sized.ingress_replicas >= 2
        if shared:
            assert app["args"]["rate_limit"]["shards"] == sized.limiter_shards
        planned_cores += sized.ingress_replicas * BUSY + sized.proxy_cores
    cluster = one("RayService")["spec"]["rayClusterConfig"]
    (gpu,) = cluster["workerGroupSpecs"]
    pod_cpus = float(gpu["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
    # Model replicas take a CPU each beside their GPU; the rest is the ingresses and proxies.
    model_apps = len(serve_config_v2()["applications"])
    assert planned_cores + model_apps <= gpu["minReplicas"] * pod_cpus


# -- the image -------------------------------------------------------------------------------
def test_the_manifest_runs_the_image_the_dockerfile_builds() -> None:
    import ray

    dockerfile = (K8S / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert one("RayService")["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
    assert f"WORKDIR {generator().APP_DIR}" in dockerfile
    assert "yolo-endpoints weights" in dockerfile
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", dockerfile, re.MULTILINE)
    assert not any(".keys" in c or ".weights" in c for c in copied)
    images = {
        c["image"]
        for t in pod_templates(one("RayService")).values()
        for c in t["spec"]["containers"]
    }
    assert len(images) == 1, "head and workers must run the same image"
    (image,) = images
    assert f"docker build -f k8s/Dockerfile -t {image} ." in dockerfile


# -- the Grafana dashboard -------------------------------------------------------------------
@cache
def dashboard_names() -> frozenset[str]:
    dashboard = json.loads((K8S / "grafana-dashboard.json").read_text())
    return frozenset(n for expr in dashboard_exprs(dashboard) for n in metric_names(expr))


def test_every_dashboard_metric_is_ours_or_a_ray_serve_builtin() -> None:
    names = dashboard_names()
    assert names
    unknown = sorted(
        n for n in names if n not in exported_names() and not n.startswith("ray_serve_")
    )
    assert not unknown, f"the dashboard queries metrics nobody exports: {unknown}"


def test_the_dashboard_shows_what_operators_need() -> None:
    dashboard = json.loads((K8S / "grafana-dashboard.json").read_text())
    exprs = dashboard_exprs(dashboard)
    for stage in (
        REQUEST_SECONDS,
        DECODE_SECONDS,
        QUEUE_WAIT_SECONDS,
        PREPROCESS_SECONDS,
        INFERENCE_SECONDS,
        POSTPROCESS_SECONDS,
    ):
        for quantile in ("0.5", "0.95", "0.99"):
            assert any(
                f"histogram_quantile({quantile}," in e and f"ray_{stage.name}_bucket" in e
                for e in exprs
            ), f"no p{quantile} of {stage.name}"
    assert any("ray_yolo_requests_total" in e and "rate(" in e for e in exprs)  # QPS
    assert any('status=~"5.."' in e for e in exprs)  # error rate
    assert any(f"ray_{RATE_LIMITED.name}_total" in e for e in exprs)  # 429 rate
    assert any(f"ray_{HELD_ANSWERS.name}_total" in e for e in exprs)  # ... and the proxy's
    assert any(f"ray_{BATCH_SIZE.name}_bucket" in e for e in exprs)  # batch-size distribution
    assert any("ray_serve_deployment_replica_healthy" in e for e in exprs)  # replicas


def test_exported_names_follow_rays_prefix_and_suffixes() -> None:
    # What the e2e scrape showed for Ray 2.60: `ray_` prefix, counters as `_total` only.
    assert "ray_yolo_requests_total" in exported_names()
    assert "ray_yolo_requests" not in exported_names()
    assert {"ray_yolo_batch_size_bucket", "ray_yolo_batch_size_sum"} <= exported_names()
