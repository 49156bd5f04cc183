"""The HL7 v2 door as the server runs it: the sender settings, the MLLP listener and the HTTP
delivery path, all in front of one message handler (the bridge), so a message means the same
whether it came over a socket or in a ``POST /hl7v2`` body."""

from __future__ import annotations

import logging
from typing import Protocol

from fhir_sched.hl7v2 import senders as senders_mod
from fhir_sched.hl7v2.batch import is_framed, join_acks, split_messages
from fhir_sched.hl7v2.listener import Listener, ListenerSettings, PeerInfo
from fhir_sched.hl7v2.senders import Senders
from fhir_sched.settings import Settings

log = logging.getLogger("fhir_sched.hl7v2")


class MessageHandler(Protocol):
    async def handle(self, frame: bytes, peer: str) -> bytes:
        """One message in, its ACK out; never raises."""
        ...

    def frame_refused(self, head: bytes, size: int, peer: str) -> None:
        """A frame the transport refused before the handler saw it (over the size limit)."""
        ...


def load_senders(settings: Settings) -> Senders:
    """The ``--hl7v2-config`` file, or the defaults; the zone from ``FHIR_SCHED_HL7V2_TIMEZONE``
    (a flag-free setting: the loader reads it the same way from settings or environment)."""
    environ = {senders_mod.ENV_TIMEZONE: settings.hl7v2_timezone}
    if settings.hl7v2_config:
        return senders_mod.load_file(settings.hl7v2_config, environ)
    return senders_mod.defaults(environ)


class MllpDoor:
    """The listener on ``settings.mllp_port``, started and stopped with the server."""

    name = "mllp"

    def __init__(self, settings: Settings, handler: MessageHandler) -> None:
        if settings.mllp_release not in (1, 2):
            raise ValueError(f"FHIR_SCHED_MLLP_RELEASE must be 1 or 2, not {settings.mllp_release}")
        self.handler = handler
        self.listener = Listener(
            ListenerSettings(
                port=settings.mllp_port,
                host=settings.host,
                max_frame_bytes=settings.mllp_max_frame_bytes,
                idle_seconds=float(settings.mllp_idle_seconds),
                max_connections=settings.mllp_max_connections,
                tls_cert=settings.mllp_tls_cert,
                tls_key=settings.mllp_tls_key,
                handler_seconds=float(settings.mllp_handler_seconds),
                release2=settings.mllp_release == 2,
                reuse_port=settings.workers > 1,
            ),
            self._handle,
            self._refused,
        )

    async def _handle(self, frame: bytes, peer: PeerInfo) -> bytes:
        return await self.handler.handle(frame, f"{peer.host}:{peer.port}")

    def _refused(self, head: bytes, size: int, peer: PeerInfo) -> None:
        self.handler.frame_refused(head, size, f"{peer.host}:{peer.port}")

    @property
    def ready(self) -> bool:
        return self.listener.serving

    async def start(self) -> None:
        await self.listener.start()
        settings = self.listener.settings
        log.info("MLLP listening on %s:%d%s", settings.host, self.listener.port,
                 " (TLS)" if settings.tls_cert else "")

    async def stop(self) -> None:
        await self.listener.stop()


async def handle_body(handler: MessageHandler, body: bytes, peer: str,
                      max_frame_bytes: int = 1024 * 1024) -> bytes | None:
    """The ACKs for every message in an HTTP body, in order and in the body's shape; None when
    the body holds no message at all."""
    messages = split_messages(body, max_frame_bytes)
    if not messages:
        return None
    acks = [await handler.handle(message, peer) for message in messages]
    return join_acks(acks, is_framed(body))
