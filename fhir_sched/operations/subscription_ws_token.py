"""``Subscription/{id}/$get-ws-binding-token`` (Subscriptions R5 Backport): a short-lived,
single-use token that binds one websocket to this Subscription (``service/ws_tokens.py``).

The token is the socket's only credential, so it is handed out only to a caller who may
read the Subscription, read as that caller (its scopes and compartment decide, as for
``$status``), and a caller confined to one patient only for a Subscription whose filter keeps
its notifications to that patient's appointments: Subscription itself is outside the Patient
compartment, so reading it says nothing about whose appointments it reports.
"""

from __future__ import annotations

from ..context import RequestContext
from ..errors import FhirError
from ..resources import subscription as profile
from ..service import ws_tokens
from ..service.services import Services
from .base import Inputs, Operation, Outcome
from .definition import operation
from .subscription_status import subscription

DEFINITION = operation("subscription-get-ws-binding-token")
SOCKET_PATH = "/$subscription-ws"


def parse(values: Inputs, instance: str | None) -> str:
    if instance is None:
        raise FhirError(400, "invalid", "$get-ws-binding-token is called on one Subscription")
    return instance


def websocket_url(base_url: str) -> str:
    """The socket endpoint under the FHIR base, ws:// or wss:// as the base is http(s)."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + SOCKET_PATH
    return "ws://" + base.removeprefix("http://") + SOCKET_PATH


async def run(services: Services, ctx: RequestContext, id_: str) -> Outcome:
    sub = await subscription(services, ctx, id_)
    if profile.channel_type(sub) != "websocket":
        raise FhirError(422, "business-rule", f"Subscription/{id_} has a "
                        f"{profile.channel_type(sub)} channel; binding tokens are for websocket "
                        "channels", expression=["Subscription.channel.type"])
    if sub.get("status") != "active":
        raise FhirError(422, "business-rule", f"Subscription/{id_} is {sub.get('status')}; "
                        "only an active subscription can be bound",
                        expression=["Subscription.status"])
    if ctx.patient is not None and not profile.confined_to(sub, ctx.patient):
        raise FhirError(403, "forbidden", f"a caller confined to {ctx.patient} may only bind "
                        f"a subscription with the filter Appointment?patient={ctx.patient}")
    token, expires = await ws_tokens.issue(services.store, id_, ctx.subject,
                                           max(1, services.settings.websocket_token_seconds))
    return Outcome(({"resourceType": "Parameters", "parameter": [
        {"name": "token", "valueString": token},
        {"name": "expiration", "valueDateTime": expires},
        {"name": "subscription", "valueString": f"Subscription/{id_}"},
        {"name": "websocket-url", "valueUrl": websocket_url(ctx.base_url)},
    ]},), single=True)


OPERATION = Operation(DEFINITION, "Subscription", (("instance", ("GET", "POST")),), parse, run)
