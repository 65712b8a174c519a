"""The per-host ops agent: host health, worker supervision and signed, allow-listed operator actions."""
