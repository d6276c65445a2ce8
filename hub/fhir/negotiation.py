"""FHIR R4 content negotiation for the hub's FHIR endpoints (http.html#mime-type, #version-parameter).

The hub speaks FHIR 4.0 in JSON only. A client that asks for something else is told so before anything
is done, rather than handed JSON it did not ask for (or, for a message, having it recorded and then
answered in a format it cannot read):

* `_format` (query) other than json / application/json / application/fhir+json: refused, naming `_format`;
* `Accept` naming no JSON type (`application/fhir+xml` alone, say), or only JSON types of another FHIR
  version (`application/fhir+json; fhirVersion=3.0`): refused, naming `Accept`;
* a body's `Content-Type` with `fhirVersion` other than 4.0, or a media type the route does not read
  (`application/fhir+xml`, none at all): refused, naming `Content-Type` (`body_media_refusal`).

Each refusal is (diagnostics, expression); the route answers it as an OperationOutcome (`406` for
what the client asks to receive, `415` for what it sent).
"""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["FHIR_VERSIONS", "body_media_refusal", "format_refusal", "media_version_refusal"]

FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})  # the fhirVersion mime parameter's values for R4
_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
_JSON_MEDIA = frozenset({"*/*", "application/*", "application/json", "application/fhir+json"})


def _media(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype` (lower case) and its parameters (names lower case, values unquoted)."""
    kind, *params = value.split(";")
    out: dict[str, str] = {}
    for p in params:
        name, sep, val = p.partition("=")
        if sep:
            out[name.strip().lower()] = val.strip().strip('"')
    return kind.strip().lower(), out


def media_version_refusal(content_type: str) -> tuple[str, str] | None:
    """A body's Content-Type naming a FHIR version the hub does not speak."""
    _, params = _media(content_type)
    version = params.get("fhirversion")
    if version is not None and version not in FHIR_VERSIONS:
        return ("the hub speaks FHIR R4 only: send fhirVersion=4.0 (or no fhirVersion)", "Content-Type")
    return None


def body_media_refusal(content_type: str, accepted: frozenset[str], send: str) -> tuple[str, str] | None:
    """A body's Content-Type the route cannot read: a media type not in `accepted` (none sent is none of
    them), or a FHIR version the hub does not speak. `send`: what to send instead, as the refusal says it."""
    kind, _ = _media(content_type)
    if kind not in accepted:
        return (f"send {send}", "Content-Type")
    return media_version_refusal(content_type)


def format_refusal(request: Request) -> tuple[str, str] | None:
    """What the client asks to receive, when the hub cannot give it (FHIR R4 JSON)."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        kind, params = _media(fmt)
        if kind not in _JSON_FORMATS or params.get("fhirversion", "4.0") not in FHIR_VERSIONS:
            return ("the hub answers in FHIR R4 JSON only: _format must be json, application/json or "
                    "application/fhir+json", "_format")
        return None
    accept = request.headers.get("accept")
    if accept is None or not accept.strip():
        return None
    for item in accept.split(","):
        kind, params = _media(item)
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0 and kind in _JSON_MEDIA and params.get("fhirversion", "4.0") in FHIR_VERSIONS:
            return None
    return ("the hub answers in FHIR R4 JSON only: Accept must allow application/fhir+json (fhirVersion 4.0) "
            "or application/json", "Accept")
