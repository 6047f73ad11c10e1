"""The deployments control plane: API-created dedicated endpoints, kept in SQLite, run by Serve.

One replica in the shared app (like the Limiter) owns the records (shared/deployment_store.py)
and makes each its own Serve application, built by the same `build_endpoint` builder as the
endpoints of serve_config.yaml, named by its slug and routed at `/endpoints/{slug}`:
- Serve's declarative config and these applications coexist: applying a config deletes only
  the applications a config deployed (Ray 2.60, `application_state.py`), so an operator's
  `serve deploy serve_config.yaml` leaves them running. Deploying them from code (not by
  rewriting the config) is what keeps them out of the operator's way.
- The records are the truth; Serve's applications are made to match them, at start and every
  `reconcile_s`: after `make serve` is stopped (which deletes every application) and started
  again, each record is deployed again as it was left; a stopped one stays stopped. A record
  remembers the generation Serve last got, so a restarted control plane redeploys nothing that
  is already running as recorded.
- Every change and every reconcile pass hold one lock, so two PATCHes to one deployment (or a
  PATCH and a reconcile) never interleave: the second sees what the first left.
- A replica Serve cannot place is retried by Serve forever; after `RAY_SERVE_SLOW_STARTUP_
  WARNING_S` its controller says so (with the resources asked and available) and this control
  plane fails the deployment with that message and removes its application.
It never sees HTTP: the ingress validates requests, checks keys and scopes, and asks here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ray import serve

from deployments.config import HEALTH_CHECK_PERIOD_S, EndpointArgs, SharedArgs
from deployments.directory import serve_details
from shared import lifecycle, rollout
from shared.deployment_store import DeploymentRecord, DeploymentStore, SlugTaken
from shared.lifecycle import DeploymentView
from shared.registry import PROJECT_ROOT
from shared.serve_apps import MODEL_DEPLOYMENT, Endpoint, parse_endpoint

logger = logging.getLogger("ray.serve")

MANAGED = "Deployment managed by serve_config.yaml: edit that file and redeploy"
NOT_FOUND = "Deployment not found"
INGRESS_NEED = {"CPU": 0.1}  # deployments/ingress.py's ray_actor_options
DELETE_WAIT_S = 20.0  # how long a DELETE waits for Serve to let go of the application


class ServeApps(Protocol):
    """What the control plane asks of Serve (tests give it a stand-in)."""

    def details(self) -> dict[str, Any]: ...

    def deploy(self, slug: str, args: EndpointArgs) -> None: ...

    def delete(self, slug: str) -> None: ...

    def free_resources(self) -> list[dict[str, float]]: ...


class RayServeApps:
    def details(self) -> dict[str, Any]:
        return serve_details()

    def deploy(self, slug: str, args: EndpointArgs) -> None:
        from deployments.app import build_endpoint  # the builders import this module

        target = serve.RunTarget(
            build_endpoint(args.model_dump(mode="json")),
            name=slug,
            route_prefix=lifecycle.route_prefix(slug),
            # One JSON object per line: what the deployments' logs route reads back.
            logging_config={"encoding": "JSON"},
        )
        # Submitted, not awaited: the reconcile passes watch it come up (or fail to).
        serve.run_many(
            [target],
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )

    def delete(self, slug: str) -> None:
        serve.delete(slug, _blocking=False)

    def free_resources(self) -> list[dict[str, float]]:
        """Each alive node's unreserved resources; none known: no surge (shared/rollout.py)."""
        try:
            # Ray's only per-node view; the public available_resources() sums the cluster,
            # which would place a replica across two nodes' leftovers.
            from ray._private.state import available_resources_per_node

            return [dict(node) for node in available_resources_per_node().values()]
        except Exception as exc:  # a private API: its absence costs only the surge
            logger.warning("free resources per node unknown: %r", exc)
            return []


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str


@dataclass(frozen=True)
class Done:
    view: DeploymentView
    message: str


@dataclass(frozen=True)
class Create:
    owner: str
    slug: str
    name: str
    project: str
    model: str
    region: str
    cpu: int
    memory_gi: int


