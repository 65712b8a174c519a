"""Alerts: conditions read from the centre's database, deduplicated, routed, acked, escalated and resolved.

Runs as its own process (``cinefleet alerts serve``) so that it keeps alerting while the web process
is down; it reads the fleet database and never talks to a site. Delivery (apprise, retries,
fallback) is :mod:`control_plane.alerts.delivery`.
"""
