"""``POST /hl7v2``: HL7 v2 messages delivered over HTTP, for engines that do not speak MLLP.

The body is one message or several (MLLP-framed, blank-line separated, or back to back); the
answer is their ACKs in the same shape, with 200 whatever the ACK codes say, since an ACK is
the application's answer and AE/AR belong in it, not in the HTTP status. HTTP errors are kept
for what is not an HL7 exchange at all: a wrong media type (415), a body past the limit (413), a
body with no message in it (400). The handler is given by the app, so this door knows nothing
of how messages are applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ..errors import FhirError
from .http import read_body

ER7 = "x-application/hl7-v2+er7"
# The registered-looking spellings engines send for the same thing.
ER7_TYPES = (ER7, "application/hl7-v2+er7", "application/hl7-v2", "x-application/hl7-v2")

BodyHandler = Callable[[bytes, str], Awaitable[bytes | None]]


def hl7v2_endpoint(handle: BodyHandler, max_body_bytes: int
                   ) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if kind not in ER7_TYPES:
            raise FhirError(415, "not-supported", f"content type {kind or 'none'!r} is not "
                            f"accepted here; send HL7 v2 messages as {ER7}")
        body = await read_body(request, max_body_bytes)
        client = request.client
        peer = f"http:{client.host}:{client.port}" if client else "http"
        acks = await handle(body, peer)
        if acks is None:
            raise FhirError(400, "invalid", "the body holds no HL7 v2 message (no MSH segment)")
        return Response(acks, media_type=ER7)

    return endpoint
