"""The console's HTTP app: server-rendered pages and a JSON API over the read model.

FastAPI (on Starlette) because it publishes the API's OpenAPI description from the
same declarations the handlers use, validates query parameters into types, and streams
responses (the export, the event stream); Jinja2 renders the pages with autoescaping on.
Handlers parse, call the read model or a pure function of the processors, and render;
the decisions live in :mod:`fleetledger.processors.readmodel`, ``rundetail``,
``livefeed`` and ``runexport``.

Read-model calls run on the event loop's thread: they are short indexed queries, and
one thread keeps a single SQLite connection safe without a lock.

(No ``from __future__ import annotations`` here: FastAPI reads the route functions'
annotations at runtime, and some name closures of :meth:`ConsoleApp._build`.)
"""

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from fleetledger.console import api_models as m
from fleetledger.console import render
from fleetledger.console.security import Guard, Receive, Scope, Send
from fleetledger.console.stream import ChangeHub, event_stream, parse_last_event_id
from fleetledger.console.tabs import SHORTCUTS, TABS
from fleetledger.kernel.errors import ConfigError, FleetLedgerError
from fleetledger.processors import runexport
from fleetledger.processors.livefeed import Subscription
from fleetledger.processors.readmodel import (
    RUN_STATUSES,
    SORTS,
    ActionRow,
    InterceptQuery,
    ReadModel,
    RunFilter,
    RunQuery,
    RunRow,
    parse_when,
)
from fleetledger.processors.rundetail import OUTCOME_CLASSES, ActionFilter, RunDetail, run_detail

STATIC = Path(__file__).with_name("static")
#: Time windows of the registry's filter.
WINDOWS: dict[str, str | None] = {"24h": "24h", "7d": "7d", "30d": "30d", "all": None}
#: Actions rendered at once on a run page (more load on demand).
ACTIONS_PAGE = 500
#: Intercepts in the registry's lane.
LANE = 8


@dataclass(frozen=True)
class ConsoleConfig:
    """How the console serves: its token, whether it binds loopback, where signatures are."""

    token: str | None = None
    loopback: bool = True
    #: the compliance archive, where signed bundles' envelopes are (FLEETLEDGER_COMPLIANCE_ARCHIVE)
    archive: Path | None = None
    poll_s: float = 0.05
    heartbeat_s: float = 15.0
    #: shown in the page header: what the console reads
    source: str = ""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Registry:
    """The registry's parameters as the URL carries them."""

    filter: RunFilter
    sort: str
    window: str
    after: str | None
    limit: int
    #: the URL's query for these filters (no cursor), for links and the export
    query: str

    def url(self, **extra: str) -> str:
        q = "&".join(p for p in (self.query, *(f"{k}={v}" for k, v in extra.items())) if p)
        return q


def _blank(v: str | None) -> str | None:
    return None if v is None or not v.strip() else v.strip()


def registry_params(
    config: ConsoleConfig,
    status: Sequence[str],
    agent: str | None,
    tenant: str | None,
    min_cost: str | None,
    window: str | None,
    since: str | None,
    until: str | None,
    sort: str,
    after: str | None,
    limit: int,
) -> Registry:
    from urllib.parse import urlencode

    now = config.clock()
    statuses = tuple(s for s in status if s)
    agent, tenant, min_cost = _blank(agent), _blank(tenant), _blank(min_cost)
    since, until, win = _blank(since), _blank(until), _blank(window) or "all"
    if win not in WINDOWS:
        raise HTTPException(400, f"window {win!r}; expected one of {', '.join(WINDOWS)}")
    cost = None
    if min_cost is not None:
        try:
            cost = Decimal(min_cost)
        except InvalidOperation:
            raise HTTPException(
                400, f"min_cost {min_cost!r}; expected an amount like 1.50"
            ) from None
        if not cost.is_finite():
            raise HTTPException(400, f"min_cost {min_cost!r}; expected a finite amount")
    if sort not in SORTS:
        raise HTTPException(400, f"sort {sort!r}; expected one of {', '.join(SORTS)}")
    span = since or WINDOWS[win]
    try:
        f = RunFilter(
            status=statuses,
            agent=agent,
            tenant=tenant,
            min_cost=cost,
            since=None if span is None else parse_when(span, now),
            until=None if until is None else parse_when(until, now),
        )
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    pairs: list[tuple[str, str]] = [("status", s) for s in statuses]
    for k, v in (
        ("agent", agent),
        ("tenant", tenant),
        ("min_cost", min_cost),
        ("window", None if win == "all" else win),
        ("since", since),
        ("until", until),
        ("sort", None if sort == "recent" else sort),
        ("limit", None if limit == 50 else str(limit)),
    ):
        if v is not None:
            pairs.append((k, v))
    return Registry(f, sort, win, _blank(after), limit, urlencode(pairs))


