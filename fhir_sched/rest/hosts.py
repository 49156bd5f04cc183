"""The ``Host`` header, trusted only as far as it is known (issue 13).

Absolute URLs the server hands out (``Location``, ``fullUrl``, paging links, the SMART
endpoints' redirects) are built from ``--base-url`` when it is set, else from the request's
``Host``; a Host nobody configured would let any client plant its own origin in them (cache
poisoning, password-reset style link spoofing). So without ``--base-url`` a request is served
only when its Host is in ``--allowed-hosts``, by default the loopback names and the address the
server binds; others get a 400 saying how to allow them. ``*`` allows any host (behind a proxy
that checks it); ``.example.org`` allows the domain and its subdomains. Ports are not compared:
the allow list names hosts, not listeners.
"""

from __future__ import annotations

import orjson

LOOPBACK = ("localhost", "127.0.0.1", "::1")


def host_name(header: bytes) -> str:
    """The host part of a Host header value: ``[::1]:8080`` -> ``::1``, lower-cased."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def allow_list(configured: str, bind_host: str) -> tuple[str, ...]:
    names = [n.strip().lower() for n in configured.split(",") if n.strip()]
    if not names:
        names = [*LOOPBACK]
        if bind_host not in ("", "0.0.0.0", "::"):
            names.append(bind_host.lower())
    return tuple(dict.fromkeys(names))


def allowed(name: str, patterns: tuple[str, ...]) -> bool:
    for p in patterns:
        if p == "*" or p == name or (p.startswith(".") and (name.endswith(p) or
                                                             name == p[1:])):
            return True
    return False


class HostCheck:
    """The front door's Host rule: ``refusal`` is None for an allowed Host, else the 400 body.
    Verdicts are kept per Host value seen (a handful in practice, so a request pays one dict
    lookup), at most 256 of them, so a client sending a new Host each time cannot grow it."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self._seen: dict[bytes, bool] = {}

    def refusal(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        host = None
        for k, v in headers:
            if k == b"host":
                host = v
                break
        if host is not None:
            ok = self._seen.get(host)
            if ok is None:
                ok = allowed(host_name(host), self.patterns)
                if len(self._seen) < 256:
                    self._seen[host] = ok
            if ok:
                return None
        shown = host.decode("latin-1")[:100] if host is not None else "(none)"
        return orjson.dumps({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "security",
            "diagnostics": f"Host {shown!r} is not one this server answers to; start it with "
                           "--base-url https://your.public/fhir or --allowed-hosts NAME"}]})
