"""Alerts that reach a phone: conditions, dedup, routing, ack, escalation, silences, delivery and heartbeat."""
