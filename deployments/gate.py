"""Admission: the one place that decides whether a keyed request may go on, on every route.

`Gate.admit` applies, in this order, the rules every route that takes a key shares:
1. the key itself: missing, malformed, unknown or revoked answers 401;
2. the rate limit: a key's own `rate_limit` counts on every route; the app's default limit
   (20 per window) counts only on routes whose `RouteRules.default_limit` says so (the shared
   service's); dedicated endpoints stay unlimited for keys without a limit of their own;
3. the model: a key restricted to some models gets, for any other model, exactly the 404 that
   a missing model gets on that route, so keys cannot probe what exists; so does a key of
   another owner on an API-created deployment (each is its owner's workspace's alone).
Counting comes before the model check, so 404s count too (model IDs cannot be probed faster
than the limit). The admission's headers (`X-RateLimit-*`) go on every response of the route
after that, errors included.

A key the limiter has refused is answered 429 by the ingress replica itself until the limiter's
"retry in" has passed: rejected requests are not counted, so nothing can admit the key before
then and the answer is exact (a spent key hammering the service costs no limiter round trip).
The deadline is taken from when the refused call was sent, so it never outlasts the limiter's.
Such a 429, and every 401 of the key itself, carries a `Hold` (shared/holds.py) that lets the
proxy's edge repeat it until then without asking any ingress replica.

When the key's limiter shard is unavailable (its replica dead or restarting, its app not
deployed, or no answer within `timeout_s`) the gate FAILS OPEN: the request is admitted
uncounted and a warning is logged (at most one per `WARN_EVERY_S` per ingress replica, with a
count; never key material). Such responses carry `X-RateLimit-Limit` but omit
`X-RateLimit-Remaining` and `X-RateLimit-Reset`, since nobody counted. Open, not closed,
because the limit is about fairness: a limiter outage must not take inference down with it.
Serve restarts the limiter replica by itself, and the next call that reaches it is counted
again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ray.serve.handle import DeploymentHandle
from starlette.requests import Request

from deployments.limiter import LimiterShards
from shared.errors import ApiError
from shared.holds import Hold
from shared.keys import KeyRecord, KeyRing
from shared.ratelimit import Decision, Refused, refusal_message

logger = logging.getLogger("ray.serve")

WARN_EVERY_S = 10.0
DISCOVERY = 0  # in Gate._asked: the shard count asked of another app (no object's id() is 0)
MAX_REFUSED_KEYS = 100_000  # refusals remembered per ingress replica (expired ones go first)


@dataclass(frozen=True)
class RouteRules:
    """What a keyed route applies beyond the key itself."""

    default_limit: bool  # keys without a rate_limit of their own count against the app's
    not_found: str = "Model not found"  # what this route answers for a missing model
    checks_model: bool = True  # False: the route names no model (a listing filters instead)


SHARED_ROUTE = RouteRules(default_limit=True)
# Listing the models is no prediction: the Predict page lists them on every load, which must
# not spend the key's 20 predictions a minute (a key's own limit still counts it).
SHARED_LISTING = RouteRules(default_limit=False, checks_model=False)
DEDICATED_ROUTE = RouteRules(default_limit=False)
DEDICATED_INFO = DEDICATED_ROUTE
# The SDK's `/api/deployments/{owner}/{deployment}/...` routes: a dedicated endpoint by name
# (predict, and reading or managing it), no default limit, as on the endpoint itself.
FORWARDED_ROUTE = RouteRules(default_limit=False, not_found="Deployment not found")
# `GET /api/account/summary`: names no model. The official SDK's CLI asks it before a call whose
# owner was omitted, so counting it against the app's default (predict) limit would spend a
# prediction on every such call; uncounted by default, like the dedicated routes. A key's own
# `rate_limit` still counts, as on every route.
ACCOUNT_ROUTE = RouteRules(default_limit=False, checks_model=False)
# `GET` and `POST /api/deployments/{owner}`: the owner's deployments name no model (the list
# filters by the key's models instead); management is no prediction, so uncounted by default.
DEPLOYMENTS_ROUTE = RouteRules(default_limit=False, checks_model=False)


@dataclass(frozen=True)
class Admission:
    key: KeyRecord
    headers: dict[str, str]  # to attach to every response for this request
    limit: int | None = None  # the key's requests per window on this route, when counted


class Gate:
    def __init__(
        self,
        keys: KeyRing,
        limiter: LimiterShards | None = None,
        default_limit: int | None = None,
        timeout_s: float = 0.5,
        first_timeout_s: float = 3.0,
    ):
        self.keys = keys
        self.limiter = limiter
        self.default_limit = default_limit  # requests per window; None: the app has none
        self.timeout_s = timeout_s
        # A replica's first call to each limiter shard also sets up Serve's router for it,
        # which takes longer than an answer does; judge availability on the steady state only.
        # Only the first call to each gets the long wait, answered or not: a limiter app that
        # is not deployed must not cost every request seconds.
        self.first_timeout_s = first_timeout_s
        self._asked: set[int] = set()  # id() of each shard asked once; DISCOVERY for the count
        self._answered = False
        self._failed_open = 0
        self._last_warning = -WARN_EVERY_S
        self._refused: dict[str, Refused] = {}  # key id -> until when the limiter refuses it

    def limit_for(self, key: KeyRecord, rules: RouteRules) -> int | None:
        """Requests per window this key may make on a route with these rules (None: unlimited)."""
        if key.rate_limit is not None:
            return key.rate_limit
        return self.default_limit if rules.default_limit else None

    async def admit(
        self,
        authorization: str | None,
        rules: RouteRules,
        model_id: str | None = None,
        owner: str | None = None,
    ) -> Admission:
        """The caller's key and its response headers, or ApiError 401, 429 or 404.

        `model_id` is the registry model the request reaches, None when there is none (an
        unknown model or deployment): that answers the route's 404 once counted. `owner`: the
        workspace whose keys alone may reach it (an API-created deployment's); another
        owner's key gets the same 404.
        """
        try:
            key = self.keys.authenticate(authorization)
        except ApiError as exc:
            exc.hold = Hold(401, self.keys.fresh_for(time.monotonic()))
            raise
        limit = self.limit_for(key, rules)
        headers = await self._count(key, limit)
        counted = limit if "X-RateLimit-Remaining" in headers else None
        foreign = owner is not None and key.owner != owner
        if rules.checks_model and (model_id is None or not key.allows(model_id) or foreign):
            raise ApiError(404, rules.not_found, headers)
        return Admission(key, headers, counted)

    async def count_images(self, admission: Admission, images: int) -> Admission:
        """An admitted request found to carry `images` images: each counts as one request.
        It is counted whole, or refused with a 429 and nothing counted (the admission's own
        count given back); uncounted admissions stay uncounted."""
        if images <= 1 or admission.limit is None:
            return admission
        headers = await self._count(admission.key, admission.limit, held=1, cost=images)
        return Admission(admission.key, headers or admission.headers, admission.limit)

    async def _count(
        self, key: KeyRecord, limit: int | None, held: int = 0, cost: int = 1
    ) -> dict[str, str]:
        if limit is None:
            return {}
        if self.limiter is None:
            return {"X-RateLimit-Limit": str(limit)}  # nobody to count with: as if it were down
        refused = self._refused.get(key.id)
        if refused is not None and cost == 1 and not held:
            local = refused.decision(limit, time.monotonic())
            if local is not None:
                raise _refused(local, refused.until)
        asked_at = time.monotonic()
        decision = await self._ask(key, limit, held, cost)
        if decision is None:
            return {"X-RateLimit-Limit": str(limit)}
        if not decision.allowed:
            if cost == 1 and not held:  # a refusal of several may leave room for one
                until = asked_at + decision.wait_s
                self._remember(key.id, Refused(until, decision))
                raise _refused(decision, until)
            raise ApiError(429, refusal_message(decision, cost), decision.headers())
        return decision.headers()

    def _remember(self, key_id: str, refused: Refused) -> None:
        if len(self._refused) >= MAX_REFUSED_KEYS:
            now = time.monotonic()
            self._refused = {k: r for k, r in self._refused.items() if r.until > now}
        if len(self._refused) < MAX_REFUSED_KEYS:
            self._refused[key_id] = refused

    async def _ask(self, key: KeyRecord, limit: int, held: int, cost: int) -> Decision | None:
        """The limiter's decision, or None when it cannot give one in time (fail open)."""
        assert self.limiter is not None
        started = time.perf_counter()
        try:
            # Immediate once the shards are known; before, another app's shard 0 is asked.
            shard = await asyncio.wait_for(
                self.limiter.for_key(key.id), self._timeout_for(DISCOVERY)
            )
            # On timeout wait_for cancels the await, which withdraws the call without blocking
            # (DeploymentResponse.cancel() can block the event loop until assignment).
            decision = await asyncio.wait_for(
                self._call(shard, key, limit, held, cost), self._timeout_for(id(shard))
            )
        except Exception as exc:  # any failure of the limiter, not of the request: fail open
            self._warn(exc)
            return None
        if not self._answered:
            logger.info(
                "rate limiter first answered in %.0f ms", (time.perf_counter() - started) * 1e3
            )
            self._answered = True
        return decision

    def _timeout_for(self, what: int) -> float:
        if what in self._asked:
            return self.timeout_s
        self._asked.add(what)
        return self.first_timeout_s

    @staticmethod
    async def _call(
        shard: DeploymentHandle, key: KeyRecord, limit: int, held: int, cost: int
    ) -> Decision:
        if held or cost != 1:
            return await shard.top_up.remote(key.id, limit, held, cost)
        return await shard.acquire.remote(key.id, limit)

    def _warn(self, exc: Exception) -> None:
        self._failed_open += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            logger.warning(
                "rate limiter unavailable (%s): admitted %d request(s) uncounted (fail open)",
                type(exc).__name__,
                self._failed_open,
            )
            self._last_warning = now
            self._failed_open = 0


def _refused(decision: Decision, until: float) -> ApiError:
    """The 429 of a refused single request, held (for an edge) until the refusal runs out."""
    hold = Hold(429, until - time.monotonic(), refusal=decision)
    return ApiError(429, refusal_message(decision), decision.headers(), hold)


# The route's admission headers travel in the request scope, so the exception handlers can put
# them on error responses too (they get a fresh Request over the same scope).
_STATE_KEY = "rate_limit_headers"


def attach_limit_headers(request: Request, headers: dict[str, str]) -> None:
    setattr(request.state, _STATE_KEY, headers)


def limit_headers(request: Request) -> dict[str, str]:
    return dict(getattr(request.state, _STATE_KEY, {}))
