"""The Prometheus metrics litelb exports, each set on its own registry.

A registry per instance, not prometheus_client's global one, so that tests
and several daemons in one process never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# What render() produces on every supported prometheus_client. Newer releases'
# CONTENT_TYPE_LATEST announces format 1.0.0, older ones 0.0.4; the bytes are
# the same for our names, and every scraper understands 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# NSX answers reads in tens of milliseconds and writes in up to seconds;
# [nsx] timeout defaults to 10 s.
_NSX_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """litelb's metrics; the engine sets them, the HTTP endpoint renders them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.is_leader = Gauge("litelb_is_leader", "1 on the leader", registry=r)
        self.vip_present = Gauge(
            "litelb_vip_present", "1 when the VIP is on the interface", registry=r
        )
        self.endpoints_ready = Gauge(
            "litelb_endpoints_ready", "API servers the EndpointSlices call ready", registry=r
        )
        self.endpoints_healthy = Gauge(
            "litelb_endpoints_healthy",
            "API servers the EndpointSlices call ready that pass the health probes",
            registry=r,
        )
        self.route_next_hops = Gauge(
            "litelb_route_next_hops", "Next hops NSX holds for the route", registry=r
        )
        self.route_in_sync = Gauge(
            "litelb_route_in_sync", "1 when NSX holds the desired route", registry=r
        )
        # prometheus_client strips a trailing "_total" from a Counter's name and
        # appends it again on exposition, so these are exposed exactly as named.
        self.route_writes_total = Counter(
            "litelb_route_writes_total", "Writes of the route to NSX", registry=r
        )
        self.nsx_requests_total = Counter(
            "litelb_nsx_requests_total",
            "NSX API requests, by HTTP method and status code",
            ["method", "code"],
            registry=r,
        )
        self.nsx_request_duration_seconds = Histogram(
            "litelb_nsx_request_duration_seconds",
            "NSX API request latency",
            buckets=_NSX_LATENCY_BUCKETS,
            registry=r,
        )
        self.reconcile_errors_total = Counter(
            "litelb_reconcile_errors_total", "Failed reconciles", registry=r
        )
        self.last_sync_timestamp_seconds = Gauge(
            "litelb_last_sync_timestamp_seconds",
            "Unix time NSX was last confirmed to hold the desired route",
            registry=r,
        )

    def observe_nsx_request(self, method: str, code: str, seconds: float) -> None:
        """Count one NSX request; the NSX client's ``on_request`` callback."""
        self.nsx_requests_total.labels(method=method.upper(), code=str(code)).inc()
        self.nsx_request_duration_seconds.observe(seconds)

    def render(self) -> bytes:
        """The text exposition format (see CONTENT_TYPE)."""
        return generate_latest(self.registry)
