"""Host names as the settings give them: the port taken off, and whether only this machine is reached.

One place for what the MLLP listener, the Kafka clients and the PostgreSQL store each ask before
refusing an unprotected connection beyond this machine (hub/settings.py, hub/bus/kafka_security.py,
hub/store/postgres_tls.py)."""

from __future__ import annotations

import ipaddress


def without_port(host: str) -> str:
    """`host`, `host:port`, `[v6]` or `[v6]:port` without the port (a bare IPv6 address as it is)."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def loopback(host: str) -> bool:
    """`localhost`, or a loopback address (127.0.0.0/8, ::1): only this machine reaches it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
