"""The hub's HTTP application. `create_app(settings)` builds it; the lifespan
owns the database engine, HTTP client and background workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text
from prometheus_client import CONTENT_TYPE_LATEST

from hub.api import feeds, files, ops, persons, register_changes, reports, subscriptions
from hub.api import asyncapi, audit, exports, fhir_inbound, fhir_subscriptions, packages, quarantine_triage, reconciliations, split_decisions, statements, trace
from hub.api import disputes, fhir_tasks, transfers, workflow_ops
from hub.api.correlation import CorrelationMiddleware
from hub.api.deps import ApiKeyCheck
from hub.api.limits import LimitsMiddleware
from hub.api.problems import install_problem_handlers
from hub.bootstrap import build_hub
from hub.observability.multiproc import exposition
from hub.server import tune_gc
from hub.worker_process import share_write_lock, wake_workers_on_publish
from hub.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    key_check = ApiKeyCheck()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = await build_hub(settings)
        app.state.hub = key_check.hub = hub
        untell: Callable[[], None] | None = None
        if settings.run_workers and settings.separate_workers:
            share_write_lock(settings.database_url, hub.engine, yields=False)
            hub.start_workers(back=False, deliver=False)  # both run in the worker process(es)
            hub.start_worker_process()
            untell = wake_workers_on_publish(settings.database_url)
        elif settings.run_workers:
            hub.start_workers()
        tune_gc()
        try:
            yield
        finally:
            if untell is not None:
                untell()
            key_check.hub = None
            await hub.close()

    app = FastAPI(
        title="S117 Hub",
        version="0.1.0",
        description="Section 117 aftercare register changes in; FHIR R4 (UK Core) event messages out.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry hooks look up the tracer, meter and log
        # providers (environment reads) on every request; the hub's telemetry
        # is its Prometheus metrics, structured logs and correlation ids.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    ops_answers = [Depends(workflow_ops.no_store)]  # the operator's answers: never cached
    app.include_router(register_changes.router)
    app.include_router(subscriptions.router)
    app.include_router(feeds.router)
    app.include_router(persons.router)
    app.include_router(ops.router, dependencies=ops_answers)
    app.include_router(reports.router)
    app.include_router(files.router)
    app.include_router(fhir_inbound.router)
    app.include_router(reconciliations.router)
    app.include_router(reconciliations.ops_router, dependencies=ops_answers)
    app.include_router(exports.router)
    app.include_router(exports.ops_router, dependencies=ops_answers)
    app.include_router(transfers.router)
    app.include_router(disputes.router)
    app.include_router(workflow_ops.router, dependencies=ops_answers)
    app.include_router(workflow_ops.page_router)
    app.include_router(fhir_tasks.router)
    app.include_router(trace.router, dependencies=ops_answers)
    app.include_router(audit.router, dependencies=ops_answers)
    app.include_router(quarantine_triage.router)
    app.include_router(packages.router)
    app.include_router(statements.router)
    app.include_router(split_decisions.router)
    app.include_router(asyncapi.router)
    app.include_router(fhir_subscriptions.router)

    _document_register_change_body(app)

    # Outermost first: the correlation id, then the body and time limits and,
    # under /v1/, the API key, all before any handler reads the body; then,
    # for POST /v1/register-changes only, its handler without the router's layers.
    app.add_middleware(register_changes.RegisterChangeRoute)
    app.add_middleware(LimitsMiddleware, key_check=key_check)
    app.add_middleware(CorrelationMiddleware)

    console_html = (Path(__file__).parent / "static" / "console.html").read_text()

    @app.get("/console", tags=["ops"], include_in_schema=False)
    async def console() -> HTMLResponse:
        # Static page; it calls the ops API with the engineer's own admin key. Its one
        # script is /console/console.js (the CSP runs no inline script: workflow_ops.CONSOLE_CSP).
        return HTMLResponse(console_html, headers=workflow_ops.CONSOLE_HEADERS)

    @app.get("/console/console.js", tags=["ops"], include_in_schema=False)
    async def console_script() -> Response:
        return workflow_ops.console_script("console.js")

    @app.get("/health", tags=["ops"])
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/health/ready", tags=["ops"])
    async def ready(request: Request) -> JSONResponse:
        """Ready to take traffic: the store answers and the workers are alive.
        503 with the failing check named otherwise, so a load balancer stops sending."""
        hub = request.app.state.hub
        checks: dict[str, str] = {}
        try:
            async with hub.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["store"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["store"] = type(exc).__name__
        dead = [t.get_name() for t in hub.worker_tasks() if t.done()] + hub.failed_startup_tasks()
        checks["workers"] = "ok" if not dead else "stopped: " + ",".join(dead)
        for name, process in (("worker_process", hub.worker_process), ("delivery_process", hub.delivery_process)):
            if process is not None:  # running with its workers started; started, not yet; or down
                checks[name] = "ok" if process.ready else "starting" if process.alive else "restarting"
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ok else "not-ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)  # every process's, with the workers apart

    return app


def _document_register_change_body(app: FastAPI) -> None:
    """POST /v1/register-changes reads the raw body (so that anything, even
    malformed JSON, can be quarantined), which hides its schema from OpenAPI.
    Put the contract's schema back into the document for integrators."""
    from fastapi.openapi.utils import get_openapi

    from hub.ingest.contract import RegisterChangeIn

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema = RegisterChangeIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(schema.pop("$defs", {}))
        components["S117RegisterChange"] = schema
        operation = doc["paths"]["/v1/register-changes"]["post"]
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/S117RegisterChange"}}}}
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
