"""The hub's HTTP application. `create_app(settings)` builds it; the lifespan
owns the database engine, HTTP client and background workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from copy import deepcopy
from pathlib import Path

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
import orjson
from sqlalchemy import text
from prometheus_client import CONTENT_TYPE_LATEST

from hub.api import feeds, files, ops, persons, register_changes, reports, subscriptions
from hub.api import asyncapi, audit, exports, fhir_inbound, fhir_subscriptions, packages, quarantine_triage, reconciliations, split_decisions, statements, trace
from hub.api import disputes, fhir_metadata, fhir_tasks, merges, retractions, transfers, workflow_ops
from hub.api.correlation import CorrelationMiddleware
from hub.api.deps import ApiKeyCheck
from hub.api.limits import LimitsMiddleware
from hub.api.problems import (
    FHIR_JSON,
    OPERATION_OUTCOME_SCHEMA,
    OUTCOME_CONTENT,
    PROBLEM_CONTENT,
    ProblemDetails,
    install_problem_handlers,
)
from hub.bootstrap import build_hub
from hub.observability.multiproc import exposition
from hub.server import tune_gc
from hub.store.writable import store_writes
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
        # The agreements file watched here too: this process answers feeds and reads. With the
        # workers apart, their process writes the audit record of a reload (hub/agreements_watch.py).
        hub.watch_agreements(audit=not (settings.run_workers and settings.separate_workers))
        hub.watch_store_writes()  # a write failed for a store fault: not ready until one succeeds
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
    app.include_router(retractions.router)
    app.include_router(subscriptions.router)
    app.include_router(feeds.router)
    app.include_router(merges.router)
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
    app.include_router(fhir_metadata.router)

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

    @app.get("/health/ready", tags=["ops"],
             responses={503: {"description": "Not ready: each check named with its state",
                              "content": {"application/json": {}}}})
    async def ready(request: Request) -> JSONResponse:
        """Ready to take traffic: the store answers and takes writes, and the workers are alive.
        503 with the failing check named otherwise, so a load balancer stops sending. `store_writes`
        is this process's last write (hub/store/writable.py): not `ok` from a write that failed for a
        store fault (disk full, read-only, locked) until one succeeds; no write is made here.
        `waiting` (Kafka mode) names what waits without stopping the hub taking changes: Kafka not
        reached since the start, so the topic not made and the relay and consumers not started."""
        hub = request.app.state.hub
        checks: dict[str, str] = {}
        try:
            async with hub.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["store"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["store"] = type(exc).__name__
        checks["store_writes"] = store_writes(hub.engine).check()
        dead = [t.get_name() for t in hub.worker_tasks() if t.done()] + hub.failed_startup_tasks()
        checks["workers"] = "ok" if not dead else "stopped: " + ",".join(dead)
        for name, process in (("worker_process", hub.worker_process), ("delivery_process", hub.delivery_process)):
            if process is not None:  # running with its workers started; started, not yet; or down
                checks[name] = "ok" if process.ready else "starting" if process.alive else "restarting"
        ok = all(v == "ok" for v in checks.values())
        body: dict = {"status": "ready" if ok else "not-ready", "checks": checks}
        waiting = hub.waiting()  # not a failed check: the hub takes changes meanwhile (Kafka at start)
        if waiting:
            body["waiting"] = waiting
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text exposition format"}})
    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)  # every process's, with the workers apart

    return app


# What every operation under /v1/ may answer whatever its own work: the front's refusals
# (hub/api/limits.py: the key, the body's size and time, the answer's time) and the routes' shared
# ones (the scope, a parameter or body refused). Each as problem details, but under /v1/fhir/, where
# every refusal is an OperationOutcome (hub/api/limits.py, hub/api/problems.py `_refusal`).
_SHARED = {
    401: "No API key, or one not recognised or revoked (answered before the body is read)",
    403: "The key lacks the scope this operation needs, or the access policy refused it (the rule named)",
    422: "Request rejected: each field named with the reason (a bad parameter, body, or a JSON key named twice)",
}
_WITH_BODY = {
    408: "The body did not arrive within this operation's time limit",
    413: "The body is over this operation's size limit (refused before it is read)",
    415: "The body was sent with a Content-Encoding (named in errors): send it uncompressed",
}
_TIMED_OUT = (503, "No answer within this operation's time limit (`timed-out`), or the store could not be "
                   "written: its disk full, read-only, locked by another process, or its database server not reachable "
                   "(`store-unavailable`, naming which): anything committed stays, and sending the same request again is safe", {"Retry-After": {"schema": {"type": "string"}}})
_FASTAPI_422 = {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}


def _document_problems(doc: dict) -> None:
    """Every /v1/ operation's shared answers above, and any error a route states without content
    (`responses={404: {"description": ...}}`), as problem details; FastAPI's own 422 (its
    HTTPValidationError, never sent: hub/api/problems.py answers every one) likewise. A status a
    route states with content is the route's own statement, kept as it is (it names every media type
    it answers with). And every /v1/fhir/ operation's 2xx is application/fhir+json."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    problem = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["ProblemDetails"] = problem
    schemas["OperationOutcome"] = OPERATION_OUTCOME_SCHEMA
    for path, operations in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        fhir = path.startswith("/v1/fhir/")
        for method, operation in operations.items():
            responses = operation["responses"]
            shared = dict(_SHARED)
            if method in ("post", "put", "patch"):
                shared |= _WITH_BODY
            shared[_TIMED_OUT[0]] = _TIMED_OUT[1]
            for status, text in shared.items():
                stated = responses.setdefault(str(status), {})
                if stated.get("content") == _FASTAPI_422:
                    stated.clear()
                if not stated.get("content"):
                    stated["content"] = deepcopy(OUTCOME_CONTENT if fhir else PROBLEM_CONTENT)
                    stated["description"] = stated.get("description") or text
                if status == _TIMED_OUT[0]:
                    stated.setdefault("headers", deepcopy(_TIMED_OUT[2]))
            for status, stated in responses.items():
                content = stated.setdefault("content", {})
                if status[0] in "45" and not content:
                    content.update(deepcopy(OUTCOME_CONTENT if fhir else PROBLEM_CONTENT))
                if fhir and status.startswith("2") and "application/json" in content:
                    content.setdefault(FHIR_JSON, content.pop("application/json"))
            operation["responses"] = dict(sorted(responses.items()))
    if "HTTPValidationError" not in orjson.dumps(doc["paths"]).decode():
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


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
        _document_problems(doc)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
