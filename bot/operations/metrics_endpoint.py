"""`GET /metrics` in Prometheus' text format, on a loopback address only: the metrics without Azure.

`make run` turns it on (`METRICS_PORT=9464`): a newcomer opens http://127.0.0.1:9464/metrics and sees
what Application Insights would get. It is a listener of its own, never the bot's public port, and
refuses any address but a loopback one (so do the settings): the numbers say nothing about anyone,
but how busy the bot is, is nobody else's business either. Production leaves it off.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Metric as PrometheusFamily
from prometheus_client.registry import Collector

from bot.delivery.smtp_transport import is_loopback_host

logger = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_:]")


def prometheus_name(name: str) -> str:
    """`vd.turn.duration` becomes `vd_turn_duration`."""
    cleaned = _NOT_ALLOWED.sub("_", name)
    return cleaned if not cleaned[:1].isdigit() else f"_{cleaned}"


class _ReaderCollector(Collector):
    """What the reader holds now, as Prometheus families (cumulative, as Prometheus expects)."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self._reader = reader

    def collect(self) -> list[PrometheusFamily]:
        data = self._reader.get_metrics_data()
        families: dict[str, PrometheusFamily] = {}
        for resource_metrics in data.resource_metrics if data is not None else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    _add(families, metric)
        return list(families.values())


def _add(families: dict[str, PrometheusFamily], metric: Metric) -> None:
    name = prometheus_name(metric.name)
    data = metric.data
    if isinstance(data, Sum) and data.is_monotonic:
        kind = "counter"
    elif isinstance(data, Histogram):
        kind = "histogram"
    else:
        kind = "gauge"
    family = families.setdefault(name, PrometheusFamily(name, metric.description or metric.name, kind))
    for point in data.data_points:
        labels = {prometheus_name(key): str(value) for key, value in (point.attributes or {}).items()}
        if isinstance(point, HistogramDataPoint):
            cumulative = 0
            for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
                cumulative += count
                family.add_sample(f"{name}_bucket", {**labels, "le": f"{float(bound)}"}, cumulative)
            family.add_sample(f"{name}_bucket", {**labels, "le": "+Inf"}, point.count)
            family.add_sample(f"{name}_count", labels, point.count)
            family.add_sample(f"{name}_sum", labels, point.sum)
        elif isinstance(point, NumberDataPoint):
            family.add_sample(f"{name}_total" if kind == "counter" else name, labels, point.value)


def render(reader: InMemoryMetricReader) -> bytes:
    """The reader's metrics in Prometheus' text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReaderCollector(reader))
    return generate_latest(registry)


class LocalMetricsView:
    """A listener of its own on a loopback address, answering `GET /metrics` (and nothing else)."""

    def __init__(self, reader: InMemoryMetricReader, host: str, port: int) -> None:
        if not is_loopback_host(host):
            raise ValueError(f"/metrics is served on a loopback address only, not on {host!r}")
        self._reader = reader
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as error:  # e.g. a second `make run`: the bot itself matters more than its metrics
            logger.warning("/metrics not served: %s:%d cannot be listened on (%s); set METRICS_PORT to a free port",
                           self._host, self._port, error.strerror or type(error).__name__)
            await self.stop()
            return
        server = site._server  # the bound socket tells the real port when 0 was asked for
        sockets = getattr(server, "sockets", None) or ()
        port = sockets[0].getsockname()[1] if sockets else self._port
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{host}:{port}/metrics"
        logger.info("metrics (Prometheus text format) at %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=render(self._reader), headers={"Content-Type": CONTENT_TYPE})
