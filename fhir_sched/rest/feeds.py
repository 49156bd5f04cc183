"""``/ics/{token}.ics``: a calendar feed (``service/calendar_feeds.py``), for calendar
applications, which cannot do SMART: the unguessable URL is the credential. Served fresh on
every fetch with an ETag, so a subscribed calendar that polls often costs a 304, and an
unknown or revoked URL is a plain 404 that says nothing more."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..context import RequestContext
from ..engage import ics
from ..scheduling.telehealth import join_link
from ..service.services import Services

REFRESH = timedelta(minutes=15)


def feed_routes(services: Services) -> list[Route]:
    feeds = services.feeds

    async def feed(request: Request) -> Response:
        token = str(request.path_params["token"]).removesuffix(".ics")
        owner = await feeds.owner(token)
        if owner is None:
            return Response("not found\n", 404, media_type="text/plain",
                            headers={"cache-control": "no-store"})
        ctx = RequestContext(subject=f"calendar-feed/{owner}", door="rest",
                             request_id=request.scope.get("state", {}).get("request_id")
                             or RequestContext().request_id)
        appointments, zone, names = await feeds.contents(owner, ctx)
        domain = urlsplit(str(request.base_url)).hostname or "fhir-sched.invalid"
        staff = not owner.startswith("Patient/")
        events = []
        for appt in appointments:
            shown = {**appt, "participant": [
                p for p in appt.get("participant") or []
                if not (staff and str(((p or {}).get("actor") or {}).get("reference", ""))
                        .startswith("Patient/"))]}
            event = ics.appointment_event(shown, uid_domain=domain, zone=zone.key, names=names,
                                          join_url=join_link(appt) or "")
            if event is not None:
                events.append(event)
        name = names.get(owner) or await feeds.name_of(owner) or "Appointments"
        body = ics.calendar(events, method="PUBLISH", name=name, refresh=REFRESH)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"etag": etag, "cache-control": "private, no-cache",
                   "content-disposition": 'inline; filename="appointments.ics"',
                   "last-modified": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, 200, media_type="text/calendar; charset=utf-8", headers=headers)

    return [Route("/ics/{token}", feed, methods=["GET"])]
