"""A server span and a counted answer for every HTTP request, named by its route, never by its path.

The route is the one declared (`/api/messages`, `/informatieblad/{protocol_id}`, `unmatched` for
anything else), so a download token or a made-up path never becomes a span name or an attribute.
The 4xx and 5xx on `/api/messages` are what the alerts count (`vd.http.responses`); a route that knows why
it answered so (a 503 while the signing keys cannot be fetched) says it under `ANSWER_CAUSE`, counted as `cause`.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from bot.core.metrics import ANSWER_CAUSE, Metrics

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(request: web.Request) -> str:
    """The declared route that matched, or `unmatched`."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def request_telemetry(tracer: Tracer, metrics: Metrics) -> Middleware:
    """The middleware; with telemetry off both are no-ops and it costs two function calls."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        method = request.method if request.method in _METHODS else "_OTHER"
        status = 500
        with tracer.start_as_current_span(
            f"{method} {route}", kind=SpanKind.SERVER, record_exception=False, set_status_on_exception=False,
            attributes={"http.request.method": method, "http.route": route, "url.scheme": request.scheme},
        ) as span:
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as error:
                status = error.status
                raise
            except asyncio.CancelledError:
                status = 499  # the client went away (nginx's word for it): not the bot's failure
                raise
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                metrics.http_response(route, method, status, cause=request.get(ANSWER_CAUSE))

    return middleware
