"""Admin endpoints under /__sandbox: request log, webhook log, faults, reset, webhook targets, scenarios.

GET|POST /__sandbox/faults        read / change FAULT_FIELDS (a JSON object of them); also {"next": [statuses]}
                                  for the next requests, before they are handled, and {"applied_next":
                                  ["drop", 503, 504, "slow", "none"]} for the next applied targeted requests
GET  /__sandbox/faults/fired      {"applied_drop", "applied_503", "applied_504", "applied_slow"}: how many
                                  after-apply faults fired since the start or /reset (each is also the
                                  `fault` of its request log entry)
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from revdaemon.sandbox.nue.errors import bad_request, not_found
from revdaemon.sandbox.nue.responses import json_response
from revdaemon.sandbox.nue.routes import read_json
from revdaemon.sandbox.server import ADMIN_PREFIX, iter_entries

if TYPE_CHECKING:
    from revdaemon.sandbox.nue.sim import NueSim

def _paths(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise bad_request("applied_paths: a JSON array of \"[METHOD ]/glob\" patterns")
    return tuple(str(v) for v in value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_request("applied_writes_only: true or false")
    return value


FAULT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "rate_429": float, "error_rate": float, "latency_ms": float, "retry_after_seconds": int,
    "applied_drop_rate": float, "applied_503_rate": float, "applied_504_rate": float, "applied_slow_rate": float,
    "applied_slow_seconds": float, "applied_writes_only": _flag, "applied_paths": _paths,
}
SCENARIO_ACTIONS = (
    "create_customer", "update_customer", "create_order", "activate_order", "create_and_activate_order",
    "change", "advance_days", "expire_subscription", "post_invoice", "submit_invoice", "activate_invoice",
    "cancel_invoice", "pay_invoice", "fail_collection", "transfer_invoice", "commit_quote", "requote",
    "set_quote_status", "commit_late", "issue_credit_memo",
)


def admin_routes(sim: NueSim) -> list[Route]:
    async def requests(request: Request) -> Response:
        return json_response({"requests": list(iter_entries(sim.log))})

    async def webhooks(request: Request) -> Response:
        return json_response({"targets": sim.webhooks.targets,
                              "deliveries": [d.as_dict() for d in sim.webhooks.deliveries()],
                              "published": sim.webhooks.published()})

    async def flush(request: Request) -> Response:
        return json_response({"idle": sim.webhooks.flush(timeout=10)})

    async def faults(request: Request) -> Response:
        body = (await read_json(request) or {}) if request.method == "POST" else {}
        if not isinstance(body, dict):
            raise bad_request("faults: a JSON object")
        unknown = set(body) - {"next", "applied_next", *FAULT_FIELDS}
        if unknown:
            raise bad_request(f"unknown fault setting {sorted(unknown)[0]!r}")
        try:
            changes = {key: FAULT_FIELDS[key](value) for key, value in body.items() if key in FAULT_FIELDS}
            dataclasses.replace(sim.settings, **changes).validate()  # nothing changes if any value is refused
            statuses = [int(v) for v in body.get("next", [])]
        except (TypeError, ValueError) as exc:
            raise bad_request(f"faults: {exc}") from None
        if "applied_next" in body:
            if not isinstance(body["applied_next"], list):
                raise bad_request("applied_next: a JSON array")
            try:
                sim.faults.script_applied(body["applied_next"])
            except ValueError as exc:
                raise bad_request(str(exc)) from None
        if statuses:
            sim.faults.script(statuses)
        for key, value in changes.items():
            setattr(sim.settings, key, value)
        return json_response({key: getattr(sim.settings, key) for key in FAULT_FIELDS})

    async def fired(request: Request) -> Response:
        return json_response(sim.faults.fired.as_dict())

    async def reset(request: Request) -> Response:
        sim.reset()
        return json_response({"reset": True})

    async def targets(request: Request) -> Response:
        body = await read_json(request)
        urls = body.get("targets") if isinstance(body, dict) else body
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise bad_request("targets: a JSON array of URLs, or {\"targets\": [...]}")
        sim.webhooks.set_targets(urls)
        return json_response({"targets": urls})

    async def scenario(request: Request) -> Response:
        action = request.path_params["action"].replace("-", "_")
        if action not in SCENARIO_ACTIONS:
            raise not_found(f"no scenario action {action!r}; known: {', '.join(SCENARIO_ACTIONS)}")
        kwargs = await read_json(request) or {}
        if not isinstance(kwargs, dict):
            raise bad_request("scenario arguments: a JSON object")
        method = getattr(sim.scenario, action)
        try:
            inspect.signature(method).bind(**kwargs)
        except TypeError as exc:
            raise bad_request(f"{action}: {exc}") from None
        result: Any = method(**kwargs)
        return json_response({"result": result})

    p = ADMIN_PREFIX
    return [
        Route(f"{p}/requests", requests, methods=["GET"]),
        Route(f"{p}/webhooks", webhooks, methods=["GET"]),
        Route(f"{p}/webhooks/flush", flush, methods=["POST"]),
        Route(f"{p}/faults", faults, methods=["GET", "POST"]),
        Route(f"{p}/faults/fired", fired, methods=["GET"]),
        Route(f"{p}/reset", reset, methods=["POST"]),
        Route(f"{p}/webhook-targets", targets, methods=["POST"]),
        Route(f"{p}/scenario/{{action}}", scenario, methods=["POST"]),
    ]