StatusQ = Annotated[
    list[str],
    Query(description=f"run status, repeatable: {' | '.join(RUN_STATUSES)}"),
]
AgentQ = Annotated[str | None, Query(description="agent id (exact)")]
TenantQ = Annotated[str | None, Query(description="tenant (exact)")]
MinCostQ = Annotated[str | None, Query(description="runs costing at least this amount")]
WindowQ = Annotated[str | None, Query(description="started within: 24h | 7d | 30d | all")]
SinceQ = Annotated[
    str | None, Query(description="started at or after: 24h, 7d or an ISO time (UTC)")
]
UntilQ = Annotated[str | None, Query(description="started before: 24h, 7d or an ISO time")]
SortQ = Annotated[str, Query(description="recent (newest first) | cost (highest first)")]
AfterQ = Annotated[str | None, Query(description="a page's next_cursor")]
LimitQ = Annotated[int, Query(ge=1, le=1000, description="runs per page")]


class ConsoleApp:
    """The ASGI app of ``fleetledger console``: the guard in front of the FastAPI app."""

    def __init__(self, reads: ReadModel, config: ConsoleConfig | None = None) -> None:
        self.reads = reads
        self.config = config or ConsoleConfig()
        self.hub = ChangeHub(reads, poll_s=self.config.poll_s)
        self.templates = Environment(
            loader=PackageLoader("fleetledger.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            json_html=render.json_html,
            json_text=render.json_text,
            money=render.money,
            money_map=render.money_map,
            duration=render.duration,
            when=render.when,
            when_iso=render.when_iso,
            clock=render.clock,
            percent=render.percent,
        )
        self.templates.globals.update(
            TABS=TABS, SHORTCUTS=SHORTCUTS, OUTCOMES=OUTCOME_CLASSES, source=self.config.source
        )
        self.api = self._build()
        self.asgi = Guard(self.api, token=self.config.token, loopback=self.config.loopback)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    # ------------------------------------------------------------------ helpers

    def page(self, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(**ctx)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def _run(self, run_id: str) -> RunRow:
        run = self.reads.run(run_id)
        if run is None:
            raise HTTPException(404, f"found no run {run_id!r} in the read model")
        return run

    def detail(self, run_id: str) -> RunDetail:
        run = self._run(run_id)
        actions = self.reads.actions(run_id)
        intercepts = self.reads.intercepts(InterceptQuery(run_id=run_id, limit=1000)).intercepts
        bundle = self.reads.bundle(run_id) if run.digest else None
        return run_detail(run, actions, intercepts, bundle)

    def signature_path(self, run: RunRow) -> Path | None:
        """The DSSE envelope of a signed run in the compliance archive, if there is one."""
        if self.config.archive is None or run.digest is None:
            return None
        from fleetledger.processors.archive import ArchiveSink
        from fleetledger.processors.evidence import file_stem
        from fleetledger.processors.readmodel import iso

        folder = ArchiveSink(self.config.archive).folder(run.tenant, iso(run.started_at))
        path = folder / f"{file_stem(run.run_id)}.dsse.json"
        return path if path.is_file() else None

    def actions_page(
        self, run_id: str, after_seq: int, flt: ActionFilter, limit: int = ACTIONS_PAGE
    ) -> tuple[list[ActionRow], int | None]:
        """Up to ``limit`` actions after ``after_seq`` that pass ``flt``; the seq to
        continue after when there are more."""
        if flt:
            found = flt.apply(self.reads.actions(run_id, after_seq=after_seq))
        else:
            found = self.reads.actions(run_id, after_seq=after_seq, limit=limit + 1)
        more = found[limit - 1].seq if len(found) > limit else None
        return found[:limit], more

    def registry(self, reg: Registry, *, summary: bool = True) -> dict[str, Any]:
        """One page of the registry, and its summary figures unless the page loads them
        after the list (they aggregate every run the filter selects)."""
        page = self.reads.runs(RunQuery(reg.filter, reg.sort, reg.limit, reg.after))  # type: ignore[arg-type]
        out: dict[str, Any] = {"reg": reg, "page": page}
        if summary:
            out["summary"] = self.reads.summary(reg.filter)
        return out

    def lane(self, reg: Registry) -> Any:
        return self.reads.intercepts(
            InterceptQuery(tenant=reg.filter.tenant, agent=reg.filter.agent, limit=LANE)
        )

    # ------------------------------------------------------------------ routes

    def _build(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            self.hub.start()
            try:
                yield
            finally:
                await self.hub.close()

        api = FastAPI(
            title="fleetledger console",
            version=_version(),
            description="Read-only JSON API over the fleetledger read model: the run "
            "registry with its filters and keyset pages, one run, its bundle exactly as "
            "exported, its actions, intercepts, cost reports, the filtered export and the "
            "live event stream (server-sent events whose ids are read-model positions).",
            openapi_url="/api/openapi.json",
            docs_url=None,
            redoc_url=None,
            lifespan=lifespan,
        )
        api.mount("/static", StaticFiles(directory=STATIC), name="static")
        cfg = self.config

        @api.exception_handler(FleetLedgerError)
        async def _failed(request: Request, exc: FleetLedgerError) -> Response:
            status = 400 if isinstance(exc, ConfigError) else 503
            return _error(request, self, status, str(exc))

        @api.exception_handler(HTTPException)
        async def _http(request: Request, exc: HTTPException) -> Response:
            return _error(request, self, exc.status_code, str(exc.detail))

        def reg_dep(
            status: StatusQ = [],  # noqa: B006 - FastAPI's way to declare a list query
            agent: AgentQ = None,
            tenant: TenantQ = None,
            min_cost: MinCostQ = None,
            window: WindowQ = None,
            since: SinceQ = None,
            until: UntilQ = None,
            sort: SortQ = "recent",
            after: AfterQ = None,
            limit: LimitQ = 50,
        ) -> Registry:
            return registry_params(
                cfg, status, agent, tenant, min_cost, window, since, until, sort, after, limit
            )

        Reg = Annotated[Registry, Depends(reg_dep)]
        NotFound: dict[int | str, dict[str, Any]] = {404: {"model": m.ErrorOut}}
        Bad: dict[int | str, dict[str, Any]] = {400: {"model": m.ErrorOut}}

        # ---------------------------------------------------------------- API

        @api.get("/api/runs", response_model=m.RunsAnswer, responses=Bad, tags=["runs"])
        async def api_runs(reg: Reg) -> Response:
            """The run registry: one keyset page and the summary figures of the same filter."""
            data = self.registry(reg)
            return _json(
                {
                    "filter": reg.filter.to_json(),
                    "sort": reg.sort,
                    **data["page"].to_json(),
                    "summary": data["summary"].to_json(),
                }
            )

        @api.get("/api/summary", response_model=m.SummaryOut, responses=Bad, tags=["runs"])
        async def api_summary(reg: Reg) -> Response:
            """Runs, status counts, spend, actions and intercepts over the filtered runs."""
            return _json(self.reads.summary(reg.filter).to_json())

        @api.get(
            "/api/runs/{run_id}", response_model=m.RunAnswer, responses=NotFound, tags=["runs"]
        )
        async def api_run(run_id: str) -> Response:
            """One run: its row, intercepts and the chain check (bundle verified once finished)."""
            d = self.detail(run_id)
            sig = self.signature_path(d.run)
            return _json(
                {
                    "run": d.run.to_json(),
                    "intercepts": [i.to_json() for i in d.intercepts],
                    "chain": {
                        "verified": d.chain.verified,
                        "detail": d.chain.detail,
                        "checked": d.chain.checked,
                        "bundle_verified": d.chain.bundle,
                        "bundle_detail": d.chain.bundle_detail,
                        "merkle_root": d.chain.merkle_root,
                    },
                    "bundle_url": f"/api/runs/{_q(run_id)}/bundle" if d.digest else None,
                    "signature_url": f"/api/runs/{_q(run_id)}/signature" if sig else None,
                }
            )

        @api.get(
            "/api/runs/{run_id}/actions",
            response_model=m.ActionsAnswer,
            responses={**NotFound, **Bad},
            tags=["runs"],
        )
        async def api_actions(
            run_id: str,
            after_seq: Annotated[int, Query(ge=-1, description="actions after this seq")] = -1,
            limit: Annotated[int, Query(ge=1, le=5000, description="most actions")] = ACTIONS_PAGE,
            q: Annotated[str, Query(description="text in the name or the event")] = "",
            outcome: Annotated[
                str | None, Query(description="success | error | blocked | replayed")
            ] = None,
        ) -> Response:
            """A run's committed events in seq order, with inputs and outputs as JSON."""
            self._run(run_id)
            flt = _action_filter(q, outcome)
            rows, more = self.actions_page(run_id, after_seq, flt, limit)
            return _json(
                {"run_id": run_id, "actions": [a.to_json() for a in rows], "next_after_seq": more}
            )

        @api.get(
            "/api/runs/{run_id}/bundle",
            responses={
                200: {
                    "content": {"application/json": {"schema": {"type": "object"}}},
                    "description": "the bundle's canonical RFC 8785 bytes (they verify)",
                },
                **NotFound,
            },
            response_class=Response,
            tags=["evidence"],
        )
        async def api_bundle(run_id: str) -> Response:
            """A finished run's bundle exactly as `fleetledger export` writes it."""
            from fleetledger.processors.evidence import file_stem
            from fleetledger.processors.export import export_bundle

            run = self._run(run_id)
            data = self.reads.bundle(run_id)
            if data is None:
                raise HTTPException(404, f"run {run_id!r} is {run.status}; it has no bundle yet")
            return Response(
                export_bundle(data, "json").data,
                media_type="application/json",
                headers={
                    "content-disposition": f'attachment; filename="{file_stem(run_id)}.bundle.json"'
                },
            )

        @api.get(
            "/api/runs/{run_id}/signature",
            responses={
                200: {
                    "content": {"application/json": {"schema": {"type": "object"}}},
                    "description": "the DSSE envelope of the signed bundle",
                },
                **NotFound,
            },
            response_class=Response,
            tags=["evidence"],
        )
        async def api_signature(run_id: str) -> Response:
            """The bundle's DSSE envelope, when the compliance archive holds a signed one."""
            from fleetledger.processors.evidence import file_stem

            run = self._run(run_id)
            path = self.signature_path(run)
            if path is None:
                raise HTTPException(404, f"run {run_id!r} has no signed bundle in the archive")
            return Response(
                path.read_bytes(),
                media_type="application/json",
                headers={
                    "content-disposition": f'attachment; filename="{file_stem(run_id)}.dsse.json"'
                },
            )

        @api.get(
            "/api/intercepts",
            response_model=m.InterceptPageOut,
            responses=Bad,
            tags=["intercepts"],
        )
        async def api_intercepts(
            run: Annotated[str | None, Query(description="one run's intercepts")] = None,
            tenant: TenantQ = None,
            agent: AgentQ = None,
            severity: Annotated[str | None, Query(description="critical | warning")] = None,
            limit: LimitQ = 50,
            after: AfterQ = None,
        ) -> Response:
            """Intercepts, newest first (keyset pages)."""
            if severity not in (None, "critical", "warning"):
                raise HTTPException(400, f"severity {severity!r}; expected critical or warning")
            page = self.reads.intercepts(
                InterceptQuery(
                    _blank(run), _blank(tenant), _blank(agent), severity, limit, _blank(after)
                )
            )
            return _json(page.to_json())

        @api.get("/api/costs", response_model=m.CostReportOut, responses=Bad, tags=["costs"])
        async def api_costs(reg: Reg) -> Response:
            """Exact cost totals by agent and by model over the filtered runs."""
            return _json(self.reads.costs(reg.filter).to_json())

        @api.get("/api/agents", response_model=m.AgentsAnswer, tags=["runs"])
        async def api_agents(
            q: Annotated[str, Query(description="part of an agent id")] = "",
            tenant: TenantQ = None,
            limit: Annotated[int, Query(ge=1, le=100, description="most agents")] = 20,
        ) -> Response:
            """Agents whose id contains ``q`` (the registry's type-to-search)."""
            rows = self.reads.agents(q, tenant=_blank(tenant), limit=limit)
            return _json({"agents": [vars(a) for a in rows]})

        @api.get(
            "/api/export",
            responses={
                200: {
                    "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"type": "object"}},
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                    "description": "the filtered runs (and their actions), streamed",
                },
                **Bad,
            },
            response_class=StreamingResponse,
            tags=["export"],
        )
        async def api_export(
            reg: Reg,
            format: Annotated[str, Query(description="csv | json | jsonl")] = "csv",
            include: Annotated[str, Query(description="runs | actions")] = "runs",
        ) -> Response:
            """What the filters select, with the filter and every run's bundle digest."""
            try:
                fmt, inc = runexport.check(format, include)
            except ConfigError as exc:
                raise HTTPException(400, str(exc)) from None
            now = cfg.clock()

            def runs() -> Iterator[tuple[RunRow, list[ActionRow] | None]]:
                cursor = reg.after
                while True:
                    page = self.reads.runs(RunQuery(reg.filter, reg.sort, 500, cursor))  # type: ignore[arg-type]
                    for run in page.runs:
                        yield run, (self.reads.actions(run.run_id) if inc == "actions" else None)
                    cursor = page.next_cursor
                    if cursor is None:
                        return

            async def body() -> AsyncIterator[bytes]:
                for chunk in runexport.export_chunks(fmt, inc, reg.filter, reg.sort, runs(), now):
                    yield chunk

            return StreamingResponse(
                body(),
                media_type=runexport.MEDIA_TYPES[fmt],
                headers={
                    "content-disposition": (
                        f'attachment; filename="{runexport.filename(fmt, inc, now)}"'
                    ),
                    "cache-control": "no-store",
                },
            )

        @api.get(
            "/api/events",
            responses={
                200: {
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    "description": "server-sent events: run_created, action_created, "
                    "run_updated, run_completed, run_failed, intercept_created; each id is "
                    "the read-model position of its change",
                },
                **Bad,
            },
            response_class=StreamingResponse,
            tags=["live"],
        )
        async def api_events(
            reg: Reg,
            run: Annotated[str | None, Query(description="only this run's events")] = None,
            actions: Annotated[bool, Query(description="include action_created events")] = True,
            after: Annotated[
                str | None,
                Query(
                    alias="from",
                    description="resume after this position (Last-Event-ID takes precedence)",
                ),
            ] = None,
            last_event_id: Annotated[str | None, Header()] = None,
        ) -> Response:
            """The live stream (reconnect with Last-Event-ID to miss nothing)."""
            sub = Subscription(run_id=_blank(run), filter=reg.filter, actions=actions)
            start = parse_last_event_id(last_event_id)
            if start is None:
                start = parse_last_event_id(after)
            return StreamingResponse(
                event_stream(self.reads, self.hub, sub, start, heartbeat_s=cfg.heartbeat_s),
                media_type="text/event-stream",
                headers={"cache-control": "no-store", "x-accel-buffering": "no"},
            )

        # ---------------------------------------------------------------- pages

        @api.get("/", include_in_schema=False)
        async def registry_page(reg: Reg) -> Response:
            ctx = self.registry(reg, summary=False)
            return self.page(
                "registry.html",
                **ctx,
                lane=self.lane(reg),
                windows=list(WINDOWS),
                statuses=("running", "completed", "failed", "open"),
            )

        @api.get("/ui/runs", include_in_schema=False)
        async def registry_results(reg: Reg) -> Response:
            return self.page("_results.html", **self.registry(reg, summary=False))

        @api.get("/ui/summary", include_in_schema=False)
        async def summary_fragment(reg: Reg) -> Response:
            return self.page("_summary.html", reg=reg, summary=self.reads.summary(reg.filter))

        @api.get("/ui/lane", include_in_schema=False)
        async def lane_fragment(reg: Reg) -> Response:
            return self.page("_lane.html", reg=reg, lane=self.lane(reg))

        @api.get("/ui/runs/{run_id}/card", include_in_schema=False)
        async def run_card(run_id: str) -> Response:
            return self.page("_card.html", run=self._run(run_id))

        @api.get("/ui/agents", include_in_schema=False)
        async def agent_options(
            agent: Annotated[str, Query()] = "", tenant: TenantQ = None
        ) -> Response:
            rows = self.reads.agents(agent, tenant=_blank(tenant), limit=20)
            return self.page("_agents.html", agents=rows)

        @api.get("/runs/{run_id}", include_in_schema=False)
        async def run_page(
            run_id: str,
            q: Annotated[str, Query()] = "",
            outcome: Annotated[str | None, Query()] = None,
        ) -> Response:
            d = self.detail(run_id)
            flt = _action_filter(q, outcome)
            rows, more = self.actions_page(run_id, -1, flt)
            return self.page(
                "run.html",
                d=d,
                rows=rows,
                more=more,
                flt=flt,
                signature=self.signature_path(d.run) is not None,
            )

        @api.get("/ui/runs/{run_id}/header", include_in_schema=False)
        async def run_header(run_id: str) -> Response:
            d = self.detail(run_id)
            return self.page("_run_header.html", d=d)

        @api.get("/ui/runs/{run_id}/sections", include_in_schema=False)
        async def run_sections(run_id: str) -> Response:
            d = self.detail(run_id)
            return self.page(
                "_sections.html", d=d, signature=self.signature_path(d.run) is not None
            )

        @api.get("/ui/runs/{run_id}/actions", include_in_schema=False)
        async def run_actions(
            run_id: str,
            after_seq: Annotated[int, Query(ge=-1)] = -1,
            q: Annotated[str, Query()] = "",
            outcome: Annotated[str | None, Query()] = None,
        ) -> Response:
            run = self._run(run_id)
            flt = _action_filter(q, outcome)
            rows, more = self.actions_page(run_id, after_seq, flt)
            intercepts = self.reads.intercepts(InterceptQuery(run_id=run_id, limit=1000))
            at: dict[int, list[Any]] = {}
            for i in intercepts.intercepts:
                at.setdefault(i.seq, []).append(i)
            return self.page(
                "_actions.html", run=run, rows=rows, more=more, flt=flt, intercepts_at=at
            )

        @api.get("/ui/runs/{run_id}/actions/{seq}", include_in_schema=False)
        async def inspector(run_id: str, seq: int) -> Response:
            d = self.detail(run_id)
            action = next((a for a in d.actions if a.seq == seq), None)
            if action is None:
                raise HTTPException(404, f"run {run_id!r} has no event at seq {seq}")
            return self.page("_inspector.html", d=d, a=action)

        return api


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _action_filter(q: str, outcome: str | None) -> ActionFilter:
    try:
        return ActionFilter(q.strip(), _blank(outcome))
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None


def _json(data: Any) -> Response:
    return Response(
        orjson.dumps(data), media_type="application/json", headers={"cache-control": "no-store"}
    )


def _error(request: Request, app: ConsoleApp, status: int, detail: str) -> Response:
    if request.url.path.startswith("/api/"):
        return Response(
            orjson.dumps({"detail": detail}), status_code=status, media_type="application/json"
        )
    return app.page("error.html", status=status, status_code=status, detail=detail)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fleetledger")
    except PackageNotFoundError:
        return "0"


__all__ = ["ConsoleApp", "ConsoleConfig", "Registry", "registry_params"]
