"""Subscription, as the Subscriptions R5 Backport IG (1.1.0) profiles it for R4: ``criteria``
is a topic's canonical URL (``scheduling/topics.py``), filters travel in
``_criteria.extension`` (``backport-filter-criteria``), the payload content in
``_payload.extension``, heartbeat, timeout and batch size in ``channel.extension``.

Two channels: ``rest-hook`` (the server POSTs to ``channel.endpoint``) and ``websocket`` (no
endpoint: the client connects to the server, with a token from ``$get-ws-binding-token``).

Checked on every write (``rules``: a precise 422 for what the server cannot honour), and the
write rule keeps ``status`` the server's to decide: a new or changed rest-hook subscription is
``requested`` until its handshake succeeds (``engage/subscriptions.py``); a websocket one is
``active`` at once, as the IG's websocket workflow has it (there is no endpoint to handshake
with: each socket that binds gets its own handshake). A client may only turn it ``off`` (or
back on). A caller confined to a patient compartment may only subscribe to that patient's
appointments.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import FhirError
from ..scheduling.topics import BY_URL, parse_filter
from ..storage.base import Unit
from ..writes import FollowUp, WriteEvent

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_URL = BACKPORT + "backport-filter-criteria"
CONTENT_URL = BACKPORT + "backport-payload-content"
HEARTBEAT_URL = BACKPORT + "backport-heartbeat-period"
TIMEOUT_URL = BACKPORT + "backport-timeout"
MAX_COUNT_URL = BACKPORT + "backport-max-count"
PROFILE = BACKPORT + "backport-subscription"
CONTENTS = ("empty", "id-only", "full-resource")
CHANNELS = ("rest-hook", "websocket")
MAX_FILTERS = 10
MAX_TIMEOUT_SECONDS = 60
MAX_COUNT = 100
MIN_HEARTBEAT_SECONDS = 1

BINDINGS = {
    "status": ("requested", "active", "error", "off"),
    "channel.type": ("rest-hook", "websocket", "email", "sms", "message"),
}


def _ext_values(element: Any, url: str) -> list[Any]:
    out = []
    for ext in (element or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            out.append(next((v for k, v in ext.items() if k.startswith("value")), None))
    return out


def filters(res: dict[str, Any]) -> list[str]:
    return [str(v) for v in _ext_values(res.get("_criteria"), FILTER_URL)]


def content(res: dict[str, Any]) -> str:
    found = _ext_values((res.get("channel") or {}).get("_payload"), CONTENT_URL)
    return str(found[0]) if found else "id-only"


def channel_type(res: dict[str, Any]) -> str:
    return str((res.get("channel") or {}).get("type"))


def confined_to(res: dict[str, Any], patient: str) -> bool:
    """Whether every notification of ``res`` is about ``patient``'s appointments: it carries
    the filter ``Appointment?patient=`` that patient (what a caller confined to that patient's
    compartment may subscribe to, and bind a websocket to)."""
    return any(("patient", patient) in parse_filter(f)[1] for f in filters(res))


def channel_setting(res: dict[str, Any], url: str) -> int | None:
    found = _ext_values(res.get("channel"), url)
    return found[0] if found and isinstance(found[0], int) else None


def rules(res: dict[str, Any]) -> Iterator[tuple[str, str]]:
    criteria = res.get("criteria")
    if criteria not in BY_URL:
        yield ("Subscription.criteria", f"must be one of this server's topics: "
               f"{', '.join(sorted(BY_URL))} (got {criteria!r})")
    channel = res.get("channel") or {}
    kind = channel.get("type")
    if kind not in CHANNELS:
        yield ("Subscription.channel.type", f"the channels supported here are "
               f"{' and '.join(CHANNELS)} (got {kind!r})")
    endpoint = channel.get("endpoint")
    if kind == "rest-hook" and (not isinstance(endpoint, str)
                                or not endpoint.startswith(("https://", "http://"))):
        yield ("Subscription.channel.endpoint", "a rest-hook needs an http(s) endpoint")
    if kind == "websocket" and endpoint is not None:
        yield ("Subscription.channel.endpoint", "a websocket channel has no endpoint: the "
               "client connects to the websocket-url that $get-ws-binding-token gives")
    if channel.get("payload") not in (None, "application/fhir+json", "application/json"):
        yield ("Subscription.channel.payload",
               "notifications are sent as application/fhir+json")
    if content(res) not in CONTENTS:
        yield ("Subscription.channel._payload.extension",
               f"payload content must be one of {', '.join(CONTENTS)}")
    found = filters(res)
    if len(found) > MAX_FILTERS:
        yield ("Subscription._criteria.extension", f"at most {MAX_FILTERS} filters")
    for n, text in enumerate(found):
        try:
            parse_filter(text)
        except ValueError as exc:
            yield (f"Subscription._criteria.extension[{n}]", str(exc))
    for url, least, most, name in (
            (HEARTBEAT_URL, MIN_HEARTBEAT_SECONDS, 86400, "heartbeat period"),
            (TIMEOUT_URL, 1, MAX_TIMEOUT_SECONDS, "timeout"),
            (MAX_COUNT_URL, 1, MAX_COUNT, "max count")):
        values = _ext_values(channel, url)
        if values and not (isinstance(values[0], int) and not isinstance(values[0], bool)
                           and least <= values[0] <= most):
            yield ("Subscription.channel.extension", f"the {name} must be a whole number "
                   f"from {least} to {most}")


_DELIVERY = ("criteria", "_criteria", "channel")


async def guard_subscription(unit: Unit, ev: WriteEvent) -> list[FollowUp]:
    new, old = ev.new, ev.old
    if new is None:
        return []
    endpoint = str((new.get("channel") or {}).get("endpoint") or "")
    allowed = ev.config.subscription_endpoints
    websocket = channel_type(new) == "websocket"
    if allowed and not websocket and not endpoint.startswith(allowed):
        raise FhirError(422, "business-rule", "Subscription.channel.endpoint: this server "
                        "sends notifications to https:// endpoints"
                        + (" and to " + ", ".join(p for p in allowed if p != "https://")
                           if len(allowed) > 1 else ""),
                        expression=["Subscription.channel.endpoint"])
    if ev.ctx.patient is not None and not confined_to(new, ev.ctx.patient):
        raise FhirError(403, "forbidden", f"a caller confined to {ev.ctx.patient} may only "
                        f"subscribe with the filter Appointment?patient={ev.ctx.patient}",
                        expression=["Subscription._criteria.extension"])
    if ev.ctx.grant is not None:
        # Notifications carry what the topic's resources hold (full-resource: all of it), so
        # subscribing needs plain read access to them, beyond Subscription's own scopes.
        topic = BY_URL.get(str(new.get("criteria")))
        for type_ in sorted({t.resource for t in topic.triggers} if topic else ()):
            if not any(not s.where and s.level != "patient"
                       for s in ev.ctx.grant.matching(type_, "r")):
                raise FhirError(403, "forbidden", f"subscribing to {new.get('criteria')} "
                                f"needs read access to every {type_} (a user/ or system/ "
                                f"scope for {type_} reads, without a ?param= restriction)",
                                expression=["Subscription.criteria"])
    if ev.ctx.door == "system":
        return []  # the notifier's own status changes
    wanted = new.get("status")
    if wanted == "off":
        return []
    if websocket:
        status = "active"  # each socket that binds gets the handshake
    elif old is None or old.get("status") in ("off", "error") or any(
            old.get(k) != new.get(k) for k in _DELIVERY):
        status = "requested"  # a new handshake, then active
    else:
        status = str(old.get("status"))
    ev.new = {**new, "status": status}
    if status == "requested":
        ev.new.pop("error", None)
    return []


WRITE_RULE = guard_subscription
