"""The HL7 v2 inbox and the small named marks as MongoDB documents.

``hl7v2_inbox``: one document per message, ``_id`` = the idempotency key, raw bytes and the ACK
as BSON binary. ``marks``: ``_id`` = the mark's name, ``v`` = its value. Both are written inside
the unit's transaction, so an entry exists exactly when its message's writes committed.
"""

from __future__ import annotations

from typing import Any

from ..base import InboundEntry

Doc = dict[str, Any]


def to_doc(e: InboundEntry) -> Doc:
    return {"_id": e.key, "received": e.received, "sender": e.sender, "control_id": e.control_id,
            "event": e.event, "peer": e.peer, "outcome": e.outcome, "ack_code": e.ack_code,
            "ack": e.ack, "error": e.error, "resources": list(e.resources), "raw": e.raw,
            "digest": e.digest}


def from_doc(d: Doc) -> InboundEntry:
    raw = d.get("raw")
    return InboundEntry(d["_id"], d["received"], d["sender"], d["control_id"], d["event"],
                        d["peer"], d["outcome"], d["ack_code"], bytes(d["ack"]), d["error"],
                        tuple(d.get("resources") or ()), None if raw is None else bytes(raw),
                        d.get("digest", ""))
