"""``/r/{token}``: the page a message's signed link opens (``engage/links.py``).

GET shows the appointment and the choices, and changes nothing (mail scanners open every
link); POST from that page acts. No login: the signature is the authority, for that patient
and that appointment only, and an invalid or expired link gets the same plain 404 whatever
is wrong with it, so the page tells a prober nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..auth.pages import CSP, page
from ..engage.answers import answer, view
from ..engage.links import Link
from ..engage.setup import Engagement
from ..engage.waitlist import offer_of
from ..errors import FhirError
from ..timeutil import parse_instant

MAX_FORM_BYTES = 4096
_HEADERS = {"content-security-policy": CSP, "cache-control": "no-store",
            "referrer-policy": "no-referrer", "x-robots-tag": "noindex"}
_CHOICES = (("confirm", "Confirm"), ("cancel", "Cancel the appointment"),
            ("stop-email", "No more emails"), ("stop-sms", "No more text messages"))
_OFFER_CHOICES = (("accept", "Accept this time"), ("decline", "Decline"),
                  ("stop-email", "No more emails"), ("stop-sms", "No more text messages"))


def _html(title: str, body: str, status: int = 200) -> Response:
    return HTMLResponse(page(title, body), status, headers=_HEADERS)


def _gone() -> Response:
    return _html("Link not valid", "<p>This link is not valid or has expired. Please call "
                 "the clinic.</p>", 404)


def _when(appt: dict[str, Any], zone: ZoneInfo) -> str:
    start = parse_instant(str(appt["start"])).astimezone(zone)
    return f"{start:%A} {start.day} {start:%B %Y}, {start:%H:%M} ({zone.key})"


def respond_routes(engagement: Engagement) -> list[Route]:
    resources = engagement.resources

    async def link_of(request: Request) -> Link | None:
        signer = await engagement.signer()
        return signer.verify(str(request.path_params["token"]), datetime.now(UTC))

    async def show(request: Request) -> Response:
        link = await link_of(request)
        found = await view(resources, link) if link else None
        if link is None or found is None:
            return _gone()
        appt, zone = found
        is_offer = offer_of(appt)[0] is not None and appt.get("status") == "pending"
        buttons = "".join(f"<button type=submit name=action value={value}>{escape(label)}"
                          "</button>" for value, label in (
                              _OFFER_CHOICES if is_offer else _CHOICES))
        what = escape(str(appt.get("description") or "Your appointment"))
        when = escape(_when(appt, zone)) if appt.get("start") else ""
        status = escape(str(appt.get("status")))
        return _html("Your appointment", f"<p><b>{what}</b><br>{when}<br>Status: {status}</p>"
                     f"<form method=post>{buttons}</form>")

    async def act(request: Request) -> Response:
        link = await link_of(request)
        if link is None:
            return _gone()
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != (
                "application/x-www-form-urlencoded"):
            return _html("Cannot continue", "<p>Please use the buttons on the page.</p>", 415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return _html("Cannot continue", "<p>That request is too large.</p>", 413)
        action = dict(parse_qsl(body.decode("utf-8", "replace"))).get("action", "")
        try:
            result = await answer(resources, link, action, engagement.booking)
        except FhirError as exc:
            return _html("Cannot continue", f"<p>{escape(exc.diagnostics[:300])}</p>",
                         409 if exc.status in (409, 412) else 422)
        return _html("Done" if result.done else "Cannot continue",
                     f"<p>{escape(result.message)}</p>", 200 if result.done else 409)

    return [Route("/r/{token}", show, methods=["GET"]),
            Route("/r/{token}", act, methods=["POST"])]
