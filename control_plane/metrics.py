"""Prometheus ``/metrics`` for the centre, read from the fleet database at each scrape.

The centre keeps no state outside its database, so the figures are not process counters: two
centres on one PostgreSQL answer the same scrape alike, and a restarted one loses nothing.
Replication per site (cursor, events applied, lag, rate, connection), hosts per state, and
commands per status and outcome.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.fleet import Fleet, Liveness
from control_plane.health import HOST_STATES
from control_plane.tables import CommandRow

#: The states a host can have at the centre: its agent's verdict, or disconnected (observer suspect).
CENTRE_HOST_STATES = (*HOST_STATES, "disconnected")


class FleetCollector(Collector):
    """One scrape: one read of the fleet tables, judged at one instant."""

    def __init__(self, engine: Engine, liveness: Liveness) -> None:
        self.engine, self.liveness = engine, liveness

    def collect(self) -> Iterator[Metric]:
        with Session(self.engine) as session:
            fleet = Fleet(session, self.liveness)
            sites, summary = fleet.sites(), fleet.summary()
            commands = list(session.execute(select(CommandRow.status, CommandRow.outcome, func.count())
                                            .group_by(CommandRow.status, CommandRow.outcome)))
        applied = CounterMetricFamily("cinefleet_replicated_events", "Outbox events the centre applied, per site.",
                                      labels=["site"])
        cursor = GaugeMetricFamily("cinefleet_replication_cursor", "The last outbox seq applied, per site.",
                                   labels=["site"])
        backlog = GaugeMetricFamily("cinefleet_replication_backlog_events",
                                    "Events the site holds that the centre has not applied yet.", labels=["site"])
        lag = GaugeMetricFamily("cinefleet_replication_lag_seconds",
                                "Now minus the site's commit time of the newest applied event, when applied.",
                                labels=["site"])
        rate = GaugeMetricFamily("cinefleet_replication_events_per_second", "Recent ingest rate, per site.",
                                 labels=["site"])
        connected = GaugeMetricFamily("cinefleet_site_connected", "1 while the centre hears the site, else 0.",
                                      labels=["site"])
        for site in sites:
            applied.add_metric([site.site_id], site.applied_total)
            cursor.add_metric([site.site_id], site.cursor)
            backlog.add_metric([site.site_id], site.backlog)
            if site.lag_s is not None:
                lag.add_metric([site.site_id], site.lag_s)
            rate.add_metric([site.site_id], site.events_per_s)
            connected.add_metric([site.site_id], 1.0 if site.connection == "connected" else 0.0)
        hosts = GaugeMetricFamily("cinefleet_hosts", "Hosts per state at the centre.", labels=["state"])
        for state in CENTRE_HOST_STATES:
            hosts.add_metric([state], summary.hosts.get(state, 0))
        issued = GaugeMetricFamily("cinefleet_commands", "Operator commands per status and outcome.",
                                   labels=["status", "outcome"])
        for status, outcome, count in commands:
            issued.add_metric([status, outcome or ""], count)
        yield from (applied, cursor, backlog, lag, rate, connected, hosts, issued)


def registry(engine: Engine, liveness: Liveness) -> CollectorRegistry:
    made = CollectorRegistry(auto_describe=False)
    made.register(FleetCollector(engine, liveness))
    return made


def exposition(made: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(made)