@dataclass(frozen=True)
class Change:
    """One PATCH, validated by the ingress: exactly one of its forms."""

    metadata: dict[str, Any] | None = None
    name: str | None = None
    action: str | None = None  # start | stop | replace | resize
    model: str | None = None
    project: str | None = None
    cpu: int | None = None
    memory_gi: int | None = None


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class ControlPlaneApp:
    def __init__(
        self,
        config: SharedArgs,
        app_name: str | None = None,
        apps: ServeApps | None = None,
        reconcile_loop: bool = True,
    ):
        self.config = config
        self.settings = config.control_plane
        # The shared app's own name: its Limiter counts the endpoints' keys with a rate_limit.
        self.app_name = app_name or serve.get_replica_context().app_name
        self.apps = apps or RayServeApps()
        self.store = DeploymentStore(_resolve(self.settings.database))
        self.serve_apps: dict[str, Endpoint] = {}  # the last read of Serve, by app name
        self.names: set[str] = set()  # every application Serve has, endpoint or not
        self._read_once = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # Off only in-process tests, which run each pass themselves (`reconcile`).
        self._reconcile_loop = reconcile_loop
        # Without a running loop (built outside Serve), it starts on first use instead.
        with contextlib.suppress(RuntimeError):
            self._start()

    # -- the reconcile loop -------------------------------------------------------------------
    def _start(self) -> None:
        if self._reconcile_loop and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:  # Serve busy or restarting: the next pass tries again
                logger.exception("deployments reconcile pass failed")
            await asyncio.sleep(self.settings.reconcile_s)

    async def check_health(self) -> None:
        self._start()  # a loop that ended is started again rather than left dead

    async def reconcile(self) -> None:
        """One pass: Serve made to match every record."""
        async with self._lock:
            await self._read_serve()
            for record in await asyncio.to_thread(self.store.all):
                await self._step(record.slug)

    async def _read_serve(self) -> None:
        applications = (await asyncio.to_thread(self.apps.details)).get("applications") or {}
        self.names = set(applications)
        self.serve_apps = {
            name: parse_endpoint(name, app)
            for name, app in applications.items()
            if MODEL_DEPLOYMENT in (app.get("deployments") or {})
        }
        self._read_once = True

    async def _step(self, slug: str) -> None:
        """The record's next step, taken (under the lock, on a fresh read of Serve)."""
        record = await asyncio.to_thread(self.store.get, slug)
        if record is None:
            return
        app = self.serve_apps.get(slug)
        step = lifecycle.next_step(record, app, listed=slug in self.names)
        if step == "wait":
            return
        if step == "deploy":
            surge = await self._surge_percent(record, app)
            try:
                await asyncio.to_thread(
                    self.apps.deploy, slug, self.endpoint_args(record, rollout_surge_percent=surge)
                )
            except Exception as exc:  # Serve refused it (e.g. a config it cannot take)
                logger.warning("deployment %s: deploy refused: %s", slug, exc)
                await self._update(
                    slug, redeploy=False, failure=f"Deploy failed: {_first_line(exc)}"
                )
            else:
                await asyncio.to_thread(self.store.mark_deployed, slug, record.generation)
        elif step == "fail":
            assert app is not None
            logger.warning("deployment %s failed: %s", slug, app.deployment_message)
            await self._update(slug, redeploy=False, failure=app.deployment_message)
            await asyncio.to_thread(self.apps.delete, slug)
        elif step == "delete":
            await asyncio.to_thread(self.apps.delete, slug)
        elif step == "forget":
            await asyncio.to_thread(self.store.delete, slug)
        await self._read_serve()

    async def _update(self, slug: str, *, redeploy: bool, **changes: Any) -> DeploymentRecord:
        return await asyncio.to_thread(self.store.update, slug, redeploy=redeploy, **changes)

    async def _surge_percent(self, record: DeploymentRecord, app: Endpoint | None) -> int:
        """A rollout beside the running replicas where they leave room (shared/rollout.py)."""
        running = app.running_replicas if app is not None and app.status != "DELETING" else 0
        if running == 0:
            return rollout.IN_PLACE
        memory = record.memory_gi * 2**30 if record.memory_gi is not None else 0.0
        model = {"CPU": float(record.cpu), "memory": memory, "GPU": float(self.config.num_gpus)}
        free = await asyncio.to_thread(self.apps.free_resources)
        return rollout.surge_percent(free, model, INGRESS_NEED, running)

    def endpoint_args(
        self, record: DeploymentRecord, rollout_surge_percent: int = 0
    ) -> EndpointArgs:
        """A record as the args of its Serve application: the shared app's settings, but for
        what the record says."""
        shared = self.config
        return EndpointArgs(
            rollout_surge_percent=rollout_surge_percent,
            name=record.slug,
            model=record.model,
            owner=record.owner,
            num_cpus=record.cpu,
            memory_gi=record.memory_gi,
            autoscaling=self.settings.autoscaling,
            limiter_app=self.app_name,
            # As the shared app's replicas: a GPU cluster's endpoints take a GPU each too.
            num_gpus=shared.num_gpus,
            registry=str(_resolve(shared.registry)) if shared.registry else None,
            keys_file=str(_resolve(shared.keys_file)),
            batching=shared.batching,
            backend=shared.backend,
            max_upload_mb=shared.max_upload_mb,
            max_video_mb=shared.max_video_mb,
            max_video_frames=shared.max_video_frames,
            video_frames_in_flight=shared.video_frames_in_flight,
            max_concurrent_videos=shared.max_concurrent_videos,
            allow_url_sources=shared.allow_url_sources,
            url_timeout_s=shared.url_timeout_s,
            model_timeout_s=shared.model_timeout_s,
            max_queued_requests=shared.max_queued_requests,
            cors_origins=shared.cors_origins,
            decode_memory_mb=shared.decode_memory_mb,
            decode_wait_s=shared.decode_wait_s,
            health_ttl_s=shared.health_ttl_s,
        )

    # -- reads --------------------------------------------------------------------------------
    def _bounds(self) -> tuple[int, int]:
        from autoscaling import presets

        config = presets.resolve(self.settings.autoscaling) or {}
        return int(config.get("min_replicas", 1)), int(config.get("max_replicas", 1))

    async def views(self) -> list[DeploymentView]:
        """Every deployment but deleted ones: serve_config.yaml's endpoints and the records."""
        self._start()
        if not self._read_once:
            await self._read_serve()
        every = await asyncio.to_thread(self.store.all)
        records = [r for r in every if r.desired != "deleted"]
        recorded = {r.slug for r in every}
        bounds = self._bounds()
        # An application that is neither a record's nor declared with its args (one deployed
        # from code by hand, or a record's caught before its record is read) is nobody's to
        # see: shown to every owner, it would leak whatever it serves.
        views = [
            lifecycle.config_view(app)
            for app in self.serve_apps.values()
            if app.name not in recorded and app.model_id is not None
        ]
        views += [lifecycle.record_view(r, self.serve_apps.get(r.slug), bounds) for r in records]
        return sorted(views, key=lambda v: v.slug)

    async def view(self, slug: str) -> DeploymentView | None:
        """One deployment as `views` shows it (asked per request: one record read, not all)."""
        self._start()
        if not self._read_once:
            await self._read_serve()
        record = await asyncio.to_thread(self.store.get, slug)
        app = self.serve_apps.get(slug)
        if record is not None:
            if record.desired == "deleted":
                return None
            return lifecycle.record_view(record, app, self._bounds())
        return lifecycle.config_view(app) if app is not None and app.model_id else None

    # -- changes ------------------------------------------------------------------------------
    # Each change runs as a task of its own, shielded: Serve cancels this call when the client
    # that asked goes away, and a change cut short between its steps is left for the reconcile
    # passes to finish instead of finished here.
    async def create(self, request: Create) -> Done | Refusal:
        return await asyncio.shield(asyncio.ensure_future(self._create(request)))

    async def update(self, owner: str, slug: str, change: Change) -> Done | Refusal:
        return await asyncio.shield(asyncio.ensure_future(self._change(owner, slug, change)))

    async def delete(self, owner: str, slug: str) -> Done | Refusal:
        return await asyncio.shield(asyncio.ensure_future(self._delete(owner, slug)))

    async def _create(self, request: Create) -> Done | Refusal:
        self._start()
        async with self._lock:
            await self._read_serve()
            if request.slug in self.names:
                return Refusal(409, f"Deployment '{request.slug}' already exists")
            record = DeploymentRecord(
                slug=request.slug,
                owner=request.owner,
                name=request.name,
                project=request.project,
                model=request.model,
                region=request.region,
                cpu=request.cpu,
                memory_gi=request.memory_gi,
            )
            try:
                await asyncio.to_thread(self.store.create, record)
            except SlugTaken:
                return Refusal(409, f"Deployment '{request.slug}' already exists")
            await self._step_safely(request.slug)
            view = await self._record_view(request.slug)
        return Done(view, f"Deployment '{request.slug}' is being created")

    async def _change(self, owner: str, slug: str, change: Change) -> Done | Refusal:
        self._start()
        async with self._lock:
            found = await self._owned_record(owner, slug)
            if isinstance(found, Refusal):
                return found
            message = await self._apply(found, change)
            if isinstance(message, Refusal):
                return message
            await self._read_serve()
            await self._step_safely(slug)
            view = await self._record_view(slug)
        return Done(view, message)

    async def _step_safely(self, slug: str) -> None:
        """The change is stored: a failure to act on it now (Serve busy) is the next reconcile
        pass's to retry, not the caller's error."""
        try:
            await self._step(slug)
        except Exception:
            logger.exception(
                "deployment %s: acting on the change failed; the next pass retries", slug
            )

    async def _record_view(self, slug: str) -> DeploymentView:
        record = await asyncio.to_thread(self.store.get, slug)
        assert record is not None  # under the lock, just written
        return lifecycle.record_view(record, self.serve_apps.get(slug), self._bounds())

    async def _apply(self, record: DeploymentRecord, change: Change) -> str | Refusal:
        """The change stored; the message that says what happens next."""
        slug = record.slug
        if change.metadata is not None:
            await self._update(slug, redeploy=False, metadata=change.metadata)
            return "Metadata updated"
        if change.name is not None:
            await self._update(slug, redeploy=False, name=change.name)
            return "Name updated"
        if change.action == "stop":
            if record.desired == "stopped":
                return "Already stopped"
            await self._update(slug, redeploy=False, desired="stopped")
            return "Stopping: its replicas shut down; predictions answer 503 until it starts"
        if change.action == "start":
            app = self.serve_apps.get(slug)
            serve_failed = app is not None and app.status in ("DEPLOY_FAILED", "UNHEALTHY")
            if record.desired == "running" and record.failure is None and not serve_failed:
                return "Already running"
            await self._update(slug, redeploy=True, desired="running", failure=None)
            return "Starting"
        if change.action == "replace":
            assert change.model is not None
            changes: dict[str, Any] = {"model": change.model, "failure": None}
            if change.project is not None:
                changes["project"] = change.project
            await self._update(slug, redeploy=True, **changes)
            if record.desired == "stopped":
                return f"Model set to {change.model}: it serves it once started"
            return f"Rolling out {change.model}: the current model serves until it is ready"
        if change.action == "resize":
            sizes = {"cpu": change.cpu, "memory_gi": change.memory_gi}
            changes = {k: v for k, v in sizes.items() if v is not None}
            await self._update(slug, redeploy=True, failure=None, **changes)
            if record.desired == "stopped":
                return "Resized: the new size applies once started"
            return "Resizing: the current replicas serve until the new ones are ready"
        return Refusal(400, f"Action '{change.action}' is not supported")

    async def _delete(self, owner: str, slug: str) -> Done | Refusal:
        self._start()
        async with self._lock:
            found = await self._owned_record(owner, slug)
            if isinstance(found, Refusal):
                return found
            await self._update(slug, redeploy=False, desired="deleted")
            await self._read_serve()
            await self._step_safely(slug)
            view = lifecycle.record_view(found, self.serve_apps.get(slug), self._bounds())
        # Its routes 404 once Serve has let go of the application: wait that long (its replicas
        # finish what they hold first), within reason, and without holding the lock meanwhile.
        deadline = asyncio.get_running_loop().time() + DELETE_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            applications = (await asyncio.to_thread(self.apps.details)).get("applications") or {}
            if slug not in applications:
                break
            await asyncio.sleep(0.25)
        async with self._lock:
            await self._read_serve()
            await self._step_safely(slug)  # forgotten once the application is gone
        return Done(view, f"Deployment '{slug}' deleted")

    async def _owned_record(self, owner: str, slug: str) -> DeploymentRecord | Refusal:
        record = await asyncio.to_thread(self.store.get, slug)
        if record is None or record.desired == "deleted":
            # serve_config.yaml's endpoints are everyone's to see and no one's to change.
            return Refusal(403, MANAGED) if slug in self.serve_apps else Refusal(404, NOT_FOUND)
        if record.owner != owner:
            return Refusal(404, NOT_FOUND)
        return record


# The Serve deployment. Exactly one replica: its lock is what serialises changes. On the head
# node, where the database is (a PersistentVolumeClaim under KubeRay, k8s/rayservice.yaml).
ControlPlane = serve.deployment(
    name="ControlPlane",
    num_replicas=1,
    max_ongoing_requests=100,
    ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)(ControlPlaneApp)
