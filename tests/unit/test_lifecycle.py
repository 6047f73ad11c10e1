"""A deployment's lifecycle (shared/lifecycle.py): a record read against its Serve application.

Tables over what matters: the owner's `desired`, a stored failure, the application (none, or
as Serve's own schema models report it: tests/fakes.py `serve_app`) and how far the record's
generation is from the one Serve was handed. `status` is what the SDK shows; `next_step` is
what the control plane does about it.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from shared import lifecycle
from shared.deployment_store import DeploymentRecord
from shared.lifecycle import DeploymentView
from shared.serve_apps import UNSCHEDULABLE, Endpoint, cannot_fit, parse_endpoint
from tests.fakes import serve_app

SLUG = "acme-detect"
STUCK = (
    f"Deployment 'Model' in application '{SLUG}' has 1 replicas that have taken more than 10s "
    "to be scheduled. This may be due to waiting for the cluster to auto-scale or for a runtime "
    "environment to be installed. Resources required for each replica: {'CPU': 1.0, 'memory': "
    "34359738368.0}, total resources available: {'CPU': 15.0}. Use `ray status` for more details."
)
assert UNSCHEDULABLE in STUCK
STARTING = "Deployment 'Model' is starting its replicas"
CRASHED = f"Deploying application {SLUG} failed: RuntimeError: no weights"
FAILURE = "No node fits 64 CPUs and 512 GiB per replica"

# How far the record is from what Serve was handed: (generation, deployed_generation).
NEW = (1, None)  # never deployed
CURRENT = (2, 2)
BEHIND = (3, 2)  # changed since the last deploy


def record(
    desired: str = "running", failure: str | None = None, gens=CURRENT, **changes
) -> DeploymentRecord:
    generation, deployed = gens
    values = {
        "slug": SLUG,
        "owner": "acme",
        "name": "Detect",
        "project": "vision",
        "model": "yolo26n",
        "region": "us",
        "cpu": 2,
        "memory_gi": 4,
        "desired": desired,
        "failure": failure,
        "generation": generation,
        "deployed_generation": deployed,
        "created_at": 100.0,
        "updated_at": 200.0,
    }
    return DeploymentRecord(**{**values, **changes})


def app(status: str = "RUNNING", **kwargs) -> Endpoint:
    kwargs.setdefault("running", 1 if status == "RUNNING" else 0)
    return parse_endpoint(SLUG, serve_app(SLUG, "yolo26n", status, **kwargs))


RUNNING = app()
DEPLOYING = app("DEPLOYING", deployment_message=STARTING)
WAITING = app("DEPLOYING", target=2)  # no message of Serve's yet
UNSCHEDULED = app("DEPLOYING", deployment_message=STUCK)
DELETING = app("DELETING")
FAILED = app("DEPLOY_FAILED", message=CRASHED + "\nTraceback (most recent call last):\n  ...")
APPS = {
    "none": None,
    "running": RUNNING,
    "deploying": DEPLOYING,
    "waiting": WAITING,
    "unscheduled": UNSCHEDULED,
    "deleting": DELETING,
    "deploy_failed": FAILED,
}


def case(name: str, desired: str, failure: str | None, app_name: str, gens, *expected):
    return pytest.param(record(desired, failure, gens), APPS[app_name], *expected, id=name)


STATUS_CASES = [
    # Running, nothing failed: how far Serve has got.
    case("new-no-app", "running", None, "none", NEW, "creating", "Creating"),
    case("new-app-deleting", "running", None, "deleting", NEW, "creating", "Creating"),
    case("deployed-no-app", "running", None, "none", CURRENT, "deploying", "Deploying again"),
    case("behind-no-app", "running", None, "none", BEHIND, "deploying", "Deploying again"),
    case("deployed-deleting", "running", None, "deleting", CURRENT, "deploying", "again"),
    case("running", "running", None, "running", CURRENT, "ready", ""),
    case("running-behind", "running", None, "running", BEHIND, "deploying", "Rolling out"),
    case("running-unmarked", "running", None, "running", NEW, "deploying", "Rolling out"),
    case("deploying", "running", None, "deploying", CURRENT, "deploying", STARTING),
    case("waiting", "running", None, "waiting", CURRENT, "deploying", "(0 of 2 running)"),
    case("unscheduled", "running", None, "unscheduled", CURRENT, "failed", STUCK),
    case("unscheduled-behind", "running", None, "unscheduled", BEHIND, "deploying", "Rolling"),
    case("deploy-failed", "running", None, "deploy_failed", CURRENT, "failed", CRASHED),
    case("deploy-failed-behind", "running", None, "deploy_failed", BEHIND, "deploying", "Roll"),
    # A stored failure is shown whatever Serve still has.
    case("failed-no-app", "running", FAILURE, "none", CURRENT, "failed", FAILURE),
    case("failed-new", "running", FAILURE, "none", NEW, "failed", FAILURE),
    case("failed-running", "running", FAILURE, "running", CURRENT, "failed", FAILURE),
    case("failed-unscheduled", "running", FAILURE, "unscheduled", CURRENT, "failed", FAILURE),
    case("failed-deleting", "running", FAILURE, "deleting", BEHIND, "failed", FAILURE),
    # Stopped: stopping while Serve has an application, whatever it is doing.
    case("stopped", "stopped", None, "none", CURRENT, "stopped", "Stopped"),
    case("stopped-failed", "stopped", FAILURE, "none", CURRENT, "stopped", "Stopped"),
    case("stopped-behind", "stopped", None, "none", BEHIND, "stopped", "Stopped"),
    case("stopping", "stopped", None, "running", CURRENT, "stopping", "Stopping"),
    case("stopping-deleting", "stopped", None, "deleting", CURRENT, "stopping", "Stopping"),
    case("stopping-unsched", "stopped", None, "unscheduled", CURRENT, "stopping", "Stopping"),
    case("stopping-failed", "stopped", FAILURE, "deploy_failed", CURRENT, "stopping", "Stop"),
    # Deleted: stopping until the record is forgotten.
    case("deleted-no-app", "deleted", None, "none", CURRENT, "stopping", "Deleting"),
    case("deleted-running", "deleted", None, "running", CURRENT, "stopping", "Deleting"),
    case("deleted-deleting", "deleted", None, "deleting", NEW, "stopping", "Deleting"),
    case("deleted-failed", "deleted", FAILURE, "deploy_failed", BEHIND, "stopping", "Deleting"),
]


@pytest.mark.parametrize(("rec", "app_", "expected", "message"), STATUS_CASES)
def test_status(rec: DeploymentRecord, app_: Endpoint | None, expected: str, message: str):
    state, text = lifecycle.status(rec, app_)
    assert state == expected
    if message:
        assert message in text
    else:
        assert text == ""


def test_status_messages_are_whole_and_first_lines_only():
    assert lifecycle.status(record(failure=FAILURE), None) == ("failed", FAILURE)
    assert lifecycle.status(record(), UNSCHEDULED) == ("failed", STUCK)
    assert lifecycle.status(record(), FAILED) == ("failed", CRASHED)  # no traceback
    assert lifecycle.status(record(), WAITING) == (
        "deploying",
        "waiting for replicas to start (0 of 2 running)",
    )


STEP_CASES = [
    # Serve takes no deploy of a name it is deleting: whatever the record says, wait.
    case("deleting-running", "running", None, "deleting", CURRENT, "wait"),
    case("deleting-new", "running", None, "deleting", NEW, "wait"),
    case("deleting-behind", "running", None, "deleting", BEHIND, "wait"),
    case("deleting-stopped", "stopped", None, "deleting", CURRENT, "wait"),
    case("deleting-failed", "running", FAILURE, "deleting", CURRENT, "wait"),
    case("deleting-deleted", "deleted", None, "deleting", CURRENT, "wait"),
    # Deleted: its application deleted, then the record forgotten.
    case("deleted-running", "deleted", None, "running", CURRENT, "delete"),
    case("deleted-unscheduled", "deleted", None, "unscheduled", CURRENT, "delete"),
    case("deleted-deploy-failed", "deleted", FAILURE, "deploy_failed", BEHIND, "delete"),
    case("deleted-gone", "deleted", None, "none", CURRENT, "forget"),
    case("deleted-gone-new", "deleted", FAILURE, "none", NEW, "forget"),
    # Stopped or failed: no application, then nothing to do until the owner acts.
    case("stopped-running", "stopped", None, "running", CURRENT, "delete"),
    case("stopped-deploying", "stopped", None, "deploying", BEHIND, "delete"),
    case("stopped-gone", "stopped", None, "none", CURRENT, "wait"),
    case("stopped-gone-behind", "stopped", None, "none", BEHIND, "wait"),
    case("failed-running", "running", FAILURE, "running", CURRENT, "delete"),
    case("failed-unscheduled", "running", FAILURE, "unscheduled", CURRENT, "delete"),
    case("failed-gone", "running", FAILURE, "none", CURRENT, "wait"),
    case("failed-gone-behind", "running", FAILURE, "none", BEHIND, "wait"),
    # Running: deployed when Serve lacks it or has an older generation.
    case("new", "running", None, "none", NEW, "deploy"),
    case("lost", "running", None, "none", CURRENT, "deploy"),
    case("lost-behind", "running", None, "none", BEHIND, "deploy"),
    case("running", "running", None, "running", CURRENT, "wait"),
    case("running-behind", "running", None, "running", BEHIND, "deploy"),
    case("running-unmarked", "running", None, "running", NEW, "deploy"),
    case("deploying", "running", None, "deploying", CURRENT, "wait"),
    case("waiting", "running", None, "waiting", CURRENT, "wait"),
    case("deploying-behind", "running", None, "deploying", BEHIND, "deploy"),
    # Serve would try to place it forever: the control plane fails it instead...
    case("unscheduled", "running", None, "unscheduled", CURRENT, "fail"),
    # ...unless a change (a resize) is still to be handed to Serve.
    case("unscheduled-behind", "running", None, "unscheduled", BEHIND, "deploy"),
    # Serve's own failure is shown as such (status) and left to the owner's next change.
    case("deploy-failed", "running", None, "deploy_failed", CURRENT, "wait"),
    case("deploy-failed-behind", "running", None, "deploy_failed", BEHIND, "deploy"),
]


@pytest.mark.parametrize(("rec", "app_", "expected"), STEP_CASES)
def test_next_step(rec: DeploymentRecord, app_: Endpoint | None, expected: str):
    assert lifecycle.next_step(rec, app_) == expected


def test_unschedulable_only_while_deploying():
    # The same message on an application that runs (some replicas placed) fails nothing.
    running = replace(RUNNING, deployment_message=STUCK)
    assert lifecycle.next_step(record(), running) == "wait"
    assert lifecycle.status(record(), running) == ("ready", "")


STATUSES = {"creating", "deploying", "ready", "stopping", "stopped", "failed"}


@pytest.mark.parametrize(
    ("desired", "failure", "app_name", "gens"),
    list(
        itertools.product(
            ["running", "stopped", "deleted"], [None, FAILURE], APPS, [NEW, CURRENT, BEHIND]
        )
    ),
)
def test_status_and_step_agree(desired, failure, app_name, gens):
    rec, app_ = record(desired, failure, gens), APPS[app_name]
    state, _ = lifecycle.status(rec, app_)
    step = lifecycle.next_step(rec, app_)
    assert state in STATUSES
    if state == "ready":
        assert step == "wait"
    if step == "fail":
        assert lifecycle.status(rec, app_) == ("failed", app_.deployment_message)
    if step == "forget":
        assert (desired, app_) == ("deleted", None)
    if step == "deploy":
        assert desired == "running" and failure is None and state in ("creating", "deploying")
    if desired != "running" or failure is not None:
        assert step in ("delete", "forget", "wait")


def test_record_view_with_an_application():
    rec = record(gens=CURRENT, metadata={"team": "vision"})
    live = app(autoscaling=(2, 6), deployed_at=1767229200.0)
    view = lifecycle.record_view(rec, live, bounds=(1, 4))
    assert view == DeploymentView(
        slug=SLUG,
        name="Detect",
        owner="acme",
        model_id="yolo26n",
        status="ready",
        status_message="",
        route_prefix=f"/endpoints/{SLUG}",
        cpu=2,
        memory_gi=4,
        min_instances=2,  # Serve's bounds, not the argument
        max_instances=6,
        created_at_s=100.0,
        updated_at_s=200.0,
        deployed_at_s=1767229200.0,
        project="vision",
        region="us",
        metadata={"team": "vision"},
    )
    assert view.managed and view.visible_to("acme") and not view.visible_to("other")


def test_record_view_without_an_application():
    view = lifecycle.record_view(record("stopped"), None, bounds=(1, 4))
    assert (view.status, view.min_instances, view.max_instances) == ("stopped", 1, 4)
    assert view.deployed_at_s is None  # no application, no deploy to tell of
    assert (view.created_at_s, view.updated_at_s) == (100.0, 200.0)
    assert view.route_prefix == f"/endpoints/{SLUG}"


def test_record_view_of_a_fixed_size_application():
    fixed = app(autoscaling=None, target=3, running=3)
    view = lifecycle.record_view(record(), fixed, bounds=(1, 4))
    assert (view.min_instances, view.max_instances) == (3, 3)


def test_record_view_shows_the_failure():
    view = lifecycle.record_view(record(failure=FAILURE), None, bounds=(0, 2))
    assert (view.status, view.status_message) == ("failed", FAILURE)
    assert (view.min_instances, view.max_instances) == (0, 2)


def test_config_view():
    details = serve_app("yolo26n", "yolo26n", num_cpus=3, autoscaling=(1, 5), deployed_at=5.0)
    actor = details["deployments"]["Model"]["deployment_config"]["ray_actor_options"]
    actor["memory"] = 1.5 * lifecycle.GIB
    view = lifecycle.config_view(parse_endpoint("yolo26n", details))
    assert view == DeploymentView(
        slug="yolo26n",
        name="yolo26n",
        owner=None,
        model_id="yolo26n",
        status="ready",
        status_message="",
        route_prefix="/endpoints/yolo26n",
        cpu=3.0,
        memory_gi=1.5,
        min_instances=1,
        max_instances=5,
        created_at_s=5.0,  # Serve keeps one time: its last deploy
        updated_at_s=5.0,
        deployed_at_s=5.0,
    )
    assert view.project is None and view.region is None and view.metadata == {}
    assert not view.managed
    assert view.visible_to("acme") and view.visible_to("anyone")


def test_config_view_of_an_unrouted_failing_application():
    endpoint = replace(FAILED, name="legacy", route_prefix=None, model_id=None)
    view = lifecycle.config_view(endpoint)
    assert view.route_prefix == "/endpoints/legacy"
    assert (view.status, view.status_message) == ("failed", CRASHED)
    assert view.model_id is None
    assert view.memory_gi == 0.0  # none reserved


def test_config_view_rounds_memory():
    endpoint = replace(RUNNING, memory_bytes=1_000_000_000.0)
    assert lifecycle.config_view(endpoint).memory_gi == 0.931


def test_a_slow_start_that_fits_is_no_failure() -> None:
    # What a loaded machine gives after a restart: the replica fits, it is only slow.
    slow = (
        "Deployment 'Model' in application 'lasting' has 1 replicas that have taken more than "
        '10s to be scheduled. Resources required for each replica: {"CPU": 1.0, "memory": '
        '2147483648}, total resources available: {"memory": 12912519168.0, "CPU": 9.4}.'
    )
    assert not cannot_fit(slow)
    slow_app = app("DEPLOYING", deployment_message=slow)
    assert lifecycle.next_step(record(), slow_app) == "wait"
    assert cannot_fit(STUCK)  # 32 GiB of memory on a cluster that has none free
    assert cannot_fit("taken more than 10s to be scheduled, for reasons unsaid")
