"""The control plane: the one central service that sees every site and host and carries operators' signed commands.

It ingests what sites replicate and what agents report, keeps it in the fleet database, and
never writes to a site: the fleet keeps running, unchanged, while it is down. It imports only
``protos`` and the agent's client, envelope and keys; only ``cinefleet`` imports it.
"""
