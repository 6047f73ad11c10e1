"""The ingress's route table, per mode: each route with its handler and its declared operation.

A function of the handlers rather than code inside the deployment, so that the table can be
read without Ray: the shared app's document describes the dedicated endpoints from the same
table, and the offline tests check the document of each mode's table. Where the table is only
read, never served, the Ingress class itself stands in for an instance (its functions are
never called there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from starlette.routing import BaseRoute, Route

from deployments import operations as ops
from deployments.routes import ApiMount, ApiRoute

Mode = Literal["shared", "dedicated"]
DOCUMENT_PATH = "/openapi.json"
ENDPOINT_PREFIX = "/endpoints/{endpoint}"  # Serve's route prefix of each dedicated endpoint


def api_routes(mode: Mode, ingress: Any) -> list[BaseRoute]:
    """Every route of an ingress in `mode` but its Predict page's, on `ingress`'s handlers."""
    if mode == "shared":
        routes: list[BaseRoute] = [
            ApiRoute(
                "/api/models", ingress.list_models, methods=["GET"], operation=ops.LIST_MODELS
            ),
            # The official SDK's account: the key's owner, which its CLI fills omitted owners with.
            ApiRoute(
                "/api/account/summary",
                ingress.account_summary,
                methods=["GET"],
                operation=ops.ACCOUNT_SUMMARY,
            ),
            ApiRoute(
                "/api/models/{model_id}/predict",
                ingress.predict_shared,
                methods=["POST"],
                operation=ops.PREDICT,
            ),
            # The official SDK's paths: a Platform model URL, and a dedicated deployment.
            ApiRoute(
                "/api/models/{owner}/{project}/{model_id}/predict",
                ingress.predict_shared,
                methods=["POST"],
                operation=ops.PREDICT_SDK_MODEL,
            ),
            ApiRoute(
                "/api/deployments/{owner}/{deployment}/predict",
                ingress.predict_forwarded,
                methods=["POST"],
                operation=ops.PREDICT_SDK_DEPLOYMENT,
            ),
            # The rest of the SDK's deployments (deployments/deployment_routes.py). One route
            # per method, each with its operation.
            ApiRoute(
                "/api/deployments/{owner}",
                ingress.list_deployments,
                methods=["GET"],
                operation=ops.LIST_DEPLOYMENTS,
            ),
            ApiRoute(
                "/api/deployments/{owner}",
                ingress.create_deployment,
                methods=["POST"],
                operation=ops.CREATE_DEPLOYMENT,
            ),
            ApiRoute(
                "/api/deployments/{owner}/{deployment}",
                ingress.retrieve_deployment,
                methods=["GET"],
                operation=ops.RETRIEVE_DEPLOYMENT,
            ),
            ApiRoute(
                "/api/deployments/{owner}/{deployment}",
                ingress.update_deployment,
                methods=["PATCH"],
                operation=ops.UPDATE_DEPLOYMENT,
            ),
            ApiRoute(
                "/api/deployments/{owner}/{deployment}",
                ingress.delete_deployment,
                methods=["DELETE"],
                operation=ops.DELETE_DEPLOYMENT,
            ),
            ApiRoute(
                "/api/deployments/{owner}/{deployment}/health",
                ingress.deployment_health,
                methods=["GET"],
                operation=ops.DEPLOYMENT_HEALTH,
            ),
            ApiRoute(
                "/api/deployments/{owner}/{deployment}/logs",
                ingress.deployment_logs,
                methods=["GET"],
                operation=ops.DEPLOYMENT_LOGS,
            ),
            ApiRoute(
                "/api/deployments/{owner}/{deployment}/metrics",
                ingress.deployment_metrics,
                methods=["GET"],
                operation=ops.DEPLOYMENT_METRICS,
            ),
            ApiRoute("/health", ingress.health, methods=["GET"], operation=ops.SERVICE_HEALTH),
            # Serve routes a dedicated endpoint that runs no application here (prefix `/`):
            # one that does not exist answers exactly what a key restricted away from an
            # existing one gets; one stopped or starting says so (503). The document
            # describes these paths as the endpoints' own (`documented_routes`).
            Route(
                "/endpoints/{name}/predict",
                ingress.missing_endpoint,
                methods=["POST"],
                include_in_schema=False,
            ),
            Route(
                "/endpoints/{name}/info",
                ingress.missing_endpoint,
                methods=["GET"],
                include_in_schema=False,
            ),
        ]
    else:
        routes = [
            ApiRoute(
                "/predict",
                ingress.predict_dedicated,
                methods=["POST"],
                operation=ops.ENDPOINT_PREDICT,
            ),
            ApiRoute("/health", ingress.health, methods=["GET"], operation=ops.ENDPOINT_HEALTH),
            ApiRoute("/info", ingress.info, methods=["GET"], operation=ops.ENDPOINT_INFO),
        ]
    routes.append(
        ApiRoute(DOCUMENT_PATH, ingress.api_description, methods=["GET"], operation=ops.DOCUMENT)
    )
    return routes


def documented_routes(mode: Mode, ingress: Any, served: Sequence[BaseRoute]) -> list[BaseRoute]:
    """What an app's document describes: the routes it serves and, on the shared app (which
    Serve routes the whole host to but for the endpoints' prefixes), every dedicated endpoint's
    routes under its prefix, so one document covers the host. Each endpoint's own document
    stays its own: it is not part of that view."""
    if mode != "shared":
        return list(served)
    dedicated = [
        r for r in api_routes("dedicated", ingress) if getattr(r, "path", "") != DOCUMENT_PATH
    ]
    mount = ApiMount(
        ENDPOINT_PREFIX, dedicated, params=(ops.ENDPOINT,), responses=ops.UNDER_ENDPOINT_PREFIX
    )
    return [*served, mount]
