"""Admin and scenario endpoints under /__sandbox (not API traffic: not logged, not counted).

GET  /__sandbox/requests                  the request log
POST /__sandbox/reset                     back to the seeded org
GET  /__sandbox/records/{sobject}         every record (?include_deleted=true for deleted ones too)
POST /__sandbox/scenario/close-won        {"opportunity_id"}: a rep moves it to Closed Won
POST /__sandbox/scenario/update           {"sobject", "id", "fields"}: a rep edits a record
POST /__sandbox/scenario/create           {"sobject", "fields"}: a rep creates a record
POST /__sandbox/scenario/commit-late      {"sobject", "id", "fields", "minutes_ago"}: a rep's edit committed late,
                                          its SystemModstamp minutes old (salesforce-api.md §4.1)
GET|POST /__sandbox/faults                read / change fault settings (JSON of FaultSettings fields, among
                                          them the after-apply ones: applied_{drop,503,504,slow}_{rate,next},
                                          applied_slow_seconds, applied_writes_only, applied_paths)
GET  /__sandbox/faults/fired              {"applied_drop", "applied_503", "applied_504", "applied_slow"}: how
                                          many fired since the start or /reset (each is also the `fault` of
                                          its request log entry)
POST /__sandbox/expire-sessions           every access token stops working now
POST /__sandbox/schema                    {"remove": ["Obj.Field"], "add": [{CustomField fields}]}
GET|POST /__sandbox/usage                 {"used", "max", "per_second_cap"}; POST {"used": N} sets the counter,
                                          {"max": N} the daily allocation, {"per_second_cap": N or null} the
                                          per-second cap (/reset restores the configured max and cap)
POST /__sandbox/refresh-token             issues a refresh token the org accepts
POST /__sandbox/scenario/delete           {"sobject", "id"}: a rep deletes a record
POST /__sandbox/scenario/undelete         {"sobject", "id"}: a rep restores it from the Recycle Bin

Change Data Capture and the Pub/Sub API (salesforce-api.md §4.3):
GET  /__sandbox/pubsub/requests           the RPC log: {"method", "topic", "status", "error_code", "rpc_id",
                                          "events", "at"} per call (Subscribe once it has ended)
GET|POST /__sandbox/pubsub/entities       {"entities": [...]} selected for CDC; POST {"select": [...],
                                          "deselect": [...]} changes the selection
POST /__sandbox/pubsub/reset-streams      cut every open Subscribe stream with UNAVAILABLE now, or with
                                          {"after_events": N} once N more events have been delivered
POST /__sandbox/pubsub/expire-replay-ids  purge the event bus: stored replay ids become invalid
POST /__sandbox/pubsub/gap                {"sobject", "ids", "change_type": "GAP_UPDATE"}: a gap event
POST /__sandbox/pubsub/overflow           {"sobject"}: a GAP_OVERFLOW event
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from revdaemon.sandbox.salesforce.errors import SfError
from revdaemon.sandbox.salesforce.settings import CustomField
from revdaemon.sandbox.server import ADMIN_PREFIX, iter_entries

if TYPE_CHECKING:
    from revdaemon.sandbox.salesforce.app import SalesforceSim


def mount(sim: SalesforceSim) -> Mount:
    async def payload(request: Request) -> dict[str, Any]:
        raw = await request.body()
        data = json.loads(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)  # type: ignore[no-any-return]
            except SfError as error:
                return JSONResponse(error.body(), status_code=error.status)
            except (KeyError, ValueError, TypeError) as error:
                return JSONResponse({"error": str(error)}, status_code=400)
        return endpoint

    async def requests(request: Request) -> Response:
        return JSONResponse(list(iter_entries(sim.log)))

    async def reset(request: Request) -> Response:
        sim.reset()
        return JSONResponse({"reset": True})

    async def records(request: Request) -> Response:
        include = request.query_params.get("include_deleted", "").lower() == "true"
        return JSONResponse(sim.records(request.path_params["sobject"], include_deleted=include))

    async def close_won(request: Request) -> Response:
        data = await payload(request)
        return JSONResponse(sim.close_won(str(data["opportunity_id"])))

    async def update(request: Request) -> Response:
        data = await payload(request)
        return JSONResponse(sim.update(str(data["sobject"]), str(data["id"]), dict(data.get("fields") or {})))

    async def create(request: Request) -> Response:
        data = await payload(request)
        record_id = sim.create(str(data["sobject"]), dict(data.get("fields") or {}))
        return JSONResponse(sim.record(str(data["sobject"]), record_id), status_code=201)

    async def commit_late(request: Request) -> Response:
        data = await payload(request)
        return JSONResponse(sim.commit_late(str(data["sobject"]), str(data["id"]), dict(data.get("fields") or {}),
                                            minutes_ago=float(data.get("minutes_ago", 5.0))))

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            return JSONResponse(sim.set_faults(**(await payload(request))))
        return JSONResponse(sim.faults.as_dict())

    async def fired(request: Request) -> Response:
        return JSONResponse(sim.faults_fired())

    async def expire(request: Request) -> Response:
        sim.expire_sessions()
        return JSONResponse({"expired": True})

    async def schema(request: Request) -> Response:
        data = await payload(request)
        for dotted in data.get("remove", []):
            obj, _, name = str(dotted).partition(".")
            sim.remove_field(obj, name)
        for spec in data.get("add", []):
            fields = dict(spec)
            for key in ("picklist",):
                if key in fields:
                    fields[key] = tuple(fields[key])
            sim.add_field(CustomField(**fields))
        return JSONResponse({"version": sim.schema.version})

    async def usage(request: Request) -> Response:
        if request.method == "POST":
            data = await payload(request)
            if not {"used", "max", "per_second_cap"} & data.keys():
                raise ValueError('expected any of "used", "max", "per_second_cap"')
            if "max" in data:
                sim.usage.set_daily_limit(int(data["max"]))
            if "used" in data:
                sim.set_api_usage(int(data["used"]))
            if "per_second_cap" in data:
                cap = data["per_second_cap"]
                sim.usage.set_per_second_cap(None if cap is None else int(cap))
        return JSONResponse({"used": sim.usage.used, "max": sim.usage.daily_limit,
                             "per_second_cap": sim.usage.per_second_cap})

    async def refresh_token(request: Request) -> Response:
        return JSONResponse({"refresh_token": sim.issue_refresh_token()})

    async def delete(request: Request) -> Response:
        data = await payload(request)
        sim.delete(str(data["sobject"]), str(data["id"]))
        return JSONResponse({"deleted": True})

    async def undelete(request: Request) -> Response:
        data = await payload(request)
        return JSONResponse(sim.undelete(str(data["sobject"]), str(data["id"])))

    async def pubsub_streams(request: Request) -> Response:
        # Open Subscribe streams, each already placed in the event stream (a LATEST one misses nothing after this).
        return JSONResponse({"open_streams": sim.cdc.streams.count})

    async def pubsub_requests(request: Request) -> Response:
        return JSONResponse([e.as_dict() for e in sim.pubsub_log.entries()])

    async def entities(request: Request) -> Response:
        if request.method == "POST":
            data = await payload(request)
            for name in data.get("select", []):
                sim.select_for_cdc(str(name))
            for name in data.get("deselect", []):
                sim.select_for_cdc(str(name), selected=False)
        return JSONResponse({"entities": sorted(sim.cdc.capture.selected)})

    async def reset_streams(request: Request) -> Response:
        data = await payload(request)
        after = data.get("after_events")
        sim.reset_pubsub_streams(after_events=None if after is None else int(after))
        return JSONResponse({"open_streams": sim.cdc.streams.count})

    async def expire_replay_ids(request: Request) -> Response:
        sim.expire_replay_ids()
        return JSONResponse({"expired": True})

    async def gap(request: Request) -> Response:
        data = await payload(request)
        sim.publish_gap_event(str(data["sobject"]), [str(i) for i in data.get("ids", [])],
                              str(data.get("change_type", "GAP_UPDATE")))
        return JSONResponse({"published": True})

    async def overflow(request: Request) -> Response:
        data = await payload(request)
        sim.publish_gap_overflow(str(data["sobject"]))
        return JSONResponse({"published": True})

    routes = [
        Route("/requests", guarded(requests), methods=["GET"]),
        Route("/reset", guarded(reset), methods=["POST"]),
        Route("/records/{sobject}", guarded(records), methods=["GET"]),
        Route("/scenario/close-won", guarded(close_won), methods=["POST"]),
        Route("/scenario/update", guarded(update), methods=["POST"]),
        Route("/scenario/create", guarded(create), methods=["POST"]),
        Route("/scenario/commit-late", guarded(commit_late), methods=["POST"]),
        Route("/faults", guarded(faults), methods=["GET", "POST"]),
        Route("/faults/fired", guarded(fired), methods=["GET"]),
        Route("/expire-sessions", guarded(expire), methods=["POST"]),
        Route("/schema", guarded(schema), methods=["POST"]),
        Route("/usage", guarded(usage), methods=["GET", "POST"]),
        Route("/refresh-token", guarded(refresh_token), methods=["POST"]),
        Route("/scenario/delete", guarded(delete), methods=["POST"]),
        Route("/scenario/undelete", guarded(undelete), methods=["POST"]),
        Route("/pubsub/requests", guarded(pubsub_requests), methods=["GET"]),
        Route("/pubsub/streams", guarded(pubsub_streams), methods=["GET"]),
        Route("/pubsub/entities", guarded(entities), methods=["GET", "POST"]),
        Route("/pubsub/reset-streams", guarded(reset_streams), methods=["POST"]),
        Route("/pubsub/expire-replay-ids", guarded(expire_replay_ids), methods=["POST"]),
        Route("/pubsub/gap", guarded(gap), methods=["POST"]),
        Route("/pubsub/overflow", guarded(overflow), methods=["POST"]),
    ]
    return Mount(ADMIN_PREFIX, routes=routes)
