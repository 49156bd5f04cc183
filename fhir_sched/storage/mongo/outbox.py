"""The HL7 v2 outbox as MongoDB documents: ``hl7v2_outbox``, ``_id`` = the entry id (change
order as string order), the message and ACK as BSON binary."""

from __future__ import annotations

from typing import Any

from ..base import OutboundEntry

Doc = dict[str, Any]


def to_doc(e: OutboundEntry) -> Doc:
    return {"_id": e.id, "endpoint": e.endpoint, "seq": e.seq, "appointment": e.appointment,
            "event": e.event, "message": e.message, "status": e.status, "attempts": e.attempts,
            "next_at": e.next_at, "error": e.error, "ack": e.ack, "created": e.created}


def from_doc(d: Doc) -> OutboundEntry:
    ack = d.get("ack")
    return OutboundEntry(d["_id"], d["endpoint"], int(d["seq"]), d["appointment"], d["event"],
                         bytes(d["message"]), d["status"], int(d["attempts"]), d["next_at"],
                         d["error"], None if ack is None else bytes(ack), d["created"])
