"""Prometheus metrics for ``GET /metrics``, updated by :mod:`proxy` and :mod:`routes`.

With several worker processes (``PYFAAS_GATEWAY_WORKERS``) a scrape reaches whichever
worker the kernel picks, so :mod:`workers` points ``PROMETHEUS_MULTIPROC_DIR`` at a
directory of its own before the workers start, each worker writes its values there, and
whoever answers the scrape sums them all. With one worker the values live in memory.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from .routes import RouteTable

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency to the function's response headers: streams would make a total-time histogram
# meaningless, and what a user feels first is this.
_COLD_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get(_MULTIPROC_ENV))
        r = self.registry
        self.requests = Counter(
            "pyfaas_gateway_requests", "Requests proxied, by function and status",
            ["function", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "pyfaas_gateway_response_latency_seconds",
            "Seconds from a request's arrival to the function's response headers",
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "pyfaas_gateway_in_flight_requests", "Requests being proxied now",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.open_streams = Gauge(
            "pyfaas_gateway_open_streams",
            "Responses streaming now (no length: SSE, chunked) and open WebSockets",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.route_hits = Counter(
            "pyfaas_gateway_route_cache_hits", "Route lookups answered from memory", registry=r
        )
        self.route_misses = Counter(
            "pyfaas_gateway_route_cache_misses", "Route lookups that were not in memory",
            registry=r,
        )  # fmt: skip
        self.route_queries = Counter(
            "pyfaas_gateway_route_db_queries",
            "Database queries made to look routes up (zero per request in a steady state)",
            registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "pyfaas_gateway_upstream_errors",
            "Failed exchanges with functions, by function and kind",
            ["function", "kind"], registry=r,
        )  # fmt: skip
        self.cold_start = Histogram(
            "pyfaas_gateway_cold_start_seconds",
            "Waking a sleeping function on request, by phase: command (the wake reaching "
            "the deployer), start (process or pod start to accepting connections, "
            "dependency install included), total",
            ["phase"], buckets=_COLD_BUCKETS, registry=r,
        )  # fmt: skip
        self._requests_by: dict[tuple[str, int], Counter] = {}

    def count_request(self, function: str, status: int) -> None:
        # labels() builds a key and takes a lock; the child is cached for the hot path.
        child = self._requests_by.get((function, status))
        if child is None:
            child = self._requests_by[(function, status)] = self.requests.labels(
                function, str(status)
            )
        child.inc()

    def sync_routes(self, routes: RouteTable) -> None:
        """Bring the route-cache counters up to date (the table counts in plain ints so
        that a lookup costs no lock)."""
        for counter, value, attr in (
            (self.route_hits, routes.hits, "hits"),
            (self.route_misses, routes.misses, "misses"),
            (self.route_queries, routes.db_queries, "db_queries"),
        ):
            reported = routes.reported.get(attr, 0)
            if value > reported:
                counter.inc(value - reported)
                routes.reported[attr] = value

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
