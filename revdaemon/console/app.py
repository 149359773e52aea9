"""The console's pages and actions: Starlette routes, Jinja2 templates (autoescaped), no JavaScript needed.

Every page reads through `revdaemon.service`, and every action calls the same service function as the
CLI, so nothing here knows SQL or an API. Every POST needs a session and its CSRF token; every answer
carries a strict Content-Security-Policy, and nothing a template renders is a secret.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import pass_context
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from revdaemon import service
from revdaemon.config import Settings
from revdaemon.console.auth import SESSION_COOKIE, Admins, LoginLimiter, Session, Sessions, csrf_ok
from revdaemon.console.charts import bar_chart_svg, minute_bars
from revdaemon.console.failures import LogFailures
from revdaemon.domain.budget import BudgetPlan, describe_seconds
from revdaemon.domain.record_names import LinkOut, NameBook, parse_ref, target_ref
from revdaemon.engine.change_stream import CURSOR_PREFIX as STREAM_CURSOR
from revdaemon.engine.change_stream import cursor_name
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.preview import Preview
from revdaemon.engine.reconcile import RunRefused
from revdaemon.engine.sync_status import NAME as SYNC_STATUS
from revdaemon.engine.sync_status import SyncStatus
from revdaemon.errors import RecordNotFound, StoreError
from revdaemon.flows.base import Flow
from revdaemon.limits import DailyBudget
from revdaemon.ops.health import Health
from revdaemon.store import Store
from revdaemon.store.ids import STORE_ID_MAX, STORE_ID_PATTERN, parse_store_id
from revdaemon.store.records import utcnow
from revdaemon.store.states import EventStatus

HERE = Path(__file__).parent
LOGIN_CSRF_COOKIE = "revdaemon_login_csrf"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
MAX_SELECTION = 200  # records per replay or repair, like one Collections call
MAX_SHADOW_WRITES = 300  # planned writes one drill-down page shows (each with its diff); the rest are counted


class StoreIdConvertor(Convertor[int]):
    """A path segment that can be a stored row's id (1 to 2^63 - 1): any other never matches the route (404),
    so no handler sees a number the store cannot take."""

    regex = STORE_ID_PATTERN

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("store_id", StoreIdConvertor())


class BadRequest(ValueError):
    """A form value the console cannot take (no selection, an id no row can have): 400, with the reason."""


@dataclass
class ConsoleContext:
    """What the pages read and the actions use; the daemon builds it from its running parts."""

    store: Store
    settings: Settings
    health: Health = field(default_factory=Health)
    flows: Sequence[Flow] = ()
    fetcher: Fetcher | None = None  # for dry-run diffs; None: previews say they cannot read
    sync_status: SyncStatus | None = None  # the status fields the executor adds to each write; None: off
    salesforce_budget: DailyBudget | None = None
    api_calls: Callable[[], dict[str, int]] = dict
    parked: Callable[[], dict[str, str]] = dict
    wake_workers: Callable[[], None] = lambda: None
    report_path: Path | None = None
    salesforce_url: Callable[[], str | None] = lambda: None  # the org's instance URL once known: links to records
    # Starts a reconciliation in the daemon (flow 8, run by its scheduler); raises RunRefused with the reason.
    run_reconciliation: Callable[[], Awaitable[str]] | None = None
    reconciliation_running: Callable[[], datetime | None] = lambda: None


def build_console(context: ConsoleContext) -> Starlette:
    settings = context.settings.console
    admins = Admins({name: token.get_secret_value() for name, token in settings.admins.items()})
    sessions = Sessions(lifetime_seconds=settings.session_minutes * 60.0)
    limiter = LoginLimiter(per_minute=settings.login_attempts_per_minute)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["show"] = _show
    templates.env.filters["when"] = _when

    def links() -> LinkOut:
        return LinkOut(salesforce_base=context.settings.salesforce.instance_url or context.salesforce_url(),
                       nue_pattern=context.settings.console.nue_record_url)

    @pass_context
    def record(page_values: Any, ref: Any, about: Any = None) -> Markup:
        """A record ref, key or id as a page shows it: what the record is called (`about`, else from the page's
        `names`, the kept names of the records it mentions), then the id, a link to the record in its own app
        where its URL is known."""
        text = "" if ref is None else str(ref)
        if about is None and isinstance(page_values.get("names"), NameBook):
            about = page_values["names"].text_of(text)
        parsed = parse_ref(text)
        url = links().url(parsed.record_id, system=parsed.system, sobject=parsed.object)
        shown: Markup = escape(text)
        if url:
            shown = Markup('<a class="out" href="{}" rel="noreferrer" target="_blank" '
                           'title="open the record in its own app">{}</a>').format(url, text)
        if about:
            return Markup('<span class="name">{}</span> <span class="mono small">{}</span>').format(about, shown)
        return Markup('<span class="mono">{}</span>').format(shown)

    templates.env.globals["record"] = record

    def page(request: Request, name: str, session: Session | None, status_code: int = 200,
             **values: Any) -> Response:
        values.update(request=request, actor=session.actor if session else None,
                      csrf=session.csrf if session else None, flash=session.take_flash() if session else None)
        return _secured(templates.TemplateResponse(request, name, values, status_code=status_code))

    async def preview_page(request: Request, session: Session, preview: Preview, **values: Any) -> Response:
        """A dry run's page, with the kept names of the records its events and writes are about."""
        texts = [text for e in preview.events for text in (e.event_key, *(w.target for w in e.writes))]
        names = await service.names_for(context.store, texts + [c["record_ref"] for c in values.get("selection", [])])
        return page(request, "preview.html", session, preview=preview, names=names, **values)

    def current(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(SESSION_COOKIE))

    def status() -> SyncStatus | None:
        """The status fields as the executor adds them now: not while the schema guard has them parked."""
        return None if SYNC_STATUS in context.parked() else context.sync_status

    def guarded(handler: Callable[[Request, Session], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """A page or action for a logged-in admin; a POST also needs the session's CSRF token."""
        async def endpoint(request: Request) -> Response:
            session = current(request)
            if session is None:
                if request.method == "GET":
                    return _secured(RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303))
                return _secured(PlainTextResponse("log in first", status_code=401))
            if request.method == "POST":
                form = await request.form()
                if not csrf_ok(session, _text(form, "csrf")):
                    return _secured(PlainTextResponse("the form's CSRF token is missing or wrong; reload the page",
                                                      status_code=403))
            try:
                return await handler(request, session)
            except BadRequest as exc:
                return page(request, "error.html", session, status_code=400, message=str(exc))
            except RecordNotFound as exc:
                return page(request, "error.html", session, status_code=404, message=str(exc))
            except (StoreError, ValueError) as exc:
                return page(request, "error.html", session, status_code=409, message=str(exc))
        return endpoint

    # --- login ------------------------------------------------------------------------------------

    async def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        response = page(request, "login.html", None, login_csrf=token, next=_next(request.query_params.get("next")))
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=settings.behind_https, path="/login")
        return response

    async def login(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        wait = limiter.blocked(client)
        if wait:
            response = page(request, "login.html", None, status_code=429, login_csrf="",
                            error=f"Too many failed logins; try again in {int(wait) + 1} s.", next="/")
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        form = await request.form()
        expected = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not expected or _text(form, "csrf") != expected:
            return _secured(PlainTextResponse("the login form expired; reload it", status_code=403))
        actor = admins.who(_text(form, "token") or "")
        if actor is None:
            limiter.failed(client)
            return page(request, "login.html", None, status_code=401, login_csrf=expected,
                        error="That token is not valid.", next=_next(_text(form, "next")))
        response = _secured(RedirectResponse(_next(_text(form, "next")), status_code=303))
        response.set_cookie(SESSION_COOKIE, sessions.start(actor), httponly=True, samesite="strict",
                            secure=settings.behind_https, max_age=settings.session_minutes * 60)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    async def logout(request: Request, session: Session) -> Response:
        sessions.end(request.cookies.get(SESSION_COOKIE))
        response = _secured(RedirectResponse("/login", status_code=303))
        response.delete_cookie(SESSION_COOKIE)
        return response

    # --- pages ------------------------------------------------------------------------------------

    async def overview(request: Request, session: Session) -> Response:
        summary = await context.store.summary()
        now = utcnow()
        bars = minute_bars(await context.store.finished_per_minute(now - timedelta(hours=1)), now)
        chart = bar_chart_svg(bars, label="Events finished per minute, last hour")
        ready = context.health.ready(await context.store.ping())
        cursors = {c.name: c for c in summary.cursors}
        pollers = []
        for name in sorted(set(context.health.pollers) | {n for n in cursors if not n.startswith(STREAM_CURSOR)}):
            state = context.health.pollers.get(name)
            last = state.last_success_at if state else None
            pollers.append({"name": name, "last_success_at": last,
                            "lag_seconds": int((now - last).total_seconds()) if last else None,
                            "last_error": state.last_error if state else None,
                            "cursor": cursors[name].value if name in cursors else None})
        streams = [{**state.as_dict(), "state": state.state.value,
                    "replay_id": state.replay_id or (cursors[cursor_name(topic)].value
                                                     if cursor_name(topic) in cursors else None)}
                   for topic, state in sorted(context.health.streams.items())]
        budget = context.salesforce_budget
        plan = budget.plan() if budget else None
        calls = context.api_calls()
        apis = [{"api": "Salesforce", "used": budget.used if budget else None,
                 "total": budget.total if budget else None, "calls_since_start": calls.get("salesforce"),
                 "per_minute": f"{plan.per_minute:.1f}" if plan else None, "runs_out": _runs_out(plan, now),
                 "note": "the org's rolling 24-hour allocation, as Salesforce last reported it"},
                {"api": "Nue", "used": None, "total": None, "calls_since_start": calls.get("nue"),
                 "per_minute": None, "runs_out": None,
                 "note": f"no daily allocation; held to {context.settings.limits.nue.requests_per_second:g} "
                         "requests/s by the token bucket"}]
        deferred = (f"Deferred: {', '.join(plan.deferred_work) if plan and plan.deferred else 'nothing'}; polls "
                    f"at {plan.multiplier if plan else 1}x their interval.")
        parked = [{"flow": flow, "reason": reason,
                   "fix": "add the missing fields in Salesforce (or unmap them in config.yaml); the flow resumes "
                          "by itself within 5 minutes, or at once on `systemctl reload revdaemon`"}
                  for flow, reason in sorted(context.parked().items())]
        depths = {status.value: summary.queue_depths.get(status, 0) for status in EventStatus}
        mode = await service.running_mode(context.store, context.settings.mode.value)
        active = await service.active_replica(context.store, now=now)
        report = await service.reconciliation_view(context.store, context.report_path) if context.report_path else None
        return page(request, "overview.html", session, ready=ready, depths=depths, chart=chart, active=active,
                    drift=report["drift"] if report else None,
                    processed_last_hour=sum(b.count for b in bars), pollers=pollers, streams=streams, apis=apis,
                    streaming_poll_seconds=context.settings.change_data_capture.poll_seconds_while_streaming,
                    parked=parked,
                    deferred=deferred,
                    open_conflicts=summary.open_conflicts, dead_letters=summary.dead_letters,
                    started_at=context.health.started_at, mode=mode)

    async def timeline(request: Request, session: Session) -> Response:
        query = request.query_params.get("q", "")
        found = await service.timeline(context.store, query) if query.strip() else None
        return page(request, "timeline.html", session, query=query, found=found)

    async def conflicts(request: Request, session: Session) -> Response:
        shown = request.query_params.get("status", "open")
        flow = request.query_params.get("flow", "")
        text = request.query_params.get("q", "").strip().lower()
        rows = await service.list_conflicts(context.store, include_resolved=shown != "open", limit=500)
        if shown == "resolved":
            rows = [r for r in rows if r["status"] == "resolved"]
        if flow:
            rows = [r for r in rows if r["flow"] == flow]
        if text:
            rows = [r for r in rows if text in f"{r['record_ref']} {r['about']} {r['reason']}".lower()]
        flows = sorted({r["flow"] for r in await service.list_conflicts(context.store, include_resolved=True,
                                                                        limit=500)})
        return page(request, "conflicts.html", session, rows=rows, shown=shown, flow=flow, flows=flows,
                    q=request.query_params.get("q", ""), max_selection=MAX_SELECTION)

    async def conflict(request: Request, session: Session) -> Response:
        detail = await service.show_conflict(context.store, int(request.path_params["conflict_id"]))
        return page(request, "conflict.html", session, c=detail)

    async def resolve(request: Request, session: Session) -> Response:
        conflict_id = int(request.path_params["conflict_id"])
        form = await request.form()
        take = _text(form, "take")
        if take not in ("nue", "salesforce", "skip"):
            raise BadRequest("choose Nue, Salesforce or skip")
        await service.resolve_conflict(context.store, conflict_id, take=take, actor=session.actor,
                                       comment=(_text(form, "comment") or "").strip()[:2000] or None)
        context.wake_workers()
        return _after(session, f"/conflicts/{conflict_id}", f"Conflict {conflict_id} resolved: {_TAKEN[take]}.")

    async def resolve_many_preview(request: Request, session: Session) -> Response:
        form = await request.form()
        take, ids = _take(form), _selected_conflicts(form)
        comment = (_text(form, "comment") or "").strip()[:2000]
        versions = None
        if take == "nue":  # only taking Nue plans writes; the other choices read nothing
            if context.fetcher is None:
                raise ValueError("dry-run diffs need the daemon's API clients; this console has none")
            from revdaemon.engine.mappings import FlowVersions
            from revdaemon.engine.supervisor import default_flows  # late: the supervisor imports this module

            versions = await FlowVersions.load(context.store, context.settings, context.flows, default_flows,
                                               register=False)
        preview = await service.preview_resolutions(context.store, ids, take, context.flows, context.fetcher,
                                                    versions=versions, sync_status=status())
        still_open = len(ids) - sum(1 for e in preview.events if e.outcome == "skipped")
        return await preview_page(request, session, preview, ids=ids, action="/conflicts/resolve",
                    title=_BULK_TITLE[take].format(n=len(ids)), confirm=f"Resolve these {still_open}",
                    back="/conflicts", hidden={"take": take, "comment": comment},
                    selection=await service.conflict_rows(context.store, ids))

    async def resolve_many(request: Request, session: Session) -> Response:
        form = await request.form()
        take, ids = _take(form), _ids(form)
        done = await service.resolve_conflicts(context.store, ids, take=take, actor=session.actor,
                                               comment=(_text(form, "comment") or "").strip()[:2000] or None)
        context.wake_workers()
        return _after(session, "/conflicts", _resolved_notice(done))

    async def dead_letters(request: Request, session: Session) -> Response:
        include = request.query_params.get("replayed") == "1"
        code = (request.query_params.get("code") or "").strip()[:200] or None
        rows = await service.list_dead_letters(context.store, include_replayed=include, limit=500, error_code=code)
        open_codes = await service.dead_letter_codes(context.store)
        codes = await service.dead_letter_codes(context.store, include_replayed=True) if include else open_codes
        # "Replay all of one kind" goes through the same preview as a selection, so it shares the selection's cap.
        open_count = next((c["count"] for c in open_codes if code is not None and c["code"] == code), 0)
        open_ids = [d["id"] for d in await service.list_dead_letters(context.store, limit=MAX_SELECTION,
                                                                     error_code=code)] if open_count else []
        return page(request, "dead_letters.html", session, rows=rows, include_replayed=include, code=code,
                    codes=codes, open_ids=open_ids, open_count=open_count)

    async def dead_letter(request: Request, session: Session) -> Response:
        letter = await service.show_dead_letter(context.store, int(request.path_params["letter_id"]))
        event = await service.show_event(context.store, letter["event_id"]) if letter["event_id"] else None
        sent = (letter["request"] or {}).get("sent") or {}
        names = await service.names_for(context.store, [str(sent.get("target") or "")])
        return page(request, "dead_letter.html", session, d=letter, event=event, names=names)

    async def replay_preview(request: Request, session: Session) -> Response:
        form = await request.form()
        ids, remap = _ids(form), _text(form, "remap") == "1"
        if context.fetcher is None:
            raise ValueError("dry-run diffs need the daemon's API clients; this console has none")
        from revdaemon.engine.mappings import FlowVersions
        from revdaemon.engine.supervisor import default_flows  # late: the supervisor imports this module

        # Each event planned with the mapping version it is pinned to (with remap: the current one, both shown).
        versions = await FlowVersions.load(context.store, context.settings, context.flows, default_flows,
                                           register=False)
        preview = await service.preview_replay(context.store, ids, context.flows, context.fetcher,
                                               versions=versions, remap=remap, sync_status=status())
        return await preview_page(request, session, preview, ids=ids, action="/dead-letters/replay",
                    title=f"Replay {len(ids)} dead letter(s)" + (" with the current mapping" if remap else ""),
                    confirm="Replay these now", back="/dead-letters", remap=remap)

    async def replay(request: Request, session: Session) -> Response:
        form = await request.form()
        ids = _ids(form)
        await service.replay_dead_letters(context.store, ids, actor=session.actor, remap=_text(form, "remap") == "1")
        context.wake_workers()
        return _after(session, "/dead-letters", f"{len(ids)} dead letter(s) back in the inbox.")

    async def reconciliation(request: Request, session: Session) -> Response:
        report = await service.reconciliation_view(context.store, context.report_path) if context.report_path else None
        return page(request, "reconciliation.html", session, report=report,
                    can_run=context.run_reconciliation is not None, running=context.reconciliation_running())

    async def reconcile_now(request: Request, session: Session) -> Response:
        if context.run_reconciliation is None:
            raise ValueError("this console has no daemon to run the reconciliation in (or flows.reconciliation "
                             "is off); run `revdaemon reconcile`")
        try:
            message = await service.start_reconciliation(context.store, context.run_reconciliation,
                                                         actor=session.actor)
        except RunRefused as exc:
            return _after(session, "/reconciliation", f"Reconciliation not started: {exc}.")
        return _after(session, "/reconciliation", message)

    async def repair_preview(request: Request, session: Session) -> Response:
        customers = _customer_ids(await request.form())
        if context.fetcher is None:
            raise ValueError("dry-run diffs need the daemon's API clients; this console has none")
        preview = await service.preview_repairs(customers, context.flows, context.fetcher, sync_status=status())
        return await preview_page(request, session, preview, ids=customers,
                    action="/reconciliation/repair", title=f"Repair {len(customers)} account(s)",
                    confirm="Repair these now", back="/reconciliation", id_field="customer")

    async def repair(request: Request, session: Session) -> Response:
        customers = _customer_ids(await request.form())
        added = await service.queue_repairs(context.store, customers, actor=session.actor)
        context.wake_workers()
        return _after(session, "/reconciliation",
                      f"{added} repair(s) queued ({len(customers) - added} already were today).")

    async def shadow(request: Request, session: Session) -> Response:
        since = _day(request.query_params.get("since"), "since")
        report = await service.shadow_report(context.store, since=since)
        mode = await service.running_mode(context.store, context.settings.mode.value)
        for row in (*report["dead_letters"], *report["flags"]):
            row["ref"] = target_ref(row.get("target"), row.get("system")) if row.get("target") else None
        names = await service.names_for(context.store, [
            *(r["event_key"] for r in (*report["conflicts"], *report["dead_letters"], *report["flags"])),
            *(r["ref"] for r in (*report["dead_letters"], *report["flags"]))])
        return page(request, "shadow.html", session, report=report, mode=mode, names=names,
                    since=request.query_params.get("since", ""),
                    can_promote=mode["promoted"] is None and (mode["ran"] or mode["mode"] == "shadow"))

    async def shadow_writes(request: Request, session: Session) -> Response:
        wanted = {key: (request.query_params.get(key) or "").strip() for key in ("flow", "system", "object")}
        if not all(wanted.values()):
            raise BadRequest("choose a row of the shadow report (its flow, system and object)")
        since = _day(request.query_params.get("since"), "since")
        found = await service.shadow_writes(context.store, flow=wanted["flow"], system=wanted["system"],
                                            sobject=wanted["object"], since=since, limit=MAX_SHADOW_WRITES)
        names = await service.names_for(context.store, [t for w in found["writes"] for t in (w["event_key"], w["ref"])])
        return page(request, "shadow_writes.html", session, found=found, names=names, limit=MAX_SHADOW_WRITES,
                    since=request.query_params.get("since", ""), flow=wanted["flow"], system=wanted["system"],
                    object=wanted["object"])

    async def shadow_promote(request: Request, session: Session) -> Response:
        go_live = _day(_text(await request.form(), "go_live"), "the go-live date")
        mode = await service.running_mode(context.store, context.settings.mode.value)
        if mode["mode"] != "shadow" and mode["promoted"] is None and not mode["ran"]:
            raise BadRequest("shadow mode is off and never ran here: there is nothing to promote")
        done = await service.promote_shadow(context.store, actor=session.actor,
                                            go_live=go_live.date() if go_live else None)
        context.wake_workers()  # the workers see the promotion at their next claim
        if done["already"]:
            return _after(session, "/shadow", f"Already promoted on {_when(done['at'])} by {done['actor']} "
                                              f"(go-live cut-off {done['go_live']}).")
        return _after(session, "/shadow", f"Promoted to live: revdaemon writes from its next claim (go-live cut-off "
                                          f"{done['go_live']}). Set mode: live in config.yaml so a restart stays live.")

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", guarded(logout), methods=["POST"]),
        Route("/", guarded(overview)),
        Route("/timeline", guarded(timeline)),
        Route("/conflicts", guarded(conflicts)),
        Route("/conflicts/preview", guarded(resolve_many_preview), methods=["POST"]),
        Route("/conflicts/resolve", guarded(resolve_many), methods=["POST"]),
        Route("/conflicts/{conflict_id:store_id}", guarded(conflict)),
        Route("/conflicts/{conflict_id:store_id}/resolve", guarded(resolve), methods=["POST"]),
        Route("/dead-letters", guarded(dead_letters)),
        Route("/dead-letters/{letter_id:store_id}", guarded(dead_letter)),
        Route("/dead-letters/preview", guarded(replay_preview), methods=["POST"]),
        Route("/dead-letters/replay", guarded(replay), methods=["POST"]),
        Route("/reconciliation", guarded(reconciliation)),
        Route("/reconciliation/preview", guarded(repair_preview), methods=["POST"]),
        Route("/reconciliation/repair", guarded(repair), methods=["POST"]),
        Route("/reconciliation/run", guarded(reconcile_now), methods=["POST"]),
        Route("/shadow", guarded(shadow)),
        Route("/shadow/writes", guarded(shadow_writes)),
        Route("/shadow/promote", guarded(shadow_promote), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # registered for HTTPException only
        return _secured(PlainTextResponse(exc.detail or "not found", status_code=exc.status_code))

    return Starlette(routes=routes, exception_handlers={HTTPException: not_found},
                     middleware=[Middleware(LogFailures, headers=SECURITY_HEADERS)])


_TAKEN = {"nue": "Nue's value will be written", "salesforce": "Salesforce's value is kept",
          "skip": "skipped, nothing written"}


_BULK_TITLE = {"nue": "Resolve {n} conflict(s) taking Nue", "salesforce": "Resolve {n} conflict(s) taking Salesforce",
               "skip": "Skip {n} conflict(s)"}


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _after(session: Session, path: str, message: str) -> Response:
    session.flash = message
    return _secured(RedirectResponse(path, status_code=303))


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _next(value: str | None) -> str:
    """Only a path on this console (never another site) is a place to go after login."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _day(value: str | None, what: str) -> datetime | None:
    """A YYYY-MM-DD form or query value as midnight UTC; None when empty."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError(text)
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        raise BadRequest(f"{what} must be a date as YYYY-MM-DD") from None


def _ids(form: FormData, name: str = "id") -> list[int]:
    values = [v for v in form.getlist(name) if isinstance(v, str)]
    if not values:
        raise BadRequest("select at least one")
    if len(values) > MAX_SELECTION:
        raise BadRequest(f"select at most {MAX_SELECTION} at a time")
    ids = {parse_store_id(v.strip()) for v in values}
    if None in ids:
        raise BadRequest(f"a selected id is not a number from 1 to {STORE_ID_MAX}")
    return sorted(i for i in ids if i is not None)


def _take(form: FormData) -> str:
    take = _text(form, "take")
    if take not in _TAKEN:
        raise BadRequest("choose Nue, Salesforce or skip")
    return take


def _selected_conflicts(form: FormData) -> list[int]:
    """The ticked conflicts, or with the "all shown" button the ids the filtered list carried (no script can
    tick every box under the CSP, so the list sends the shown ids itself, at most MAX_SELECTION)."""
    return _ids(form, "shown" if _text(form, "scope") == "shown" else "id")


def _resolved_notice(done: dict[str, Any]) -> str:
    """How many were decided, and each one skipped with why: a bulk action never reports less than it did."""
    notice = f"{len(done['resolved'])} conflict(s) resolved: {_TAKEN[done['take']]}."
    skipped = done["skipped"]
    if skipped:
        named = "; ".join(f"{s['id']} {s['reason']}" for s in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        notice += f" {len(skipped)} skipped: {named}{more}."
    return notice


def _customer_ids(form: FormData) -> list[str]:
    values = sorted({v for v in form.getlist("customer") if isinstance(v, str) and v.strip()})
    if not values:
        raise BadRequest("select at least one")
    if len(values) > MAX_SELECTION:
        raise BadRequest(f"select at most {MAX_SELECTION} at a time")
    return values


def _runs_out(plan: BudgetPlan | None, now: datetime) -> str | None:
    """When the allocation is spent at the recent rate: `14:32 UTC (in 3 h 12 min)`."""
    if plan is None or plan.used is None:
        return None
    if plan.exhaustion_seconds is None:
        return describe_seconds(None)
    at = now + timedelta(seconds=plan.exhaustion_seconds)
    return f"{at:%Y-%m-%d %H:%M} UTC (in {describe_seconds(plan.exhaustion_seconds)})"


def _when(value: Any) -> str:
    """A timestamp as people read it: '2026-11-26 13:43:07 UTC' (stored as ISO text with an offset)."""
    if not value:
        return "—"
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC")


def _show(value: Any) -> str:
    """A value as a table cell shows it: empty for None, JSON-ish for structures."""
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2, sort_keys=True, default=str)
    return str(value)
