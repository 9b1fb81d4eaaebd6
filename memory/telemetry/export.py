"""Exporters of the library's metrics: a Prometheus ``/metrics`` endpoint, an OTLP push.

Both attach a reader to the meter provider of :mod:`memory.telemetry.instruments`, which
records whether or not anything exports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader

from memory.core.errors import ExporterUnavailableError, InvalidInputError
from memory.telemetry.instruments import attach_reader, detach_reader, flush

__all__ = [
    "PrometheusEndpoint",
    "export_to_registry",
    "start_otlp_exporter",
    "start_prometheus_endpoint",
    "stop_exporter",
]


class _FlushOnScrape:
    """A Prometheus collector that exports nothing: it records the queued measurements so
    that a scrape sees everything up to that moment."""

    def collect(self) -> Iterable[Any]:
        flush()
        return ()


@dataclass
class PrometheusEndpoint:
    """A running ``/metrics`` HTTP endpoint; ``close()`` stops it."""

    address: str
    port: int
    _server: Any = field(repr=False)
    _reader: MetricReader = field(repr=False)

    @property
    def url(self) -> str:
        """The scrape URL, e.g. ``http://127.0.0.1:9464/metrics``."""
        return f"http://{self.address}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and detach the exporter from the library's metrics."""
        self._server.shutdown()
        self._server.server_close()
        detach_reader(self._reader)


def start_prometheus_endpoint(port: int = 9464, addr: str = "127.0.0.1") -> PrometheusEndpoint:
    """Serve the library's metrics at ``http://addr:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (read it from the result). Each endpoint has its own
    Prometheus registry, so several can run in one process.

    >>> endpoint = start_prometheus_endpoint(0)  # doctest: +SKIP
    >>> endpoint.url  # doctest: +SKIP
    'http://127.0.0.1:40123/metrics'
    """
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    reader = export_to_registry(registry)
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as error:
        detach_reader(reader)
        raise InvalidInputError(
            f"metrics port: cannot serve /metrics on {addr}:{port}: {error}"
        ) from error
    return PrometheusEndpoint(addr, int(server.server_address[1]), server, reader)


def export_to_registry(registry: Any) -> MetricReader:
    """Export the library's metrics into the Prometheus ``registry`` (a
    ``prometheus_client.CollectorRegistry`` that a server with more metrics of its own
    serves, such as ``memctl serve``); pass the reader to :func:`stop_exporter` to stop."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    registry.register(_FlushOnScrape())  # registered first: runs before the exporter collects
    reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    attach_reader(reader)
    return reader


def start_otlp_exporter(
    endpoint: str | None = None, *, interval_seconds: float = 10.0
) -> MetricReader:
    """Push the library's metrics over OTLP/HTTP every ``interval_seconds``.

    ``endpoint`` defaults to ``$OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` / the OTLP default
    (``http://localhost:4318/v1/metrics``). Needs the ``otlp`` extra. Returns the reader;
    pass it to :func:`stop_exporter` to stop.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as error:
        raise ExporterUnavailableError(
            "the OTLP exporter is not installed: pip install 'tiered-memory[otlp]'"
        ) from error
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if not interval_seconds > 0:
        raise InvalidInputError(f"interval_seconds: must be > 0, not {interval_seconds!r}")
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint),
        export_interval_millis=interval_seconds * 1000,
    )
    attach_reader(reader)
    return reader


def stop_exporter(reader: MetricReader) -> None:
    """Detach (and shut down) a reader added by :func:`start_otlp_exporter` or
    :func:`export_to_registry`."""
    detach_reader(reader)
